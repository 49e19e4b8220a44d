"""The data version: the md5 DVC records for the prepared directory (`<hex>.dir`), so the same data always has
the same version, whether DVC prepared it or not.

    data_version("data/prepared")     # '5d1c...e3.dir'

It is DVC 3's directory md5 (md5 of the sorted JSON list of {"md5": <file md5>, "relpath": ...}, suffixed ".dir"),
computed the same way from the files, and labelled as taken from dvc.lock when the lock records that md5. No dvc
import. A file's md5 is read again only when its size, mtime or inode changed (gan_core.data.hashcache, as DVC's own
state database; `prepare` records the md5s of the shards it writes): a new version costs what changed in it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from gan_core.data.hashcache import HashCache, cache_beside
from gan_core.errors import UserError

LOCK_FILE = "dvc.lock"


def dvc_dir_md5(directory: str | Path) -> str:
    """The md5 DVC 3 records for a directory output (`<hex>.dir`), computed from the files themselves."""
    root = Path(directory)
    cache = HashCache(cache_beside(root, "md5"))
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relpath = path.relative_to(root).as_posix()
        entries.append({"md5": cache.hash(path, "md5", name=relpath), "relpath": relpath})
    cache.keep_only({e["relpath"] for e in entries})
    cache.save()
    entries.sort(key=lambda e: e["relpath"])
    # Same bytes as dvc_data.hashfile.tree.Tree.as_bytes(): json.dumps(list, sort_keys=True).
    manifest = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(manifest).hexdigest() + ".dir"


def locked_md5(directory: str | Path) -> str | None:
    """The md5 that the nearest dvc.lock (in `directory`'s ancestors) records for it, or None."""
    target = Path(directory).resolve()
    for folder in target.parents:
        lock = folder / LOCK_FILE
        if not lock.is_file():
            continue
        try:
            stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        except yaml.YAMLError:
            return None
        for stage in stages.values():
            for out in stage.get("outs", []) or []:
                if (folder / out.get("path", "")).resolve() == target and out.get("md5"):
                    return str(out["md5"])
        return None
    return None


def data_version_info(prepared_dir: str | Path) -> dict[str, str]:
    """{"data_version": md5, "data_version_source": "dvc.lock" | "computed"} for a prepared dataset directory."""
    root = Path(prepared_dir)
    if not (root / "meta.json").is_file():
        raise UserError(f"no prepared dataset at {str(root)!r}; run `python -m gan_core prepare` first")
    current = dvc_dir_md5(root)
    locked = locked_md5(root)
    # A lock that no longer matches the files (prepare was run outside dvc repro) would mislabel the data.
    source = "dvc.lock" if locked == current else "computed"
    return {"data_version": current, "data_version_source": source}


def data_version(prepared_dir: str | Path) -> str:
    """The data version of a prepared dataset: the md5 DVC records for it (from dvc.lock, or computed alike)."""
    return data_version_info(prepared_dir)["data_version"]
