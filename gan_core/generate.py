"""Sample a generator into a PNG grid: the consumer's one-liner, behind `ganops generate`.

    generate_grid("models:/ganops-generator@champion", n=64, out="grid.png", seed=0)
    generate_grid("outputs/train/generator", n=10, out="digits.png", labels=list(range(10)))
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from torchvision.utils import save_image

from gan_core.device import pick_device
from gan_core.errors import UserError
from gan_core.package import load_generator, sample_images

MAX_IMAGES = 4096


def generate_grid(
    source: str | Path,
    n: int,
    out: str | Path,
    seed: int = 0,
    labels: Sequence[int] | None = None,
    device: str = "auto",
) -> Path:
    """Write `n` images from the generator at `source` (package dir or models:/ URI) as one PNG grid, atomically.

    The grid is about square (ceil(sqrt(n)) per row) with a 2 px border; the same seed gives the same grid.
    """
    if not 1 <= n <= MAX_IMAGES:
        raise UserError(f"-n {n}: expected a number of images in [1, {MAX_IMAGES}]")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {str(out)!r}: expected a .png path")
    generator = load_generator(source, device=pick_device(device))
    images = sample_images(generator, n, seed=seed, labels=list(labels) if labels is not None else None)  # uint8
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed over it: readers see the old grid or the new one, never half of
    # one; the pid keeps two concurrent writers of the same path off each other's temp file.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        save_image(images.float() / 255.0, tmp, nrow=math.ceil(math.sqrt(n)), format="png")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
