"""The MLflow pyfunc model of each task kind: a package is logged as a generator model
(gan_core.serving.generator_model) or a translator model (gan_core.serving.translator_model), by its kind.

    info = log_package_model("outputs/train/generator", run_id=run_id, name="generator")   # either kind
    info.model_uri                                                                          # models:/m-...

A new task kind adds its pyfunc module and one entry in MLFLOW_MODELS.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mlflow.models.model import ModelInfo

from gan_core.config.catalogue import GENERATION, TRANSLATION
from gan_core.packaging import package_task
from gan_core.serving.generator_model import log_generator
from gan_core.serving.translator_model import log_translator

MLFLOW_MODELS: dict[str, Callable[[str | Path, str, str], ModelInfo]] = {
    GENERATION: log_generator,
    TRANSLATION: log_translator,
}
"""log(package_dir, run_id, name): the package as that run's pyfunc model, per task kind."""


def log_package_model(package_dir: str | Path, run_id: str, name: str) -> ModelInfo:
    """Log the package in `package_dir` (either kind) as run `run_id`'s pyfunc model named `name`."""
    return MLFLOW_MODELS[package_task(package_dir)](package_dir, run_id, name)
