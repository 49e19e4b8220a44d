"""One shard of a prepared dataset: up to data.shard_images images in three files that never change once written.

    shards/000007.images.npy   uint8 (n, C, H, W)
    shards/000007.labels.npy   int64 (n,), only when the source is labelled
    shards/000007.rows.json    {"rows": [[name, key], ...]}: each row's source item (its path relative to the image
                               folder, or its index in a built-in set) and content key (sha256 of the file's bytes,
                               or of the image's pixels), which incremental prepare matches against the source

Files are written with their md5 computed from the bytes as they go out (the md5 DVC records for them), and read
by offset: a batch reads just its rows (`read_rows`), never the whole array.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

SHARDS_DIR = "shards"
KINDS = ("images", "labels", "rows")
SHARD_BYTES = 64 << 20
"""A shard holds at most this many bytes of pixels (and at most data.shard_images images)."""


def relpath(shard_id: int, kind: str) -> str:
    """The shard file's path relative to the prepared directory (posix), e.g. shards/000007.images.npy."""
    suffix = "rows.json" if kind == "rows" else f"{kind}.npy"
    return f"{SHARDS_DIR}/{shard_id:06d}.{suffix}"


def rows_per_shard(shard_images: int, row_bytes: int) -> int:
    """Images per new shard: data.shard_images, fewer when that many would exceed SHARD_BYTES."""
    return max(1, min(shard_images, SHARD_BYTES // row_bytes))


class _HashingWriter:
    """A binary file that hashes what is written to it (np.save writes through `write`)."""

    def __init__(self, f: BinaryIO):
        self.f, self.md5 = f, hashlib.md5()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.md5.update(view)
        return self.f.write(view)


def _write(path: Path, fill: Any) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        writer = _HashingWriter(f)
        fill(writer)
    return writer.md5.hexdigest()


def write_shard(folder: Path, shard_id: int, images: np.ndarray, labels: np.ndarray | None,
                rows: list[list[str]]) -> dict[str, str]:
    """Write one shard's files under `folder`; return {kind: md5 of the file} for meta.json."""
    md5 = {"images": _write(folder / relpath(shard_id, "images"),
                            lambda f: np.lib.format.write_array(f, images, allow_pickle=False))}
    if labels is not None:
        md5["labels"] = write_labels(folder, shard_id, labels)
    md5["rows"] = _write(folder / relpath(shard_id, "rows"), lambda f: f.write(rows_json(rows)))
    return md5


def write_labels(folder: Path, shard_id: int, labels: np.ndarray) -> str:
    return _write(folder / relpath(shard_id, "labels"), lambda f: np.lib.format.write_array(f, labels.astype(np.int64),
                                                                                           allow_pickle=False))


def rows_json(rows: list[list[str]]) -> bytes:
    # One row per line: readable, and stable bytes for the same rows.
    return ("{\"rows\": [\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]}\n").encode()


def read_rows(path: Path) -> list[list[str]]:
    """The [name, key] rows of a shard's rows.json; ValueError when it is not one."""
    data = json.loads(path.read_text())
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or any(type(r) is not list or len(r) != 2 or type(r[0]) is not str
                                         or type(r[1]) is not str for r in rows):
        raise ValueError("not a rows file")
    return rows


def npy_layout(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """(offset of the data, shape, dtype) of a C-ordered .npy file, read from its header; ValueError when the file
    is not one or is shorter than its header says."""
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if fortran or dtype.hasobject:
        raise ValueError("not a C-ordered array of plain numbers")
    size = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = os.stat(path).st_size
    if actual != size:
        raise ValueError(f"{actual} bytes where its header says {size}")
    return offset, tuple(int(s) for s in shape), dtype


def read_labels(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)
