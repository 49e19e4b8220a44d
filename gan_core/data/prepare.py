"""`prepare`: any source → one prepared dataset directory of shards, incremental, deterministic and atomic.

    meta = prepare(cfg.data)                      # writes cfg.data.prepared_dir, returns meta.json's dict

    python -m gan_core prepare data.source=digits data.resolution=16
    python -m gan_core prepare data.source=folder:my_images data.channels=3
    python -m gan_core prepare --params configs/cyclegan-digits.yaml   # two domains, for translation (cyclegan)

With data.target set (a translation run), domain A comes from data.source and domain B from data.target, each any
source kind, both fitted to the same data.resolution and data.channels, written as a/ and b/.

Cost follows the change. Every item of the source has a name (its path in the folder) and a content key (sha256 of
the file's bytes; a file whose size, mtime and inode are unchanged is not read again: gan_core.data.hashcache).
Against the dataset already at data.prepared_dir, prepared with the same data.resolution, data.channels and fitting
code (images.FIT_VERSION):
  * a shard whose every row is still in the source with the same key is kept: hard-linked, byte-identical (its
    labels file is rewritten if class indices moved, e.g. a new class folder sorts before it);
  * a shard that lost rows (a file removed or changed) is rewritten with the rows that remain, in its place, from
    its own pixels (no decoding);
  * new and changed items are decoded into new shards appended at the end, in source order (an item whose content
    is in the previous dataset under another name is copied, not decoded).
A fresh prepare (no previous dataset, or other settings) writes the source order (folders: sorted by relative path)
cut into shards of data.shard_images, so the same input gives byte-identical files; an incremental prepare gives the
previous dataset's shards plus the change, the same files each time for the same previous dataset and input.
Training reads the rows in a seeded permutation (prepared.load_order). `data.max_images=N` keeps the first N items
of a seed-0 permutation of the source (a mix of all classes), stored in source order.

The directory is built beside its final place and renamed over it: a failed prepare leaves the previous dataset
(and data version) untouched and never a half-written one.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gan_core.atomic import atomic_dir, write_json
from gan_core.config import DataConfig
from gan_core.data import shards as sh
from gan_core.data.hashcache import FileKeys, HashCache, cache_beside, file_digest, stat_key
from gan_core.data.images import FIT_VERSION, failure_reason, strict_decoding
from gan_core.data.prepared import (
    FORMAT,
    META_FILE,
    PAIR_FORMAT,
    PreparedDataset,
    Shard,
    manifest_shards,
    read_meta_or_none,
)
from gan_core.data.sources import DataWarning, Source, open_source
from gan_core.errors import UserError
from gan_core.preflight import (
    ensure_free_space,
    ensure_writable_dir,
    nearest_existing,
)

ORDER_SEED = 0
"""Seed of the load order (a permutation of the stored rows) and of data.max_images' choice."""


FREE_SPACE_MARGIN = 1 << 20
"""Bytes the free-space check adds to the shards' size for meta.json and filesystem overhead."""


def prepare(cfg: DataConfig) -> dict[str, Any]:
    """Build `cfg.prepared_dir` from `cfg.source` (and, for translation, `cfg.target`), reusing what the dataset
    already there holds; return the meta dict written to meta.json.

    The directory is built beside its final place and renamed over it, so a failed prepare leaves the previous
    dataset intact and never a half-written one. Raises UserError on bad input, and before reading the source when
    the output cannot be written (or would damage other files).
    """
    out = Path(cfg.prepared_dir)
    _check_output(out, cfg)
    # Each source listed (and checked) before anything is created; an error names the domain and its setting.
    domains = {"": (cfg, "data.source")} if cfg.target is None else {
        "a": (cfg.model_copy(update={"target": None}), "data.source"),
        "b": (cfg.model_copy(update={"source": cfg.target, "target": None}), "data.target")}
    sources = {domain: _named(domain, setting, domain_cfg.source, lambda c=domain_cfg: open_source(c))
               for domain, (domain_cfg, setting) in domains.items()}
    existing = nearest_existing(out.absolute().parent)
    try:
        with atomic_dir(out) as tmp:
            built = {}
            for domain, (domain_cfg, setting) in domains.items():
                build = partial(_build, domain_cfg, sources[domain], tmp / domain, previous=out / domain, top=out,
                                sources_cache=cache_beside(out, f"sources-{domain}" if domain else "sources", "npz"))
                built[domain] = _named(domain, setting, domain_cfg.source, build)
                write_json(tmp / domain / META_FILE, built[domain])
            meta = built[""] if cfg.target is None else {
                "format": PAIR_FORMAT,
                "task": "translation",
                "shape": built["a"]["shape"],
                "count": sum(b["count"] for b in built.values()),
                "domains": built,
            }
            if cfg.target is not None:
                write_json(tmp / META_FILE, meta)
    except BaseException:
        _remove_new_folders(out.absolute().parent, existing)  # the folders atomic_dir made for a dataset not made
        raise
    _remember_md5s(out, built)
    return meta


def _named(domain: str, setting: str, source: str, work: Callable[[], Any]) -> Any:
    """work(), its UserError prefixed with the translation domain it is about (a one-domain error is as is)."""
    try:
        return work()
    except UserError as e:
        if not domain:
            raise
        raise UserError(f"domain {domain.upper()} ({setting}={source}): {e}") from None


def _remove_new_folders(folder: Path, existing: Path) -> None:
    """Remove `folder` and its parents up to `existing` (which was there before) when they are empty."""
    while folder != existing and folder.is_relative_to(existing):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


# ----------------------------------------------------------------------------- the previous dataset
@dataclass
class _Previous:
    """The shards of the dataset already at data.prepared_dir that can be reused: prepared with the same settings,
    their files matching meta.json's md5s. Damaged shards are left out (their items are decoded again). Rows are
    read from each shard's rows.json when needed, not held for the whole collection."""

    dataset: PreparedDataset  # stored rows of the usable shards, in order
    labels: list[np.ndarray | None]  # per usable shard: its labels
    next_id: int  # above every shard id of the previous dataset

    @staticmethod
    def open(folder: Path, settings: dict[str, Any], labelled: bool, top: Path) -> _Previous | None:
        meta = read_meta_or_none(folder) if (folder / META_FILE).is_file() else None
        if meta is None or meta.get("format") != FORMAT or meta.get("settings") != settings \
                or (meta.get("classes") is not None) != labelled:
            return None
        try:
            listed = manifest_shards(meta)
        except (KeyError, TypeError, ValueError):
            return None
        cache = HashCache(cache_beside(top, "md5"))
        usable, offsets, labels = [], [], []
        for shard in listed:
            try:
                for kind, expected in shard.md5.items():
                    path = folder / sh.relpath(shard.id, kind)
                    if cache.hash(path, "md5", name=os.path.relpath(path, top)) != expected:
                        raise ValueError("md5 differs")
                offset, shape, dtype = sh.npy_layout(folder / sh.relpath(shard.id, "images"))
                shard_labels = sh.read_labels(folder / sh.relpath(shard.id, "labels")) if labelled else None
                if dtype != np.uint8 or shape != (shard.count, *meta["shape"]) \
                        or (shard_labels is not None and shard_labels.shape != (shard.count,)):
                    raise ValueError("files disagree with meta.json")
            except (OSError, ValueError):
                continue  # a damaged shard: its items are read from the source again
            usable.append(shard)
            offsets.append(offset)
            labels.append(shard_labels)
        cache.save()
        if not usable:
            return None
        total = sum(s.count for s in usable)
        dataset = PreparedDataset(folder, meta, usable, np.arange(total), None, offsets)
        return _Previous(dataset, labels, 1 + max(s.id for s in listed))

    def rows(self, k: int) -> list[list[str]] | None:
        """Usable shard k's [name, key] rows, or None when its rows.json does not match it."""
        try:
            rows = sh.read_rows(self.dataset.path / sh.relpath(self.dataset.shards[k].id, "rows"))
        except (OSError, ValueError):
            return None
        return rows if len(rows) == self.dataset.shards[k].count else None


class _Pixels:
    """content key → a stored row of the previous dataset holding its fitted pixels: sorted raw digests, searched
    with numpy (32 bytes per row, not a dict of a million strings)."""

    def __init__(self, digests: list[bytes], rows: list[int]):
        array = np.array(digests, dtype="S32") if digests else np.zeros(0, "S32")
        order = np.argsort(array, kind="stable")
        self.digests, self.rows = array[order], np.asarray(rows, dtype=np.int64)[order]

    def find(self, key: str) -> int | None:
        if not len(self.digests):
            return None
        digest = bytes.fromhex(key)
        at = min(int(np.searchsorted(self.digests, digest)), len(self.digests) - 1)
        return int(self.rows[at]) if self.digests[at].ljust(32, b"\0") == digest else None


# ----------------------------------------------------------------------------- one image set
def _build(cfg: DataConfig, source: Source, folder: Path, previous: Path, top: Path, sources_cache: Path
           ) -> dict[str, Any]:
    """Write one image set's shards into `folder` (reusing `previous`'s); return its meta. `top`: the directory DVC
    tracks (the md5 cache lives beside it); `sources_cache`: the file keeping the source files' content keys."""
    shape = (cfg.channels, cfg.resolution, cfg.resolution)
    row_bytes = int(np.prod(shape))
    settings = {"resolution": cfg.resolution, "channels": cfg.channels, "fit": FIT_VERSION}
    labelled = source.classes is not None
    selected = _select(source.count, cfg.max_images)  # item indices, in source order
    prev = _Previous.open(previous, settings, labelled, top)
    keys = _Keys(source, sources_cache)

    # ---- plan: which previous shards stay, which are rewritten, which items are new
    index_of = {source.names[i]: int(i) for i in selected}
    plan: list[tuple[int, np.ndarray, np.ndarray]] = []  # (usable previous shard k, its rows that stay, their items)
    claimed: set[str] = set()
    digests: list[bytes] = []  # every previous row's content key, for items that moved (renamed files)
    stored: list[int] = []
    if prev is not None:
        start = 0
        for k, shard in enumerate(prev.dataset.shards):
            shard_rows = prev.rows(k) or []
            alive, items = [], []
            for j, (name, key) in enumerate(shard_rows):
                i = index_of.get(name)
                if i is not None and name not in claimed and keys.key(i) == key:
                    alive.append(j)
                    items.append(i)
                    claimed.add(source.names[i])
                digests.append(bytes.fromhex(key))
                stored.append(start + j)
            if alive:
                plan.append((k, np.asarray(alive, dtype=np.int64), np.asarray(items, dtype=np.int64)))
            start += shard.count
    reuse = _Pixels(digests, stored)
    del digests, stored
    new_items = [int(i) for i in selected if source.names[i] not in claimed]
    del claimed
    rewritten = sum(len(alive) for k, alive, _ in plan if len(alive) != prev.dataset.shards[k].count) if prev else 0
    # Twice what is written: `dvc repro` then copies the new files into DVC's cache, usually on the same disk.
    ensure_free_space(top, 2 * (rewritten + len(new_items)) * (row_bytes + 8) + FREE_SPACE_MARGIN,
                      "prepared dataset")

    # ---- write: kept and rewritten shards in their order, then the new items
    entries: list[dict[str, Any]] = []
    next_id = prev.next_id if plan else 0
    starts = np.cumsum([0] + [s.count for s in prev.dataset.shards]) if prev else np.zeros(1, np.int64)
    for k, alive, items in plan:
        assert prev is not None
        shard = prev.dataset.shards[k]
        labels = np.array([source.labels[i] for i in items], dtype=np.int64) if labelled else None
        if len(alive) == shard.count:  # unchanged: the same files
            entries.append(_keep(prev.dataset.path, folder, shard, labels, prev.labels[k]))
        else:  # rows left it: rewritten from its own pixels
            pixels = prev.dataset.read_stored(starts[k] + alive)
            rows = [[source.names[i], keys.key(i)] for i in items]  # keys known: they matched
            md5 = sh.write_shard(folder, next_id, pixels, labels, rows)
            entries.append({"id": next_id, "count": len(alive), "md5": md5})
            next_id += 1
    skipped: list[dict[str, str]] = []
    per_shard = sh.rows_per_shard(cfg.shard_images, row_bytes)
    for pixels, labels, rows in _new_shards(source, new_items, prev, reuse, keys, per_shard, shape, skipped):
        md5 = sh.write_shard(folder, next_id, pixels, labels if labelled else None, rows)
        entries.append({"id": next_id, "count": len(rows), "md5": md5})
        next_id += 1
    _check_readable(source, entries, skipped, folder)
    keys.save()
    return _meta(cfg, source, entries, skipped, settings, labelled, folder)


def _select(count: int, max_images: int | None) -> np.ndarray:
    """The items kept: all, or the first `max_images` of a seed-0 permutation of the source (a mix of all classes),
    in source order."""
    if max_images is None or max_images >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(ORDER_SEED).permutation(count)[:max_images])


class _Keys:
    """Content keys of source items: a file's from the hash cache when its stat is unchanged, else read."""

    def __init__(self, source: Source, cache_file: Path):
        self.source = source
        self.files = FileKeys(cache_file, source.root, source.names) if source.root is not None else None
        self.root = str(source.root) if source.root is not None else None

    def key(self, i: int) -> str | None:
        """Item i's key; None when it cannot be read (it is then treated as changed, and skipped when decoded)."""
        try:
            # A string path and os.stat: this runs once per file of the collection on every prepare.
            stat = os.stat(os.path.join(self.root, self.source.names[i])) if self.root is not None else None
            cached = self.files.cached(i, stat) if self.files is not None and stat is not None else None
            return cached if cached is not None else self.remember(i, stat, self.source.open(i).key)
        except Exception:  # Pillow's and the OS's many errors: the decoding step reports them
            return None

    def remember(self, i: int, stat: os.stat_result | None, key: str) -> str:
        path = self.source.file(i)
        if self.files is not None and stat is not None and path is not None and stat_key(path.stat()) == \
                stat_key(stat):
            self.files.put(i, stat, key)
        return key

    def save(self) -> None:
        if self.files is not None:
            self.files.save()


def _new_shards(source: Source, items: list[int], prev: _Previous | None, reuse: _Pixels, keys: _Keys,
                per_shard: int, shape: tuple[int, int, int], skipped: list[dict[str, str]],
                ) -> Iterator[tuple[np.ndarray, np.ndarray, list[list[str]]]]:
    """(pixels uint8 (n, C, H, W), labels (n,), rows) of each new shard: items read one at a time, never more
    than one shard in memory. An unreadable file is skipped and listed (a built-in source's error is raised)."""
    buffer = np.empty((per_shard, *shape), dtype=np.uint8)
    labels = np.empty(per_shard, dtype=np.int64)
    rows: list[list[str]] = []
    with strict_decoding():
        for i in items:
            path = source.file(i)
            try:
                stat = path.stat() if path is not None else None
                raw = source.open(i)
                keys.remember(i, stat, raw.key)
                row = reuse.find(raw.key)
                if row is not None:  # the same content under another name: its pixels are already fitted
                    assert prev is not None
                    buffer[len(rows)] = prev.dataset.read_stored(np.array([row]))[0]
                else:
                    buffer[len(rows)] = raw.fit()
            except Exception as e:  # Pillow's plugins raise many types on damaged input: the file's problem
                if source.root is None:
                    raise
                skipped.append({"path": source.names[i], "reason": failure_reason(e)})
                continue
            labels[len(rows)] = source.labels[i] if source.labels[i] is not None else -1
            rows.append([source.names[i], raw.key])
            if len(rows) == per_shard:
                yield buffer, labels, rows
                rows = []
    if rows:
        yield buffer[: len(rows)], labels[: len(rows)], rows


def _keep(old: Path, new: Path, shard: Shard, labels: np.ndarray | None, old_labels: np.ndarray | None
          ) -> dict[str, Any]:
    """An unchanged shard in the new directory: its files hard-linked (same bytes, same inode: nothing is copied and
    DVC's and our hash caches still know them); its labels rewritten only when the class indices moved."""
    md5 = dict(shard.md5)
    for kind in sh.KINDS:
        if kind == "labels" and labels is not None and not np.array_equal(labels, old_labels):
            md5["labels"] = sh.write_labels(new, shard.id, labels)
        elif kind in shard.md5:
            _link(old / sh.relpath(shard.id, kind), new / sh.relpath(shard.id, kind))
    return {"id": shard.id, "count": shard.count, "md5": md5}


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links
        shutil.copy2(src, dst)


def _check_readable(source: Source, entries: list[dict[str, Any]], skipped: list[dict[str, str]],
                    folder: Path) -> None:
    """Fail when nothing was readable, or a class folder kept no image; warn about skipped files."""
    if not entries:
        raise UserError(f"data folder {str(source.root)!r} has no readable PNG/JPEG images; "
                        "data.source=folder:<path> needs at least one")
    if source.classes is not None and source.root is not None:
        counts = _class_counts(folder, entries, len(source.classes))
        empty = [name for name, n in zip(source.classes, counts, strict=True) if n == 0]
        if empty:
            raise UserError(f"class folder {str(source.root / empty[0])!r} has no readable PNG/JPEG images; "
                            "add images to it or remove it")
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable image file(s) in {str(source.root)!r} "
            f"(first: {skipped[0]['path']}: {skipped[0]['reason']}); they are listed in meta.json",
            DataWarning,
            stacklevel=4,
        )


def _class_counts(folder: Path, entries: list[dict[str, Any]], num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=np.int64)
    for entry in entries:
        counts += np.bincount(sh.read_labels(folder / sh.relpath(entry["id"], "labels")), minlength=num_classes)
    return counts


def _meta(cfg: DataConfig, source: Source, entries: list[dict[str, Any]], skipped: list[dict[str, str]],
          settings: dict[str, Any], labelled: bool, folder: Path) -> dict[str, Any]:
    # No timestamps or absolute temp paths: meta.json must be byte-identical for the same input.
    shape = [cfg.channels, cfg.resolution, cfg.resolution]
    class_counts = None
    if labelled:
        assert source.classes is not None
        counts = _class_counts(folder, entries, len(source.classes))
        class_counts = {name: int(n) for name, n in zip(source.classes, counts, strict=True)}
    return {
        "format": FORMAT,
        "source": cfg.source,
        "count": sum(e["count"] for e in entries),
        "shape": shape,
        "dtype": "uint8",
        "classes": source.classes,
        "class_counts": class_counts,
        "content_hash": content_hash(shape, ORDER_SEED, entries),
        "source_count": source.count,
        "max_images": cfg.max_images,
        "settings": settings,
        "order_seed": ORDER_SEED,
        "order": f"stored rows read in permutation(seed={ORDER_SEED}) order",
        "resize": "centre-crop to square, PIL bicubic",
        "shards": entries,
        "skipped_files": skipped,
        "ignored_files": source.ignored,
    }


def content_hash(shape: list[int], order_seed: int, entries: list[dict[str, Any]]) -> str:
    """sha256 over the shape, the load order's seed and every shard file's md5 in order: equal hashes mean the same
    images and labels read in the same order (derived from the manifest, not by reading the images again)."""
    import hashlib
    import json

    blob = json.dumps({"shape": shape, "order_seed": order_seed,
                       "shards": [[e["count"], e["md5"]] for e in entries]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _remember_md5s(out: Path, metas: dict[str, dict[str, Any]]) -> None:
    """Seed the md5 cache beside `out` with the md5s just computed while writing, so the data version (DVC's
    directory md5) of the new dataset costs a stat per file, not a read of the collection."""
    cache = HashCache(cache_beside(out, "md5"))
    names = set()
    for domain, meta in metas.items():
        folder = out / domain if domain else out
        for entry in meta["shards"]:
            for kind, md5 in entry["md5"].items():
                path = folder / sh.relpath(entry["id"], kind)
                name = os.path.relpath(path, out)
                cache.put(name, path.stat(), "md5", md5)
                names.add(name)
    for meta_file in [out / META_FILE] + [out / d / META_FILE for d in metas if d]:
        name = os.path.relpath(meta_file, out)
        cache.put(name, meta_file.stat(), "md5", file_digest(meta_file, "md5"))
        names.add(name)
    cache.keep_only(names)
    cache.save()


def _check_output(out: Path, cfg: DataConfig) -> None:
    """Refuse a prepared_dir that `prepare` could not write, or whose replacement (the whole directory) would
    destroy files that are not a prepared dataset."""
    setting = f"data.prepared_dir={str(out)!r}"
    if out.name in ("", ".", ".."):
        raise UserError(f"{setting} names no directory of its own; use a path such as data/prepared")
    if out.exists() and not out.is_dir():
        raise UserError(f"{setting} is a file; prepare writes a directory there, so choose another path")
    if out.is_dir() and not (out / META_FILE).is_file() and any(out.iterdir()):
        raise UserError(
            f"{setting} holds files but no {META_FILE}, so it is not a prepared dataset and prepare would replace "
            "it whole; choose a new or empty directory"
        )
    for key, source in (("data.source", cfg.source), ("data.target", cfg.target)):
        kind, _, folder = (source or "").partition(":")
        if kind == "folder":
            images, target = Path(folder).resolve(), out.resolve()
            if images.is_relative_to(target) or target.is_relative_to(images):
                raise UserError(
                    f"{setting} overlaps the image folder of {key}={source!r}; prepare replaces "
                    "data.prepared_dir whole, so put it outside the image folder (and the images outside it)"
                )
    # Probe the nearest folder that exists: creating the missing ones now would leave them behind when the
    # source then turns out to be bad.
    ensure_writable_dir(nearest_existing(out.absolute().parent), "a parent folder of data.prepared_dir")
