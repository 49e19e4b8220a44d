"""File hashes remembered by (size, mtime, inode), as DVC's state database does: a file whose stat is unchanged is
not read again, so hashing a collection costs what changed in it, not its size.

    cache = HashCache(Path("data/.prepared.md5.json"))     # the prepared dataset's files (md5: the data version)
    digest = cache.hash(path, "md5")        # read only when the file is new or its stat changed
    cache.save()                            # atomic; a cache that cannot be written only costs a re-hash next time
    keys = FileKeys(Path("data/.prepared.sources.npz"), root, names)   # a source folder's files (sha256), compact

Caches live beside the directory they describe (never inside a DVC-tracked directory: stats differ from machine to
machine, the tracked bytes must not). A damaged or foreign cache file is ignored. JSON and plain numpy arrays:
nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from gan_core.atomic import atomic_file

FORMAT = "ganops-hash-cache/1"
CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file's bytes."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stat_key(stat: os.stat_result) -> list[int]:
    """What says a file is unchanged without reading it: size, modification time (ns) and inode."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


class HashCache:
    """{file path: (stat key, algorithm, digest)} kept in one JSON file."""

    def __init__(self, file: Path):
        self.file = file
        self._entries: dict[str, list] = {}
        self._changed = False
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("entries"), dict):
            self._entries = data["entries"]

    def get(self, name: str, stat: os.stat_result, algorithm: str) -> str | None:
        """The digest recorded for `name` when its stat and algorithm are what was recorded, else None."""
        entry = self._entries.get(name)
        if isinstance(entry, list) and len(entry) == 3 and entry[0] == stat_key(stat) and entry[1] == algorithm:
            return str(entry[2])
        return None

    def put(self, name: str, stat: os.stat_result, algorithm: str, digest: str) -> None:
        if self._entries.get(name) != [stat_key(stat), algorithm, digest]:
            self._entries[name] = [stat_key(stat), algorithm, digest]
            self._changed = True

    def hash(self, path: Path, algorithm: str, name: str | None = None) -> str:
        """`path`'s digest, from the cache when its stat is unchanged, else read (and remembered)."""
        name = name or str(path)
        stat = path.stat()
        digest = self.get(name, stat, algorithm)
        if digest is None:
            digest = file_digest(path, algorithm)
            if stat_key(path.stat()) == stat_key(stat):  # not remembered when the file changed while being read
                self.put(name, stat, algorithm, digest)
        return digest

    def keep_only(self, names: set[str]) -> None:
        """Forget every entry not in `names` (files that are gone), so the cache does not grow forever."""
        gone = self._entries.keys() - names
        for name in gone:
            del self._entries[name]
        self._changed = self._changed or bool(gone)

    def save(self) -> None:
        if not self._changed:
            return
        try:
            with atomic_file(self.file) as tmp:
                tmp.write_text(json.dumps({"format": FORMAT, "entries": self._entries}, separators=(",", ":")))
            self._changed = False
        except OSError:  # a read-only data folder: the cache only saves time
            pass


def cache_beside(directory: Path, purpose: str, suffix: str = "json") -> Path:
    """The cache file for `directory`: a hidden sibling (`data/.prepared.md5.json`), outside what DVC tracks."""
    directory = Path(os.path.abspath(directory))
    return directory.parent / f".{directory.name}.{purpose}.{suffix}"


class FileKeys:
    """The content keys (sha256) of a folder's many files, item by item, remembered by (size, mtime, inode) in one
    .npz of plain arrays (relative names, stats, raw digests; no Python object per file, so memory stays small and
    nothing is unpickled): `cached(i, stat)` is item i's key when its file is unchanged, `put(i, stat, key)` records
    it, `save()` keeps exactly the items of this run."""

    def __init__(self, file: Path, root: Path, names: list[str]):
        self.file, self.root = file, str(root.absolute())
        n = len(names)
        self._names = np.array([name.encode() for name in names]) if n else np.zeros(0, "S1")  # (n,) bytes
        self._stats = np.zeros((n, 3), dtype=np.int64)
        self._digests = np.zeros(n, dtype="S32")
        self._known = np.zeros(n, dtype=bool)
        self._row = np.full(n, -1, dtype=np.int64)  # item → row of the cached arrays (-1: not cached)
        self._cache = self._load()
        if self._cache is not None and n and len(self._cache["names"]):
            cached_names = self._cache["names"]  # sorted
            at = np.searchsorted(cached_names, self._names).clip(max=len(cached_names) - 1)
            hit = cached_names[at] == self._names
            self._row[hit] = at[hit]

    def _load(self) -> dict[str, np.ndarray] | None:
        try:
            with np.load(self.file, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("format", "root", "names", "stats", "digests")}
        except (OSError, ValueError, KeyError):  # missing, damaged or foreign: it only saves reading
            return None
        good = (str(arrays["format"]) == FORMAT and str(arrays["root"]) == self.root
                and arrays["names"].dtype.kind == "S" and arrays["stats"].shape == (len(arrays["names"]), 3)
                and arrays["digests"].shape == (len(arrays["names"]),) and arrays["digests"].dtype == "S32")
        return arrays if good else None

    def cached(self, i: int, stat: os.stat_result) -> str | None:
        """Item i's key when its file's stat is what was recorded (and then kept for the next run), else None."""
        if self._known[i] and self._stats[i].tolist() == stat_key(stat):  # recorded earlier in this run
            return self._digests[i].ljust(32, b"\0").hex()
        row = self._row[i]
        if row < 0 or self._cache["stats"][row].tolist() != stat_key(stat):  # type: ignore[index]
            return None
        key = self._cache["digests"][row].ljust(32, b"\0").hex()  # type: ignore[index]
        self.put(i, stat, key)
        return key

    def put(self, i: int, stat: os.stat_result, key: str) -> None:
        self._stats[i], self._digests[i], self._known[i] = stat_key(stat), bytes.fromhex(key), True

    def save(self) -> None:
        order = np.argsort(self._names[self._known], kind="stable")
        try:
            with atomic_file(self.file) as tmp, tmp.open("wb") as f:
                np.savez(f, format=np.array(FORMAT), root=np.array(self.root),
                         names=self._names[self._known][order], stats=self._stats[self._known][order],
                         digests=self._digests[self._known][order])
        except OSError:  # a read-only data folder: the cache only saves time
            pass
