"""`prepare`: any source → one prepared dataset directory, deterministic and atomic.

    meta = prepare(cfg.data)                      # writes cfg.data.prepared_dir, returns meta.json's dict

    python -m gan_core prepare data.source=digits data.resolution=16
    python -m gan_core prepare data.source=folder:my_images data.channels=3
    python -m gan_core prepare --params configs/cyclegan-digits.yaml   # two domains, for translation (cyclegan)

With data.target set (a translation run), domain A comes from data.source and domain B from data.target, each any
source kind, both fitted to the same data.resolution and data.channels, written as a/ and b/.

Images are stored in a fixed pseudo-random order (a seed-0 permutation of the source order) so that the first
`data.max_images` are a mix of all classes. The same input therefore gives byte-identical files (and the same DVC
md5). The directory is built beside its final place and renamed over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gan_core.atomic import atomic_dir, write_json
from gan_core.config import DataConfig
from gan_core.data.prepared import FORMAT, IMAGES_FILE, LABELS_FILE, META_FILE, PAIR_FORMAT, content_hash
from gan_core.data.sources import Source, open_source
from gan_core.errors import UserError
from gan_core.preflight import (
    ensure_free_space,
    ensure_writable_dir,
    nearest_existing,
)

if TYPE_CHECKING:
    pass


ORDER_SEED = 0


FREE_SPACE_MARGIN = 1 << 20
"""Bytes the free-space check adds to the arrays' size for meta.json and filesystem overhead."""


def prepare(cfg: DataConfig) -> dict[str, Any]:
    """Build `cfg.prepared_dir` from `cfg.source` (and, for translation, `cfg.target`); return the meta dict
    written to meta.json.

    The directory is built beside its final place and renamed over it, so a failed prepare leaves
    the previous dataset intact and never a half-written one. Raises UserError on bad input, and before
    reading the source when the output cannot be written (or would damage other files).
    """
    out = Path(cfg.prepared_dir)
    _check_output(out, cfg)
    if cfg.target is None:
        images, labels, meta = _build(cfg, out)
        with atomic_dir(out) as tmp:
            _write_arrays(tmp, images, labels, meta)
        return meta
    # Translation: each domain read (and checked) in turn; an error names the domain and its setting.
    built = {}
    for domain, setting, source in (("a", "data.source", cfg.source), ("b", "data.target", cfg.target)):
        try:
            built[domain] = _build(cfg.model_copy(update={"source": source, "target": None}), out)
        except UserError as e:
            raise UserError(f"domain {domain.upper()} ({setting}={source}): {e}") from None
    meta = {
        "format": PAIR_FORMAT,
        "task": "translation",
        "shape": built["a"][2]["shape"],
        "count": sum(b[2]["count"] for b in built.values()),
        "domains": {domain: b[2] for domain, b in built.items()},
    }
    with atomic_dir(out) as tmp:
        for domain, (images, labels, domain_meta) in built.items():
            (tmp / domain).mkdir()
            _write_arrays(tmp / domain, images, labels, domain_meta)
        write_json(tmp / META_FILE, meta)
    return meta


def _build(cfg: DataConfig, out: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """One domain's arrays and meta from cfg.source, in the fixed order, cut to cfg.max_images."""
    source = open_source(cfg)
    order = np.random.default_rng(ORDER_SEED).permutation(source.count)
    if cfg.max_images is not None:
        order = order[: cfg.max_images]
    shape = (cfg.channels, cfg.resolution, cfg.resolution)
    array_bytes = len(order) * (int(np.prod(shape)) + (8 if source.classes is not None else 0))
    # Twice the arrays: `dvc repro` then copies the new directory into DVC's cache, usually on the same disk.
    ensure_free_space(out, 2 * array_bytes + FREE_SPACE_MARGIN, "prepared dataset")
    images = np.empty((len(order), *shape), dtype=np.uint8)  # (N, C, H, W)
    labels = np.empty(len(order), dtype=np.int64) if source.classes is not None else None
    for row, index in enumerate(order):
        images[row], label = source.fetch(int(index))
        if labels is not None:
            labels[row] = label
    return images, labels, _meta(cfg, images, labels, source)


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


def _meta(cfg: DataConfig, images: np.ndarray, labels: np.ndarray | None, source: Source) -> dict[str, Any]:
    # No timestamps or absolute temp paths: meta.json must be byte-identical for the same input.
    class_counts = None
    if labels is not None and source.classes is not None:
        counts = np.bincount(labels, minlength=len(source.classes))
        class_counts = {name: int(n) for name, n in zip(source.classes, counts, strict=True)}
    return {
        "format": FORMAT,
        "source": cfg.source,
        "count": int(images.shape[0]),
        "shape": list(images.shape[1:]),
        "dtype": "uint8",
        "classes": source.classes,
        "class_counts": class_counts,
        "content_hash": content_hash(images, labels),
        "source_count": source.count,
        "max_images": cfg.max_images,
        "order": f"permutation(seed={ORDER_SEED}) of the source order",
        "resize": "centre-crop to square, PIL bicubic",
        "skipped_files": source.skipped,
        "ignored_files": source.ignored,
    }


def _write_arrays(folder: Path, images: np.ndarray, labels: np.ndarray | None, meta: dict[str, Any]) -> None:
    np.save(folder / IMAGES_FILE, images, allow_pickle=False)
    if labels is not None:
        np.save(folder / LABELS_FILE, labels, allow_pickle=False)
    write_json(folder / META_FILE, meta)
