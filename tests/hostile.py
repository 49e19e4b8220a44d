"""What an attacker plants in files ganops reads: tests check that it never runs."""

from __future__ import annotations

from pathlib import Path


class CodeRunningPickle:
    """Unpickling it runs `exec`, which creates `marker`: `not marker.exists()` proves nothing unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)
