"""The translator package (cyclegan): `weights.safetensors` + `translator.json`. Loading never unpickles.

    G_AB = load_translator("outputs/train/generator")                          # a package directory, A → B
    G_BA = load_translator("models:/ganops-translator@champion", direction="b2a")
    out = translate_images(G_AB, images)      # uint8 (N, C, H, W) in → uint8 (N, C, H, W) of the other domain

translator.json holds what is needed to rebuild the networks and say what they map:
    {"format": "ganops-translator/1", "arch": "cyclegan", "kwargs": {...}, "image_shape": [1, 32, 32],
     "directions": {"a2b": {"from": "a", "to": "b"}, "b2a": {...}},
     "domains": {"a": {"source": "digits", "classes": [...]}, "b": {...}},
     "normalization": "tanh", "metadata": {...}}
The weights hold both directions (a2b.*, b2a.*). `load_translator` returns one direction: an eval-mode module mapping
(B, C, H, W) images in [-1, 1] to the other domain, with `.direction`, `.image_shape` and `.spec`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from torch import nn

from gan_core.config.catalogue import TASKS, TRANSLATION
from gan_core.errors import UserError, first_line
from gan_core.packaging.generator import (
    REDO,
    build_checked,
    local_package,
    read_checked_spec,
    to_uint8,
    write_package,
)

FORMAT = "ganops-translator/1"
SPEC_FILE = TASKS[TRANSLATION].spec_file  # translator.json
DIRECTIONS = ("a2b", "b2a")
GRID_TRANSLATIONS = 8
"""Rows of a translator's sample grid: training's and evaluation's show this many images of each domain."""
MAX_IMAGE_PIXELS = 4096 * 4096
"""Largest image `read_image` decodes (before fitting it to the translator's side): a bigger one is refused."""


class _Domain(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    source: StrictStr
    classes: list[StrictStr] | None = None


class _Spec(BaseModel):
    """translator.json's structure. Strict, as generator.json's."""

    model_config = ConfigDict(strict=True, extra="allow")

    format: Literal["ganops-translator/1"]
    arch: StrictStr
    kwargs: dict[str, StrictInt | StrictFloat | StrictBool | StrictStr | None]
    image_shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=3, max_length=3)]
    domains: dict[Literal["a", "b"], _Domain]
    normalization: Literal["tanh"] = "tanh"
    metadata: dict[str, Any] = {}


def save_translator(translator: nn.Module, spec: dict[str, Any], out_dir: str | Path) -> Path:
    """Write the package atomically (temp dir beside `out_dir`, then rename). `spec` holds arch, kwargs,
    image_shape and domains; format and directions are added here."""
    out = Path(out_dir)
    missing = {"arch", "kwargs", "image_shape", "domains"} - spec.keys()
    if missing:
        raise ValueError(f"translator spec lacks {sorted(missing)}")
    directions = {d: {"from": d[0], "to": d[2]} for d in DIRECTIONS}
    full = {"format": FORMAT, "normalization": "tanh", "metadata": {}, "directions": directions, **spec}
    return write_package(translator, SPEC_FILE, full, out)


def read_translator_spec(package_dir: str | Path) -> dict[str, Any]:
    """translator.json, checked: JSON object, known format, field types, kwargs that agree with image_shape."""
    path = Path(package_dir) / SPEC_FILE
    raw, spec = read_checked_spec(path, FORMAT, _Spec)
    for key, value in (("channels", spec.image_shape[0]), ("resolution", spec.image_shape[1])):
        if spec.kwargs.get(key, value) != value:
            raise UserError(f"{path}: kwargs.{key}={spec.kwargs[key]!r} disagrees with image_shape; the file was "
                            f"edited: restore it or {REDO}")
    return raw


def load_translator(source: str | Path, direction: str = "a2b", device: str | torch.device = "cpu") -> nn.Module:
    """One direction of a translator (a package directory or `models:/<name>@<alias>`), eval mode on `device`:
    a module mapping (B, C, H, W) in [-1, 1] to the other domain. `direction`: a2b (A → B) or b2a."""
    from gan_core.device import pick_device
    from gan_core.models import build_generator

    if direction not in DIRECTIONS:
        raise UserError(f"direction={direction!r}: expected a2b (domain A → B) or b2a")
    target = pick_device(str(device), key="device")
    package_dir = local_package(source, TASKS[TRANSLATION].package)
    spec = read_translator_spec(package_dir)
    pair = build_checked(package_dir, SPEC_FILE, spec["arch"], spec["kwargs"], build_generator)
    translator = pair.direction(direction)
    translator.direction = direction  # type: ignore[assignment]
    translator.image_shape = tuple(spec["image_shape"])  # type: ignore[assignment]
    translator.spec = spec  # type: ignore[assignment]
    return translator.to(target).eval()


@torch.no_grad()
def translate_images(translator: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """uint8 (N, C, H, W) of the source domain, at the translator's image shape → uint8 (N, C, H, W), on the CPU."""
    shape = tuple(getattr(translator, "image_shape", images.shape[1:]))
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != shape:
        raise UserError(f"images of {images.dtype} {list(images.shape)}: this translator takes uint8 "
                        f"(N, {', '.join(str(s) for s in shape)})")
    device = next(translator.parameters()).device
    out = [to_uint8(translator(chunk.to(device).float().div(127.5).sub(1.0)).float()).cpu()
           for chunk in images.split(batch_size)]
    return torch.cat(out)


def read_image(path_or_bytes: str | Path | bytes, image_shape: tuple[int, ...], name: str = "") -> torch.Tensor:
    """A PNG/JPEG (a file or its bytes) fitted to `image_shape` (C, H, W) as prepare fits training images:
    centre-crop, bicubic resize. uint8 (C, H, W); a UserError naming `name` for anything else.

    Its channels must be the translator's: a colour image for a grayscale translator is refused, not silently
    converted (an RGB file whose three channels are equal counts as grayscale; alpha is composited onto black)."""
    import io

    import numpy as np

    from gan_core.data.images import IMAGE_FORMATS, fit_image, strict_decoding, to_l_or_rgb

    label = name or str(path_or_bytes)
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    try:
        with strict_decoding(), Image.open(source, formats=IMAGE_FORMATS) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise UserError(f"{label}: {image.width}x{image.height} pixels is too large; at most "
                                f"{MAX_IMAGE_PIXELS:,} pixels")
            image.load()
            image = to_l_or_rgb(image)
            if image.mode == "RGB" and image_shape[0] == 1:
                rgb = np.asarray(image)
                if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
                    raise UserError(f"{label}: a colour (RGB) image; this translator takes 1-channel (grayscale) "
                                    "images")
            if image.mode == "L" and image_shape[0] == 3:
                raise UserError(f"{label}: a 1-channel (grayscale) image; this translator takes RGB images")
            array = fit_image(image, int(image_shape[1]), int(image_shape[0]))
    except UserError:
        raise
    except UnidentifiedImageError:
        raise UserError(f"{label}: not a PNG or JPEG image") from None
    except Exception as e:  # Pillow raises many types on damaged input: the file's problem
        raise UserError(f"{label}: unreadable image ({type(e).__name__}: {first_line(e)})") from None
    return torch.from_numpy(array.copy())
