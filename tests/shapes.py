"""A synthetic but structured RGB image collection, flat (no labels): one filled shape per image on a dark
background. 12 modes: 3 kinds (circle, square, triangle) × 4 colours (red, green, blue, yellow), each at a random
size, place and (squares and triangles) angle. The tests, the label-free metric benchmark and the rgb64 recipe's
benchmark train on it.

    python tests/shapes.py /tmp/shapes --count 2000 --size 64      # writes /tmp/shapes/shape_00000.png, ...
    write_shapes(Path("/tmp/shapes"), count=200, size=64, seed=0)  # the same from Python

The same arguments always write byte-identical files.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 230), "yellow": (230, 210, 40)}
SUPERSAMPLE = 4
"""Shapes are drawn at 4× the side and shrunk (Lanczos): smooth edges, as a camera would give."""


def draw_shape(kind: str, colour: tuple[int, int, int], size: int, rng: np.random.Generator) -> Image.Image:
    """One `size`×`size` RGB image of a `kind` shape in `colour`, placed, sized and turned by `rng`."""
    big = size * SUPERSAMPLE
    background = tuple(int(v) for v in rng.integers(0, 30, size=3))  # dark, slightly tinted
    image = Image.new("RGB", (big, big), background)
    radius = rng.uniform(0.18, 0.34) * big
    cx, cy = (rng.uniform(radius + 0.04 * big, big - radius - 0.04 * big) for _ in range(2))
    shade = rng.uniform(0.8, 1.0)
    fill = tuple(int(c * shade) for c in colour)
    draw = ImageDraw.Draw(image)
    if kind == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        corners = 4 if kind == "square" else 3
        turn = rng.uniform(0, 2 * math.pi / corners)
        r = radius * (1.2 if kind == "triangle" else 1.0)  # a triangle's area is small for its circumradius
        angles = [turn + 2 * math.pi * i / corners for i in range(corners)]
        points = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
        draw.polygon(points, fill=fill)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def write_shapes(out: Path, count: int, size: int = 64, seed: int = 0) -> Path:
    """Write `count` PNGs into the flat folder `out` (created), cycling through the 12 modes; returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    modes = [(kind, colour) for kind in KINDS for colour in COLOURS.values()]
    for i in range(count):
        kind, colour = modes[i % len(modes)]
        draw_shape(kind, colour, size, rng).save(out / f"shape_{i:05d}.png", optimize=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_shapes(args.out, args.count, args.size, args.seed))


if __name__ == "__main__":
    main()
