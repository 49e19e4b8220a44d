"""Checks that run before work starts, so an obvious failure costs seconds, not a training.

    ensure_writable_dir(cfg.train.out_dir, "train.out_dir")           # creates it, or one-line UserError
    ensure_writable_dir(nearest_existing(out_png.parent), "--out directory")  # probe, creating nothing
    ensure_free_space(out.parent, 3 * images.nbytes, "prepared dataset")

Both raise UserError naming the path and the setting, which entry points print on one line.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from gan_core.errors import UserError

FREE_SPACE_ENV = "GANOPS_MIN_FREE_BYTES"
"""Extra headroom (bytes) every free-space check keeps; tests raise it to make a full disk without filling one."""
OFFLINE_ENV = "GANOPS_OFFLINE"
"""Set to 1 to never download anything (datasets, Inception weights): air-gapped machines fail at once instead of
timing out."""


def downloads_forbidden() -> bool:
    """True when GANOPS_OFFLINE says not to try a download."""
    return os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes")


def ensure_writable_dir(path: str | Path, setting: str) -> Path:
    """Create `path` (and parents) if needed and prove it is writable by creating and removing a temp file there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
        fd, probe = tempfile.mkstemp(prefix=".ganops-write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise UserError(f"{setting}={str(path)!r} is a file, not a directory; choose a directory path") from None
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UserError(
            f"{setting}={str(path)!r} is not writable ({reason}); choose a directory you can write to"
        ) from None
    return path


def nearest_existing(path: str | Path) -> Path:
    """`path` (made absolute) or its nearest ancestor that exists: where to probe before anything is created."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def ensure_free_space(path: str | Path, needed_bytes: int, what: str) -> None:
    """Fail when the filesystem holding `path` (its nearest existing ancestor) has less than `needed_bytes` free
    (plus GANOPS_MIN_FREE_BYTES headroom)."""
    headroom = int(os.environ.get(FREE_SPACE_ENV, "0") or 0)
    free = shutil.disk_usage(nearest_existing(path)).free
    if free < needed_bytes + headroom:
        raise UserError(
            f"not enough disk space for the {what} at {str(path)!r}: {_mb(needed_bytes + headroom)} needed, "
            f"{_mb(free)} free; free some space or choose another directory"
        )


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
