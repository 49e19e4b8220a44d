"""The prepared dataset on disk and how training, the classifier and evaluation read it: shard by shard, a batch's
rows at a time, so memory stays flat however large the collection. No pickles: .npy files read with
allow_pickle=False, and JSON.

    ds = load_prepared("data/prepared")       # a PreparedDataset: len(ds), ds.shape (C, H, W), ds.labels (N,) | None
    x = ds.take(torch.tensor([3, 1, 4]))      # uint8 (3, C, H, W): just those rows are read
    ds.images                                 # the whole set in memory, uint8 (N, C, H, W) (small sets, tools)
    domains = load_domains("data/prepared-translation")   # {"a": PreparedDataset, "b": PreparedDataset}

The prepared directory holds
    meta.json    the manifest: source, count, shape [C, H, W], classes, class_counts, content_hash, the shards in
                 order with each file's md5, the load order's seed, skipped_files and ignored_files ({path, reason}:
                 unreadable images; non-image files, special files and symlinks not followed)
    shards/      NNNNNN.images.npy, NNNNNN.labels.npy (labelled sources), NNNNNN.rows.json (gan_core.data.shards)
Rows are stored in a stable order (shards are only ever added, or rewritten when an image they hold left the
source) and read in a load order: a seeded permutation of the stored rows (`order_seed`), so the first rows mix
every class and any prefix is a uniform sample. A translation dataset holds a/ and b/, each laid out as above, and
a meta.json with "task": "translation" and both domains' meta: one directory, so one DVC md5 (one data version).

Opening a dataset checks each shard file against the md5 meta.json records (through the hash cache beside the
directory, so an unchanged file is not read again) and each .npy header against the manifest: a damaged shard or
a manifest that disagrees with its shards is one UserError naming the file.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gan_core.data import shards as sh
from gan_core.data.hashcache import HashCache, cache_beside
from gan_core.errors import UserError

if TYPE_CHECKING:
    import torch


META_FILE = "meta.json"


FORMAT = "ganops-prepared/2"


OLD_FORMAT = "ganops-prepared/1"
"""One images.npy (N, C, H, W) in a shuffled order: written by ganops before shards. Not read: prepare again."""


PAIR_FORMAT = "ganops-prepared-pair/1"


DOMAINS = ("a", "b")


IN_MEMORY_BYTES = 256 << 20
"""Image sets up to this size are read into memory whole for training (a batch is one gather); larger ones are
read a batch's rows at a time. Both give the same bytes."""


PREPARE_AGAIN = "run `python -m gan_core prepare` (or `dvc repro prepare`) again"


@dataclass(frozen=True)
class Shard:
    """One shard as meta.json lists it: its id, image count and the md5 of each of its files."""

    id: int
    count: int
    md5: dict[str, str]


def manifest_shards(meta: dict[str, Any]) -> list[Shard]:
    return [Shard(int(s["id"]), int(s["count"]), dict(s["md5"])) for s in meta["shards"]]


class PreparedDataset:
    """A prepared image set in its load order: `len`, `shape` (C, H, W), `labels` int64 (N,) or None, `take(indices)`
    → uint8 (B, C, H, W), and `images` (the whole set in memory, read once). `rows(start, stop)` is a view of a range
    of the load order (the held-out tail of a translation domain)."""

    def __init__(self, root: Path, meta: dict[str, Any], shards: list[Shard], order: np.ndarray,
                 stored_labels: np.ndarray | None, offsets: list[int], files: _OpenFiles | None = None):
        self.path, self.meta, self.shards = root, meta, shards
        self.order = order  # (n,) int64: load index → stored row
        self._stored_labels = stored_labels  # (N,) int64 in stored order
        self._offsets = offsets  # each shard's data offset in its images file
        self._starts = np.cumsum([0] + [s.count for s in shards])  # stored row where each shard begins
        self._files = files or _OpenFiles()
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    # ------------------------------------------------------------------ what it holds
    def __len__(self) -> int:
        return len(self.order)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.meta["shape"]
        return int(c), int(h), int(w)

    @property
    def row_bytes(self) -> int:
        c, h, w = self.shape
        return c * h * w

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    @property
    def classes(self) -> list[str] | None:
        return self.meta.get("classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes or [])

    @property
    def labels(self) -> torch.Tensor | None:
        """int64 (N,) in load order, or None for an unlabelled set."""
        import torch

        if self._stored_labels is None:
            return None
        if self._labels is None:
            self._labels = torch.from_numpy(self._stored_labels[self.order])
        return self._labels

    # ------------------------------------------------------------------ reading
    def take(self, indices: torch.Tensor | np.ndarray | list[int], out: np.ndarray | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W): the images at these load-order indices (from memory when the set was read whole; into
        `out` when given, see read_stored)."""
        import torch

        idx = indices.cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices, dtype=np.int64)
        if self._images is not None and out is None:
            return self._images[torch.from_numpy(idx)]
        return torch.from_numpy(self.read_stored(self.order[idx], out))

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(load indices (n,), images uint8 (n, C, H, W)) shard by shard: the whole set read once, sequentially,
        holding one shard in memory."""
        place = np.full(self._starts[-1], -1, dtype=np.int64)
        place[self.order] = np.arange(len(self))  # stored row → load index (-1: not in this view)
        for k in range(len(self.shards)):
            where = place[self._starts[k]:self._starts[k + 1]]
            present = where >= 0
            if present.any():
                block = self.read_stored(np.arange(self._starts[k], self._starts[k + 1]))
                yield where[present], block[present]

    @property
    def images(self) -> torch.Tensor:
        """The whole set in memory, uint8 (N, C, H, W) in load order: read once, shard by shard. For small sets and
        tools; training and evaluation read batches (`take`)."""
        import torch

        if self._images is None:
            whole = np.empty((len(self), *self.shape), dtype=np.uint8)
            for where, block in self.blocks():
                whole[where] = block
            self._images = torch.from_numpy(whole)
        return self._images

    def read_stored(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 (len(rows), C, H, W): stored rows read by offset, consecutive rows of a shard in one read; into `out`
        (a C-contiguous uint8 array of that size, e.g. pinned memory) when given."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.row_bytes), dtype=np.uint8) if out is None \
            else out.reshape(len(rows), self.row_bytes)
        if len(rows):
            sorter = np.argsort(rows, kind="stable")
            ordered = rows[sorter]
            shard_of = np.searchsorted(self._starts, ordered, side="right") - 1
            # A run: consecutive stored rows inside one shard, read with one call.
            breaks = np.flatnonzero((np.diff(ordered) != 1) | (np.diff(shard_of) != 0)) + 1
            for begin, end in zip(np.r_[0, breaks], np.r_[breaks, len(ordered)], strict=True):
                k, targets = int(shard_of[begin]), sorter[begin:end]
                in_place = end - begin == 1 or bool((np.diff(targets) == 1).all())
                block = out[targets[0]:targets[0] + end - begin] if in_place \
                    else np.empty((end - begin, self.row_bytes), dtype=np.uint8)
                first = int(ordered[begin] - self._starts[k])
                self._pread(k, block, self._offsets[k] + first * self.row_bytes)
                if not in_place:
                    out[targets] = block
        return out.reshape(len(rows), *self.shape)

    def _pread(self, k: int, buffer: np.ndarray, offset: int) -> None:
        path = self.path / sh.relpath(self.shards[k].id, "images")
        fd = self._files.fd(path)
        view = memoryview(buffer).cast("B")
        got = os.preadv(fd, [view], offset)
        if got != len(view):
            raise UserError(f"prepared dataset {str(self.path)!r}: {path.name} is shorter than meta.json says "
                            f"(changed since it was opened); {PREPARE_AGAIN}")

    def rows(self, start: int, stop: int) -> PreparedDataset:
        """A view of load-order rows start..stop (no image is read)."""
        view = PreparedDataset(self.path, self.meta, self.shards, self.order[start:stop], self._stored_labels,
                               self._offsets, self._files)
        if self._images is not None:
            view._images = self._images[start:stop]
        return view


class _OpenFiles:
    """Shard files opened on first read and kept open (pread needs no seek, so threads and forks may share them;
    the lock keeps a prefetch thread and the training thread from opening one file twice)."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()

    def fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    try:
                        fd = os.open(path, os.O_RDONLY)
                    except OSError as e:
                        raise UserError(f"cannot read {path} ({e.strerror}); {PREPARE_AGAIN}") from None
                    self._fds[path] = fd
        return fd

    def __del__(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass


# ----------------------------------------------------------------------------- opening
def read_meta_or_none(root: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((root / META_FILE).read_text())
    except (OSError, ValueError):  # JSONDecodeError, UnicodeDecodeError
        return None
    return meta if isinstance(meta, dict) else None


def load_prepared(path: str | Path, *, top: str | Path | None = None) -> PreparedDataset:
    """Open a prepared dataset directory (no pixel is read yet); raise UserError when it is missing, of the old
    one-array format, or inconsistent with its shards. `top`: the directory DVC tracks, when `path` is a domain of
    a translation dataset (its hash cache lives beside `top`)."""
    root = Path(path)
    if not (root / META_FILE).is_file():
        raise UserError(
            f"no prepared dataset at {str(root)!r} (no {META_FILE}); run `python -m gan_core prepare` "
            "or `dvc repro prepare` first, or set data.prepared_dir"
        )
    meta = read_meta_or_none(root)
    if meta is None or not {"shape", "count"} <= meta.keys():
        raise UserError(f"prepared dataset {str(root)!r} has a damaged {META_FILE}; {PREPARE_AGAIN}")
    if meta.get("format") == PAIR_FORMAT:
        raise UserError(
            f"{str(root)!r} holds two domains (data.target was set: a translation dataset); a generator trains on "
            "one: prepare again without data.target, or train a translation family (model.arch=cyclegan)"
        )
    if meta.get("format") == OLD_FORMAT or "shards" not in meta:
        raise UserError(f"prepared dataset {str(root)!r} has the one-array format of an older ganops (images.npy); "
                        f"{PREPARE_AGAIN} to write it as shards")
    try:
        shards = manifest_shards(meta)
        shape = tuple(int(s) for s in meta["shape"])
        seed = int(meta["order_seed"])
        labelled = meta.get("classes") is not None
    except (KeyError, TypeError, ValueError):
        raise UserError(f"prepared dataset {str(root)!r} has a damaged {META_FILE}; {PREPARE_AGAIN}") from None
    if sum(s.count for s in shards) != meta["count"]:
        raise UserError(f"prepared dataset {str(root)!r}: {META_FILE} counts {meta['count']} images but its shards "
                        f"hold {sum(s.count for s in shards)}; {PREPARE_AGAIN}")
    check_files(root, shards, top)
    offsets, labels = [], []
    for shard in shards:
        images_path = root / sh.relpath(shard.id, "images")
        try:
            offset, found, dtype = sh.npy_layout(images_path)
            if dtype != np.uint8 or found != (shard.count, *shape):
                raise ValueError(f"{dtype} {list(found)} where {META_FILE} says uint8 {[shard.count, *shape]}")
            offsets.append(offset)
            if labelled:
                shard_labels = sh.read_labels(root / sh.relpath(shard.id, "labels"))
                if shard_labels.dtype != np.int64 or shard_labels.shape != (shard.count,):
                    raise ValueError(f"labels {shard_labels.dtype} {list(shard_labels.shape)} do not match its images")
                labels.append(shard_labels)
        except (OSError, ValueError) as e:
            raise UserError(f"prepared dataset {str(root)!r}: shard {images_path.name} is damaged ({e}); "
                            f"{PREPARE_AGAIN}") from None
    order = load_order(meta["count"], seed)
    stored_labels = (np.concatenate(labels) if labels else np.empty(0, np.int64)) if labelled else None
    return PreparedDataset(root, meta, shards, order, stored_labels, offsets)


def load_order(count: int, seed: int) -> np.ndarray:
    """Load index → stored row: a seeded permutation, so that any prefix of the load order mixes every class."""
    return np.random.default_rng(seed).permutation(count).astype(np.int64)


def check_files(root: Path, shards: list[Shard], top: str | Path | None = None) -> None:
    """Every shard file is there with the md5 meta.json records (read only when its stat changed since last
    checked); a UserError naming the first that is not."""
    top = Path(top) if top is not None else root
    cache = HashCache(cache_beside(top, "md5"))
    try:
        for shard in shards:
            for kind, expected in shard.md5.items():
                path = root / sh.relpath(shard.id, kind)
                try:
                    found = cache.hash(path, "md5", name=os.path.relpath(path, top))
                except OSError as e:
                    raise UserError(f"prepared dataset {str(root)!r}: {sh.relpath(shard.id, kind)} cannot be read "
                                    f"({e.strerror}); {PREPARE_AGAIN}") from None
                if found != expected:
                    raise UserError(f"prepared dataset {str(root)!r}: {sh.relpath(shard.id, kind)} is damaged (md5 "
                                    f"{found}, {META_FILE} records {expected}); {PREPARE_AGAIN}")
    finally:
        cache.save()


def holdout_split(dataset: PreparedDataset, fraction: float) -> tuple[PreparedDataset, PreparedDataset]:
    """(training part, held-out tail): the last `fraction` of the images (at least one when fraction > 0), in the
    load order (a seeded shuffle, so every class is in both parts)."""
    n = len(dataset)
    held = min(n - 1, max(1, round(n * fraction))) if fraction > 0 else 0
    if n - held < 1:
        raise UserError(f"{dataset.path}: {n} image(s) are too few to hold out {fraction:.0%} and still train")
    return dataset.rows(0, n - held), dataset.rows(n - held, n)


def read_meta(path: str | Path) -> dict[str, Any]:
    """meta.json of a prepared directory (one image set, or a translation dataset with its domains' meta)."""
    meta = read_meta_or_none(Path(path))
    if meta is None:
        raise UserError(f"no readable {META_FILE} in {str(path)!r}; run `python -m gan_core prepare` again")
    return meta


def load_domains(path: str | Path) -> dict[str, PreparedDataset]:
    """Both domains of a translation dataset: {"a": ..., "b": ...}; a UserError for a one-domain dataset."""
    root = Path(path)
    meta = read_meta_or_none(root)
    if meta is None or meta.get("format") != PAIR_FORMAT:
        if meta is not None and {"shape", "count"} <= meta.keys():
            raise UserError(
                f"{str(root)!r} holds one image set, but translation needs two domains: set data.target (domain B; "
                "data.source is domain A) and run prepare again"
            )
        load_prepared(root)  # its message for a missing or damaged dataset
        raise UserError(f"prepared dataset {str(root)!r} has a damaged {META_FILE}; {PREPARE_AGAIN}")
    domains = {}
    for domain in DOMAINS:
        try:
            domains[domain] = load_prepared(root / domain, top=root)
        except UserError as e:
            raise UserError(f"domain {domain.upper()}: {e}") from None
    if domains["a"].shape != domains["b"].shape:
        raise UserError(f"prepared dataset {str(root)!r}: its domains differ in shape; {PREPARE_AGAIN}")
    return domains
