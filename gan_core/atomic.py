"""Atomic writes: readers see the old file (or directory) or the new one, never half of either.

    with atomic_file(path) as tmp:      # write tmp; it is renamed over path when the block succeeds
        image.save(tmp)
    with atomic_dir(out) as tmp:        # fill the directory tmp; it replaces out when the block succeeds
        save_file(state, tmp / "weights.safetensors")
    write_json(path, data)

Temp names sit beside the target (same filesystem, so the rename is atomic), start with a dot so globbing
tools skip them, end in .tmp, and carry the pid so two writers of one path do not share a temp file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` when the block succeeds, delete it when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # writers that infer a format from the name need format=
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Text, written atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """Pretty, key-sorted JSON (stable bytes for the same data), written atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield an empty temp directory beside `out`; when the block succeeds it replaces `out` (the previous
    directory is removed only once the new one is in place, and put back if the swap fails)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; outputs are meant to be shared like any directory
    old: Path | None = None
    try:
        yield tmp
        if out.exists():
            # rename() cannot replace a non-empty directory: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old / out.name, out)  # put the previous directory back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
