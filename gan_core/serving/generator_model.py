"""The generator package as an MLflow pyfunc model: safetensors + JSON inside, nothing pickled.

    info = log_generator("outputs/train/generator", run_id=run_id)       # "models from code"
    model = mlflow.pyfunc.load_model("models:/ganops-generator@champion")
    out = model.predict(pd.DataFrame([{"n": 4, "seed": 0, "labels": [0, 1, 2, 3]}]))

The model is logged "from code" (`python_model` is the path of gan_core/serving/generator_entry.py), so MLflow stores
that file's source instead of a cloudpickle; loading runs it, which imports the installed `gan_core` and
rebuilds the network from the package with `gan_core.packaging.generator.load_generator`.

Input: one row per request, columns (checked by ganops; anything else is a 400 naming the row and value)
    n       int            number of images, 1..MAX_SAMPLES (and at most MAX_SAMPLES over all rows of a call)
    seed    int, optional  noise seed in [0, 2**63 - 1] (default 0): the same seed gives the same images
    labels  list[int], opt one class per image for conditional generators; omitted, null or [] = classes cycled
    truncation_psi  float, optional  in [0, 1] (default 1 = off): the truncation trick, style-based generators only
Integers only: 1.5, "2", true are refused, not rounded. The signature declares no input schema on purpose:
MLflow's scoring server casts JSON to a declared schema before the model sees it (1.5 → 1) and drops unknown
columns (a typo such as "seeds" would be ignored), so the model checks the raw request itself.
Output: one row per image, columns
    request     int        index of the input row it answers
    index       int        position within that request
    label       int        class it was conditioned on, -1 for unconditional generators
    shape       list[int]  [C, H, W]
    png_base64  str        the image as a base64 PNG (8-bit grayscale or RGB)
Through `mlflow models serve`, POST /invocations with {"dataframe_records": [{"n": 4, "seed": 0}]} answers
{"predictions": [{"request": 0, "index": 0, "label": -1, "shape": [1, 32, 32], "png_base64": "iVBOR..."}, ...]};
a bad request answers 400 {"error_code": "INVALID_PARAMETER_VALUE", "message": "request 0: n=1.5; expected ..."}.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import Array, ColSpec, Schema

from gan_core.device import pick_device
from gan_core.errors import UserError
from gan_core.packaging.generator import MAX_SEED, as_int, find_package, load_generator, sample_images, truncation_value
from gan_core.serving.requests import BadRequest, checked_rows

PACKAGE_ARTIFACT = "generator"
"""Key of the package directory in the pyfunc model's artifacts (the model dir holds artifacts/<package>/)."""
MAX_SAMPLES = 1024
"""Most images one call may ask for, in one row or over all rows (a larger request is a 400 from the server)."""
INPUT_COLUMNS = ("n", "seed", "labels", "truncation_psi")
ENTRY_FILE = Path(__file__).with_name("generator_entry.py")
OUTPUT_COLUMNS = ["request", "index", "label", "shape", "png_base64"]

SIGNATURE = ModelSignature(
    inputs=None,  # see the module docstring: an input schema would make MLflow cast 1.5 to 1 before predict
    outputs=Schema(
        [
            ColSpec("long", "request"),
            ColSpec("long", "index"),
            ColSpec("long", "label"),
            ColSpec(Array("long"), "shape"),
            ColSpec("string", "png_base64"),
        ]
    ),
)
INPUT_EXAMPLE = pd.DataFrame([{"n": 2, "seed": 0}])

CODE_PATHS = [str(Path(__file__).resolve().parents[1])]
"""The gan_core package, logged with every model (MLflow's `code_paths`: copied into the model's code/ folder and put
on sys.path when it loads): the entry file imports gan_core, which is not on PyPI, so the model carries the code
that reads its package. A process that imported gan_core already (ganops itself) keeps its own."""
# The serving environment's needs, listed so MLflow does not infer them (inference loads the model in a
# subprocess, seconds): what gan_core's serving path imports, so `--env-manager virtualenv` builds a working env.
PIP_REQUIREMENTS = [
    f"mlflow=={mlflow.__version__}",
    f"torch=={torch.__version__.split('+')[0]}",
    "safetensors>=0.4",
    "numpy>=1.26",
    "pandas",
    "pillow>=10",
    "pydantic>=2.7,<3",
    "pyyaml>=6",
]


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: loads the package from the model's artifacts, answers sampling requests with PNGs."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        # GPU first: GANOPS_DEVICE picks explicitly (e.g. cpu on a shared GPU host).
        device = pick_device(os.environ.get("GANOPS_DEVICE") or "auto", key="GANOPS_DEVICE", auto_mps=False)
        self.generator = load_generator(find_package(context.artifacts[PACKAGE_ARTIFACT]), device=device)

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        """One output row per generated image (see the module docstring for the columns)."""
        records: list[dict[str, Any]] = []
        for r, (n, seed, labels, psi) in enumerate(parse_requests(model_input)):
            try:
                images = sample_images(self.generator, n, seed=seed, labels=labels, truncation_psi=psi)
            except UserError as e:
                raise BadRequest(f"request {r}: {e}") from None
            for i, img in enumerate(images):
                label = int(labels[i]) if labels is not None else _cycled_label(self.generator, i)
                records.append(
                    {"request": r, "index": i, "label": label, "shape": list(img.shape), "png_base64": encode_png(img)}
                )
        return pd.DataFrame.from_records(records, columns=OUTPUT_COLUMNS)


def _cycled_label(generator: torch.nn.Module, i: int) -> int:
    num_classes = int(getattr(generator, "num_classes", 0))
    return i % num_classes if num_classes else -1


Request = tuple[int, int, list[int] | None, float]
"""(n, seed, labels, truncation_psi) of one input row."""


def parse_requests(model_input: pd.DataFrame | Mapping[str, Any]) -> list[Request]:
    """(n, seed, labels, truncation_psi) per input row; a bad row raises BadRequest (HTTP 400 through the server).

    Values arrive as JSON gave them: Python/NumPy ints, floats (pandas turns an integer column with a missing
    cell into floats, so whole floats count as integers), strings, bools, lists, None/NaN for a missing cell."""
    rows = checked_rows(model_input, "n", INPUT_COLUMNS, "a request has n, and optionally seed, labels and "
                        "truncation_psi", "each request needs `n`, the number of images")
    out = [_parse_row(r, row) for r, row in enumerate(rows)]
    total = sum(request[0] for request in out)
    if total > MAX_SAMPLES:
        raise BadRequest(f"{len(out)} requests ask for {total} images in all; at most {MAX_SAMPLES} per call")
    return out


def _parse_row(r: int, row: dict[str, Any]) -> Request:
    n = as_int(row["n"])
    if n is None or not 1 <= n <= MAX_SAMPLES:
        raise BadRequest(f"request {r}: n={shown(row['n'])}; expected an integer in [1, {MAX_SAMPLES}]")
    seed = 0 if is_missing(row.get("seed")) else as_int(row["seed"])
    if seed is None or not 0 <= seed <= MAX_SEED:
        raise BadRequest(f"request {r}: seed={shown(row['seed'])}; expected an integer in [0, 2**63 - 1]")
    raw_psi = row.get("truncation_psi")
    try:
        psi = 1.0 if is_missing(raw_psi) else truncation_value(raw_psi.item() if isinstance(raw_psi, np.generic)
                                                              else raw_psi)
    except UserError:
        raise BadRequest(f"request {r}: truncation_psi={shown(raw_psi)}; expected a number in [0, 1] "
                         "(1 = no truncation)") from None
    labels = row.get("labels")
    if is_missing(labels) or (isinstance(labels, list | tuple | np.ndarray) and len(labels) == 0):
        return n, seed, None, psi
    ids = [as_int(x) for x in labels] if isinstance(labels, list | tuple | np.ndarray) else [None]
    if len(ids) != n or None in ids:
        raise BadRequest(f"request {r}: labels={shown(labels)}; expected {n} integer class ids, one per image")
    return n, seed, ids, psi  # type: ignore[return-value]


def is_missing(value: Any) -> bool:
    """A cell the client left out: None, or the NaN pandas puts in a column that other rows fill."""
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def shown(value: Any) -> str:
    """A value for an error message, cut short: a request may carry a 10,000-element list."""
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def encode_png(image: torch.Tensor) -> str:
    """uint8 (C, H, W) → base64 PNG (mode L for one channel, RGB for three)."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()  # (H, W, C)
    pil = Image.fromarray(array[:, :, 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array, mode="RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_predictions(predictions: pd.DataFrame | Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """The inverse of `predict` for clients: rows (DataFrame or the server's JSON records) → uint8 (N, C, H, W)."""
    from PIL import Image

    rows = predictions.to_dict(orient="records") if isinstance(predictions, pd.DataFrame) else list(predictions)
    images = []
    for row in rows:
        with Image.open(io.BytesIO(base64.b64decode(row["png_base64"]))) as pil:
            array = np.asarray(pil)
        array = array[:, :, None] if array.ndim == 2 else array  # (H, W, C)
        images.append(torch.from_numpy(array.copy()).permute(2, 0, 1))
        if list(images[-1].shape) != list(row["shape"]):
            raise ValueError(f"decoded image has shape {list(images[-1].shape)}, row says {row['shape']}")
    return torch.stack(images)


def model_arguments(package_dir: str | Path) -> dict[str, Any]:
    """What MLflow's pyfunc log_model / save_model take for this package: code entry file, package artifact,
    signature, input example, pinned requirements."""
    return {
        "python_model": str(ENTRY_FILE),
        "artifacts": {PACKAGE_ARTIFACT: str(find_package(package_dir))},
        "signature": SIGNATURE,
        "input_example": INPUT_EXAMPLE,
        "pip_requirements": PIP_REQUIREMENTS,
        "code_paths": CODE_PATHS,
    }


def log_generator(package_dir: str | Path, run_id: str, name: str = "generator") -> ModelInfo:
    """Log a generator package as a pyfunc model of `run_id` (signature, input example, pinned requirements).

    MLflow loads the logged model once and predicts the input example to validate it, so a package that cannot
    be served fails here, at logging time.
    """
    return log_pyfunc(model_arguments(package_dir), run_id, name)


def log_pyfunc(arguments: dict[str, Any], run_id: str, name: str) -> ModelInfo:
    """Log a "models from code" pyfunc model (its `arguments`: code file, artifacts, signature, example,
    requirements) to run `run_id`; the generator and translator models both go through here."""
    return mlflow.models.Model.log(
        artifact_path=None,  # deprecated in MLflow 3; `name` replaces it
        name=name,
        flavor=mlflow.pyfunc,
        run_id=run_id,
        **arguments,
    )

