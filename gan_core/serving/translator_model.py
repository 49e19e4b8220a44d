"""The translator package (cyclegan) as an MLflow pyfunc model: safetensors + JSON inside, nothing pickled.

    info = log_translator("outputs/train/generator", run_id=run_id)       # "models from code"
    model = mlflow.pyfunc.load_model("models:/ganops-translator@champion")
    out = model.predict(pd.DataFrame([{"image": png_base64, "direction": "b2a"}]))
    images = decode_translations(out)                                     # uint8 (N, C, H, W)

As the generator's model (gan_core.serving.generator_model), it is logged "from code": `python_model` is the path of
gan_core/serving/translator_entry.py, whose source MLflow stores instead of a cloudpickle; loading runs it, which
imports the installed `gan_core` and rebuilds both directions from the package with `load_translator`.

Input: one row per request (at most MAX_REQUESTS per call), columns (checked by ganops; anything else is a 400
naming the row)
    image      str            the source-domain image as a base64 PNG or JPEG (at most MAX_BASE64_CHARS characters,
                              MAX_IMAGE_PIXELS pixels), with the translator's channels (a colour image for a
                              grayscale translator is refused); it is centre-cropped and resized to its side
    direction  str, optional  a2b (default; domain A → B) or b2a
The signature declares no input schema on purpose: MLflow's scoring server enforces a declared schema before the
model sees the request and drops unknown columns (a typo such as "dirction" would silently translate a2b), and its
type errors do not name the row; so the model checks the raw request itself. The input example shows the shape.
Output: one row per request, columns
    request     int        index of the input row it answers
    direction   str        a2b or b2a
    shape       list[int]  [C, H, W] of the translated image
    png_base64  str        the translated image as a base64 PNG (8-bit grayscale or RGB)
Through `mlflow models serve`, POST /invocations with {"dataframe_records": [{"image": "iVBOR...", "direction":
"b2a"}]} answers {"predictions": [{"request": 0, "direction": "b2a", "shape": [1, 32, 32], "png_base64": "iVBOR..."}]};
a bad request answers 400 {"error_code": "INVALID_PARAMETER_VALUE", "message": "request 0: image: not a PNG ..."}.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import Array, ColSpec, Schema

from gan_core.device import pick_device
from gan_core.errors import UserError
from gan_core.packaging.generator import find_package
from gan_core.packaging.translator import (
    DIRECTIONS,
    MAX_IMAGE_PIXELS,
    load_translator,
    read_image,
    read_translator_spec,
)
from gan_core.serving.generator_model import (
    CODE_PATHS,
    PIP_REQUIREMENTS,
    decode_predictions,
    encode_png,
    is_missing,
    log_pyfunc,
    shown,
)
from gan_core.serving.requests import BadRequest, checked_rows

__all__ = ["BadRequest", "MAX_BASE64_CHARS", "MAX_IMAGE_PIXELS", "MAX_REQUESTS", "TranslatorModel",
           "decode_translations", "log_translator", "model_arguments", "parse_translation_requests"]

PACKAGE_ARTIFACT = "translator"
"""Key of the package directory in the pyfunc model's artifacts (the model dir holds artifacts/<package>/)."""
MAX_REQUESTS = 256
"""Most rows (images) one call may carry; a larger request is a 400 from the server."""
MAX_BASE64_CHARS = 8 << 20
"""Longest base64 `image` string (8 MiB, about 6 MiB of PNG/JPEG), refused before it is decoded."""
INPUT_COLUMNS = ("image", "direction")
OUTPUT_COLUMNS = ["request", "direction", "shape", "png_base64"]
ENTRY_FILE = Path(__file__).with_name("translator_entry.py")

SIGNATURE = ModelSignature(
    inputs=None,  # see the module docstring: a declared schema would drop unknown columns before predict
    outputs=Schema(
        [
            ColSpec("long", "request"),
            ColSpec("string", "direction"),
            ColSpec(Array("long"), "shape"),
            ColSpec("string", "png_base64"),
        ]
    ),
)


class TranslatorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: loads both directions of the package from the model's artifacts, answers with PNGs."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        # GPU first: GANOPS_DEVICE picks explicitly (e.g. cpu on a shared GPU host).
        device = pick_device(os.environ.get("GANOPS_DEVICE") or "auto", key="GANOPS_DEVICE", auto_mps=False)
        package = find_package(context.artifacts[PACKAGE_ARTIFACT], "translator")
        self.translators = {d: load_translator(package, direction=d, device=device) for d in DIRECTIONS}
        self.image_shape = tuple(self.translators[DIRECTIONS[0]].image_shape)

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        """One output row per request (see the module docstring for the columns)."""
        from gan_core.packaging.translator import translate_images

        requests = parse_translation_requests(model_input, self.image_shape)
        out: dict[int, torch.Tensor] = {}
        for direction in DIRECTIONS:  # one batch per direction
            rows = [r for r, (d, _) in enumerate(requests) if d == direction]
            if rows:
                images = translate_images(self.translators[direction], torch.stack([requests[r][1] for r in rows]))
                out.update(zip(rows, images, strict=True))
        records = [
            {"request": r, "direction": d, "shape": list(out[r].shape), "png_base64": encode_png(out[r])}
            for r, (d, _) in enumerate(requests)
        ]
        return pd.DataFrame.from_records(records, columns=OUTPUT_COLUMNS)


TranslationRequest = tuple[str, torch.Tensor]
"""(direction, uint8 (C, H, W) image fitted to the translator's shape) of one input row."""


def parse_translation_requests(
    model_input: pd.DataFrame | Mapping[str, Any], image_shape: Sequence[int]
) -> list[TranslationRequest]:
    """(direction, image) per input row; a bad row raises BadRequest (HTTP 400 through the server) naming it."""
    rows = checked_rows(model_input, "image", INPUT_COLUMNS, "a request has image (a base64 PNG/JPEG) and "
                        "optionally direction (a2b or b2a)", "each request needs `image`, a base64 PNG or JPEG")
    if len(rows) > MAX_REQUESTS:
        raise BadRequest(f"{len(rows)} requests in one call; at most {MAX_REQUESTS} images per call")
    return [_parse_row(r, row, tuple(image_shape)) for r, row in enumerate(rows)]


def _parse_row(r: int, row: dict[str, Any], image_shape: tuple[int, ...]) -> TranslationRequest:
    direction = row.get("direction")
    if is_missing(direction):
        direction = DIRECTIONS[0]
    elif not isinstance(direction, str) or direction not in DIRECTIONS:
        raise BadRequest(f"request {r}: direction={shown(direction)}; expected a2b (domain A → B) or b2a")
    text = row.get("image")
    if is_missing(text):
        raise BadRequest(f"request {r}: no image; each request needs `image`, a base64 PNG or JPEG")
    if not isinstance(text, str):
        raise BadRequest(f"request {r}: image={shown(text)}; expected a base64 PNG or JPEG string")
    if len(text) > MAX_BASE64_CHARS:
        raise BadRequest(f"request {r}: image is {len(text):,} base64 characters; at most {MAX_BASE64_CHARS:,} "
                         f"(about {MAX_BASE64_CHARS * 3 // 4 >> 20} MiB of PNG/JPEG)")
    compact = "".join(text.split())  # line-wrapped base64 (`base64` wraps at 76 columns) is fine
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"request {r}: image is not valid base64 ({shown(text[:40])}); expected a base64 PNG or "
                         "JPEG") from None
    if not data:
        raise BadRequest(f"request {r}: image is empty; expected a base64 PNG or JPEG")
    try:
        image = read_image(data, image_shape, name=f"request {r}: image")
    except UserError as e:
        raise BadRequest(str(e)) from None
    return direction, image


def decode_translations(predictions: pd.DataFrame | Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """The inverse of `predict` for clients: rows (DataFrame or the server's JSON records) → uint8 (N, C, H, W)."""
    return decode_predictions(predictions)


def _input_example(package_dir: Path) -> pd.DataFrame:
    """One request: a blank image of the package's shape, as the base64 PNG a client sends."""
    shape = read_translator_spec(package_dir)["image_shape"]
    blank = torch.zeros(tuple(shape), dtype=torch.uint8)
    return pd.DataFrame([{"image": encode_png(blank), "direction": DIRECTIONS[0]}])


def model_arguments(package_dir: str | Path) -> dict[str, Any]:
    """What MLflow's pyfunc log_model / save_model take for this package: code entry file, package artifact,
    signature, input example, pinned requirements."""
    package = find_package(package_dir, "translator")
    return {
        "python_model": str(ENTRY_FILE),
        "artifacts": {PACKAGE_ARTIFACT: str(package)},
        "signature": SIGNATURE,
        "input_example": _input_example(package),
        "pip_requirements": PIP_REQUIREMENTS,
        "code_paths": CODE_PATHS,
    }


def log_translator(package_dir: str | Path, run_id: str, name: str = "translator") -> ModelInfo:
    """Log a translator package as a pyfunc model of `run_id` (signature, input example, pinned requirements).

    MLflow loads the logged model once and predicts the input example to validate it, so a package that cannot
    be served fails here, at logging time."""
    return log_pyfunc(model_arguments(package_dir), run_id, name)

