"""Sample a generator into a PNG grid: the consumer's one-liner, behind `ganops generate`.

    generate_grid("models:/ganops-generator@champion", n=64, out="grid.png", seed=0)
    generate_grid("outputs/train/generator", n=10, out="digits.png", labels=list(range(10)))
    generate_grid("models:/ganops-generator@champion", n=64, out="grid.png", truncation_psi=0.7)  # stylegan2

Everything the caller chose (n, seed, labels, --out, --device) is checked before the model is fetched or loaded,
and nothing is created on the way: a failure leaves the file system as it was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from torchvision.utils import save_image

from gan_core.atomic import atomic_file
from gan_core.device import pick_device
from gan_core.errors import UserError
from gan_core.packaging.generator import MAX_SEED, as_int, load_generator, sample_images, truncation_value
from gan_core.preflight import ensure_free_space, ensure_writable_dir, nearest_existing

MAX_IMAGES = 4096
"""Most images one grid may hold (a 65×65 grid; n=10**9 would exhaust memory, not make a picture)."""


def generate_grid(
    source: str | Path,
    n: int,
    out: str | Path,
    seed: int = 0,
    labels: Sequence[int] | None = None,
    device: str = "auto",
    truncation_psi: float = 1.0,
) -> Path:
    """Write `n` images from the generator at `source` (package dir or models:/ URI) as one PNG grid, atomically.

    The grid is about square (ceil(sqrt(n)) per row) with a 2 px border; the same seed gives the same grid.
    """
    n, seed, labels = _check_request(n, seed, labels)
    psi = truncation_value(truncation_psi)
    out = _check_out(Path(out))
    target = pick_device(device, key="--device")
    generator = load_generator(source, device=target)
    images = sample_images(generator, n, seed=seed, labels=labels, truncation_psi=psi)  # uint8 (n, C, H, W)
    h, w = images.shape[2:]
    # An upper bound for the PNG: the grid as raw RGB bytes (grayscale tiles are drawn as RGB), 2 px borders.
    grid_bytes = 3 * n * (h + 2) * (w + 2) + 2**16
    ensure_free_space(out.parent, grid_bytes, "image grid")
    ensure_writable_dir(out.parent, "--out directory")
    with atomic_file(out) as tmp:
        save_image(images.float() / 255.0, tmp, nrow=math.ceil(math.sqrt(n)), format="png")
    return out


def _check_request(n: object, seed: object, labels: Sequence[object] | None) -> tuple[int, int, list[int] | None]:
    """n, seed and labels as ints in range (the class range is checked once the generator is loaded)."""
    n_int, seed_int = as_int(n), as_int(seed)
    if n_int is None or not 1 <= n_int <= MAX_IMAGES:
        raise UserError(f"-n {n!r}: expected a number of images in [1, {MAX_IMAGES}]")
    if seed_int is None or not 0 <= seed_int <= MAX_SEED:
        raise UserError(f"--seed {seed!r}: expected an integer in [0, 2**63 - 1]")
    if labels is None:
        return n_int, seed_int, None
    ids = [as_int(x) for x in labels]
    if None in ids or any(i < 0 for i in ids):  # type: ignore[operator]
        raise UserError(f"--labels {list(labels)[:8]!r}: expected class ids, integers >= 0")
    if len(ids) != n_int:
        raise UserError(f"--labels: got {len(ids)} class ids for -n {n_int}; pass one per image")
    return n_int, seed_int, ids  # type: ignore[return-value]


def _check_out(out: Path) -> Path:
    """--out must name a .png file we can create: not a directory, and inside a directory we can make and write.

    Checked without creating anything: the directories are made only once the grid is ready to be written."""
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a directory; name a .png file, e.g. {str(out / 'grid.png')!r}")
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {str(out)!r}: expected a .png path")
    if out.exists() and not out.is_file():
        raise UserError(f"--out {str(out)!r} exists and is not a regular file; choose another path")
    # Exists already, so this only proves it is a writable directory (a probe file, removed at once).
    ensure_writable_dir(nearest_existing(out.absolute().parent), "--out directory")
    return out
