"""The prepared dataset on disk and in memory: what `prepare` writes and training, the classifier and evaluation
read. No pickles: .npy arrays loaded with allow_pickle=False, and meta.json.

    ds = load_prepared("data/prepared")           # ds.images uint8 (N, C, H, W), ds.labels int64 (N,) | None
    domains = load_domains("data/prepared-translation")   # {"a": PreparedDataset, "b": PreparedDataset}

The prepared directory holds
    images.npy   uint8 (N, C, H, W), C = data.channels, H = W = data.resolution
    labels.npy   int64 (N,), only when the source is labelled
    meta.json    source, count, shape [C, H, W], classes, class_counts, content_hash (sha256 of the arrays),
                 skipped_files and ignored_files ({path, reason}: unreadable images; non-image files, special
                 files and symlinks not followed)
A translation dataset holds a/ and b/, each laid out as above, and a meta.json with "task": "translation" and both
domains' meta: one directory, so one DVC md5 (one data version) covers both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gan_core.errors import UserError

if TYPE_CHECKING:
    import torch


IMAGES_FILE = "images.npy"


LABELS_FILE = "labels.npy"


META_FILE = "meta.json"


FORMAT = "ganops-prepared/1"


PAIR_FORMAT = "ganops-prepared-pair/1"


DOMAINS = ("a", "b")


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset in memory: images uint8 (N, C, H, W), labels int64 (N,) or None, and meta.json."""

    images: torch.Tensor
    labels: torch.Tensor | None
    meta: dict[str, Any]
    path: Path

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def classes(self) -> list[str] | None:
        return self.meta.get("classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes or [])


def load_prepared(path: str | Path) -> PreparedDataset:
    """Read a prepared dataset directory (no pickles); raise UserError when it is missing or inconsistent."""
    import torch

    root = Path(path)
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise UserError(
            f"no prepared dataset at {str(root)!r} (no {META_FILE}); run `python -m gan_core prepare` "
            "or `dvc repro prepare` first, or set data.prepared_dir"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        meta = None
    if not isinstance(meta, dict) or not {"shape", "count"} <= meta.keys():
        raise UserError(f"prepared dataset {str(root)!r} has a damaged {META_FILE}; run prepare again")
    if meta.get("format") == PAIR_FORMAT:
        raise UserError(
            f"{str(root)!r} holds two domains (data.target was set: a translation dataset); a generator trains on "
            "one: prepare again without data.target, or train a translation family (model.arch=cyclegan)"
        )
    try:
        images = np.load(root / IMAGES_FILE, allow_pickle=False)
        labels = np.load(root / LABELS_FILE, allow_pickle=False) if meta.get("classes") is not None else None
    except (OSError, ValueError) as e:
        raise UserError(f"prepared dataset {str(root)!r} is damaged ({e}); run prepare again") from None
    if images.dtype != np.uint8 or list(images.shape[1:]) != meta["shape"] or len(images) != meta["count"]:
        raise UserError(
            f"prepared dataset {str(root)!r}: {IMAGES_FILE} has {images.dtype} {list(images.shape)}, "
            f"meta.json says uint8 {[meta['count'], *meta['shape']]}; run prepare again"
        )
    if labels is not None and (labels.dtype != np.int64 or labels.shape != (len(images),)):
        raise UserError(f"prepared dataset {str(root)!r}: {LABELS_FILE} does not match the images; run prepare again")
    return PreparedDataset(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels) if labels is not None else None,
        meta=meta,
        path=root,
    )


def holdout_split(dataset: PreparedDataset, fraction: float) -> tuple[PreparedDataset, PreparedDataset]:
    """(training part, held-out tail): the last `fraction` of the images (at least one when fraction > 0), in the
    fixed order prepare wrote (a seeded shuffle, so every class is in both parts)."""
    n = len(dataset)
    held = min(n - 1, max(1, round(n * fraction))) if fraction > 0 else 0
    if n - held < 1:
        raise UserError(f"{dataset.path}: {n} image(s) are too few to hold out {fraction:.0%} and still train")

    def part(rows: slice) -> PreparedDataset:
        labels = dataset.labels[rows] if dataset.labels is not None else None
        return PreparedDataset(dataset.images[rows], labels, dataset.meta, dataset.path)

    return part(slice(0, n - held)), part(slice(n - held, n))


def read_meta(path: str | Path) -> dict[str, Any]:
    """meta.json of a prepared directory (one image set, or a translation dataset with its domains' meta)."""
    try:
        meta = json.loads((Path(path) / META_FILE).read_text())
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        raise UserError(f"no readable {META_FILE} in {str(path)!r}; run `python -m gan_core prepare` again")
    return meta


def load_domains(path: str | Path) -> dict[str, PreparedDataset]:
    """Both domains of a translation dataset: {"a": ..., "b": ...}; a UserError for a one-domain dataset."""
    root = Path(path)
    try:
        meta = json.loads((root / META_FILE).read_text())
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != PAIR_FORMAT:
        if isinstance(meta, dict) and {"shape", "count"} <= meta.keys():
            raise UserError(
                f"{str(root)!r} holds one image set, but translation needs two domains: set data.target (domain B; "
                "data.source is domain A) and run prepare again"
            )
        load_prepared(root)  # its message for a missing or damaged dataset
        raise UserError(f"prepared dataset {str(root)!r} has a damaged {META_FILE}; run prepare again")
    domains = {}
    for domain in DOMAINS:
        try:
            domains[domain] = load_prepared(root / domain)
        except UserError as e:
            raise UserError(f"domain {domain.upper()}: {e}") from None
    if list(domains["a"].images.shape[1:]) != list(domains["b"].images.shape[1:]):
        raise UserError(f"prepared dataset {str(root)!r}: its domains differ in shape; run prepare again")
    return domains


def content_hash(images: np.ndarray, labels: np.ndarray | None) -> str:
    """sha256 over the arrays' shapes, dtypes and bytes: equal hashes mean equal data."""
    digest = hashlib.sha256()
    for name, array in (("images", images), ("labels", labels)):
        if array is None:
            continue
        digest.update(f"{name}:{array.dtype.str}:{list(array.shape)}\n".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
