"""File hashes remembered by (size, mtime, inode), as DVC's state database does: a file whose stat is unchanged is
not read again, so hashing a collection costs what changed in it, not its size.

    cache = HashCache(Path("data/.prepared.md5.json"))
    digest = cache.hash(path, "md5")        # read only when the file is new or its stat changed
    cache.save()                            # atomic; a cache that cannot be written only costs a re-hash next time

The cache is a JSON file beside the directory it describes (never inside a DVC-tracked directory: stats differ from
machine to machine, the tracked bytes must not). A damaged or foreign cache file is ignored. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

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


def cache_beside(directory: Path, purpose: str) -> Path:
    """The cache file for `directory`: a hidden sibling (`data/.prepared.md5.json`), outside what DVC tracks."""
    directory = Path(os.path.abspath(directory))
    return directory.parent / f".{directory.name}.{purpose}.json"
