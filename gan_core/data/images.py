"""One image file → one fitted uint8 array: strict PNG/JPEG decoding (damaged files raise, other formats are never
decoded) and fitting (centre-crop to a square, PIL bicubic resize, L or RGB; transparency composited onto black)."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from gan_core.config import DataConfig

if TYPE_CHECKING:
    pass


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


IMAGE_FORMATS = ("PNG", "JPEG")
"""What Pillow may decode a folder's files as (by content): its other, less-hardened plugins are never run."""


FIT_VERSION = "centre-crop to square, PIL bicubic, L or RGB/1"
"""Names what fit_image (and the decoding before it) does to pixels. Incremental prepare reuses a fitted image only
when this, data.resolution and data.channels are what made it: change the string whenever the pixels change."""


def fit_image(image: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """Any PIL image → uint8 (C, resolution, resolution): centre-crop to a square, resize, convert the mode."""
    image = to_l_or_rgb(image)
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


def to_l_or_rgb(image: Image.Image) -> Image.Image:
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


@contextmanager
def strict_decoding() -> Iterator[None]:
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


def read_image(path: Path, cfg: DataConfig) -> np.ndarray:
    """Decode one PNG/JPEG file fully and strictly (any other format is refused, whatever its name), then fit it."""
    return decode_image(path.read_bytes(), cfg)


def decode_image(data: bytes, cfg: DataConfig) -> np.ndarray:
    """decode_image(the bytes of a PNG/JPEG file): strict decoding, then fit_image to cfg's resolution and channels."""
    with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as probe:
        probe.verify()  # PNG: every chunk's checksum and the end marker, which load() does not check
    with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
        image.load()
        if image.format == "PNG":
            _check_png_pixel_data(io.BytesIO(data))
        return fit_image(image, cfg.resolution, cfg.channels)


_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type → samples per pixel


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
"""The 7 interlace passes: (first column, first row, column step, row step)."""


def _check_png_pixel_data(f: io.BytesIO) -> None:
    """Raise when a PNG's compressed pixel stream inflates to fewer bytes than its header promises.

    A stream that is well-formed but short (rows missing) passes Pillow's load() silently, the missing rows black."""
    with f:
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


def failure_reason(error: BaseException) -> str:
    """One deterministic line for meta.json (no absolute paths or object addresses)."""
    if isinstance(error, UnidentifiedImageError):
        return "UnidentifiedImageError: not a PNG or JPEG image"
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
