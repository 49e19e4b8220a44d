"""A package saved as a local MLflow pyfunc model directory (no tracking store), exactly as
gan_core.serving.mlflow_models.log_package_model logs it: for tests that load or serve a model without a run."""

from __future__ import annotations

from pathlib import Path

import mlflow

from gan_core.config.catalogue import GENERATION, TRANSLATION
from gan_core.packaging import package_task
from gan_core.serving import generator_model, translator_model

MODULES = {GENERATION: generator_model, TRANSLATION: translator_model}


def save_pyfunc(package_dir: str | Path, path: str | Path) -> Path:
    """The package at `package_dir` (either kind) as a pyfunc model directory at `path`."""
    module = MODULES[package_task(package_dir)]
    mlflow.pyfunc.save_model(path=str(path), **module.model_arguments(package_dir))
    return Path(path)
