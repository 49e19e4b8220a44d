"""Translate image files with a translator package: the consumer's one-liner, behind `ganops translate`.

    translate_files("models:/ganops-translator@champion", "photos/", "out/")            # A → B, one PNG per input
    translate_files("outputs/train/generator", "digit.png", "out/", direction="b2a")

What the caller chose (direction, --input, --out, --device) is checked before the model is fetched or loaded, and
every input is read before anything is written: a bad file fails with one line naming it and writes nothing.
Each output is `<out>/<input stem>.png`, written atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gan_core.atomic import atomic_file
from gan_core.device import pick_device
from gan_core.errors import UserError
from gan_core.packaging.translator import DIRECTIONS, load_translator, read_image, translate_images
from gan_core.preflight import ensure_free_space, ensure_writable_dir, nearest_existing

INPUT_SUFFIXES = (".png", ".jpg", ".jpeg")
"""The files of an --input directory that are translated (by name; their content is checked when read)."""


def check_translate_args(inputs: str | Path, out: str | Path, direction: str) -> tuple[list[Path], Path]:
    """The input files (sorted) and the output directory, checked without loading a model or creating anything."""
    if direction not in DIRECTIONS:
        raise UserError(f"--direction {direction!r}: expected a2b (domain A → B) or b2a")
    inputs, out = Path(inputs), Path(out)
    if not inputs.exists():
        raise UserError(f"--input {str(inputs)!r} does not exist; expected a PNG/JPEG file or a directory of them")
    if inputs.is_dir():
        files = sorted(p for p in inputs.iterdir() if p.suffix.lower() in INPUT_SUFFIXES and p.is_file())
        if not files:
            raise UserError(f"--input {str(inputs)!r}: no .png/.jpg/.jpeg files in this directory (subdirectories "
                            "are not searched)")
    elif inputs.is_file():
        files = [inputs]
    else:
        raise UserError(f"--input {str(inputs)!r} is not a regular file or a directory")
    stems: dict[str, Path] = {}
    for path in files:
        other = stems.setdefault(path.stem, path)
        if other != path:
            raise UserError(f"--input: {other.name} and {path.name} would both be written as {path.stem}.png; "
                            "rename one of them")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} exists and is not a directory; name a directory for the PNGs")
    if inputs.is_dir() and out.exists() and out.resolve() == inputs.resolve():
        raise UserError(f"--out {str(out)!r} is the input directory: the translations would replace the inputs; "
                        "choose another directory")
    # Exists already, so this only proves it is a writable directory (a probe file, removed at once).
    ensure_writable_dir(nearest_existing(out), "--out directory")
    return files, out


def translate_files(
    source: str | Path,
    inputs: str | Path,
    out: str | Path,
    direction: str = "a2b",
    device: str = "auto",
) -> list[Path]:
    """Translate a PNG/JPEG file, or every PNG/JPEG of a directory (not recursive, sorted by name), with the
    translator at `source` (package dir or models:/ URI); write `<out>/<stem>.png` for each. The written paths."""
    files, out = check_translate_args(inputs, out, direction)
    target = pick_device(device, key="--device", auto_mps=False)
    translator = load_translator(source, direction=direction, device=target)
    shape = tuple(translator.image_shape)
    images = torch.stack([read_image(path, shape, name=str(path)) for path in files])  # all read before writing
    translated = translate_images(translator, images)
    ensure_free_space(out, 2 * translated.numel() + 2**16 * len(files), "translated images")
    ensure_writable_dir(out, "--out directory")
    written = []
    for path, image in zip(files, translated, strict=True):
        target_path = out / f"{path.stem}.png"
        with atomic_file(target_path) as tmp:
            _save_png(image, tmp)
        written.append(target_path)
    return written


def _save_png(image: torch.Tensor, path: Path) -> None:
    """uint8 (C, H, W) → a PNG file (mode L for one channel, RGB for three)."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path, format="PNG")
