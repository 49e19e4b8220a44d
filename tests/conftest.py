"""Shared pytest fixtures. Each room adds its fixtures below its own banner; keep edits small and targeted."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _quiet_services() -> None:
    """No telemetry from the services the tests start (Prefect's ephemeral API, DVC)."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["DVC_NO_ANALYTICS"] = "1"


# ----------------------------------------------------------------------------- data (issue 2)
@pytest.fixture(scope="session")
def mnist_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mnist5k prepared at 32 px, 1 channel, 1,000 images (labelled 0-9, all classes present)."""
    from gan_core.config import DataConfig
    from gan_core.data import prepare

    out = tmp_path_factory.mktemp("mnist_prepared") / "prepared"
    prepare(DataConfig(source="mnist5k", resolution=32, channels=1, max_images=1000, prepared_dir=str(out)))
    return out


@pytest.fixture(scope="session")
def digits_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's 1,797 digits prepared at 16 px, 1 channel (labelled 0-9)."""
    from gan_core.config import DataConfig
    from gan_core.data import prepare

    out = tmp_path_factory.mktemp("digits_prepared") / "prepared"
    prepare(DataConfig(source="digits", resolution=16, channels=1, prepared_dir=str(out)))
    return out


# ----------------------------------------------------------------------------- mlflow store (issue 5)
@dataclass(frozen=True)
class MlflowStore:
    """A private, migrated SQLite MLflow store in a test's tmp_path (MLFLOW_TRACKING_URI points at it)."""

    uri: str
    db: Path
    artifacts: Path

    @property
    def overrides(self) -> list[str]:
        """Config overrides that point the registry section at this store."""
        return [f"registry.tracking_uri={self.uri}", f"registry.artifact_location={self.artifacts}"]


@pytest.fixture(scope="session")
def _mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store per session: creating it runs MLflow's Alembic migrations (seconds), copying does not."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.search_experiments()
    client.search_registered_models()
    return db


@pytest.fixture()
def mlflow_store(_mlflow_template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowStore]:
    """A fresh copy of the migrated store in tmp_path/mlruns, set as MLFLOW_TRACKING_URI for this test."""
    import mlflow

    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True)
    shutil.copyfile(_mlflow_template_db, db)
    store = MlflowStore(uri=f"sqlite:///{db}", db=db, artifacts=tmp_path / "mlruns" / "artifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    mlflow.set_tracking_uri(store.uri)
    yield store
    # MLflow keeps the URI in a module global (and exports it): forget it so no later test sees this store.
    mlflow.set_tracking_uri(None)


# ----------------------------------------------------------------------------- training (issue 3)
@pytest.fixture
def tiny_train_config(tmp_path: Path):
    """Factory: a Config for a few-step CPU training run on `prepared`, writing under tmp_path.

    `tiny_train_config(prepared, **{"model.arch": "mlp", "train.loss": "hinge"})`; defaults are g/d width 8,
    batch 8, 4 steps, device cpu. Built from the code's defaults, not ./params.yaml.
    """
    from gan_core.config import load_config

    empty = tmp_path / "empty_params.yaml"
    empty.write_text("{}\n")

    def make(prepared: Path, **overrides: object):
        base = {
            "data.prepared_dir": str(prepared),
            "model.g_width": 8,
            "model.d_width": 8,
            "model.latent_dim": 16,
            "train.batch_size": 8,
            "train.steps": 4,
            "train.log_every": 2,
            "train.sample_every": 4,
            "train.checkpoint_every": 4,
            "train.device": "cpu",
            "train.out_dir": str(tmp_path / "train"),
        }
        return load_config(empty, {**base, **overrides})

    return make


# ----------------------------------------------------------------------------- flows (issue 6)
@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API (SQLite in a temp dir) for the whole session: starting it takes ~20 s here,
    later flow runs about a second. Request it in any test that calls a flow."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def generator_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained, seeded) conditional DCGAN generator package: 16 px, 1 channel, 10 classes."""
    import torch

    from gan_core.models import build_generator
    from gan_core.package import save_generator

    kwargs = {"latent_dim": 8, "channels": 1, "resolution": 16, "width": 8, "num_classes": 10}
    torch.manual_seed(0)
    generator = build_generator("dcgan", **kwargs)
    spec = {"arch": "dcgan", "kwargs": kwargs, "latent_dim": 8, "image_shape": [1, 16, 16], "num_classes": 10,
            "class_names": [str(i) for i in range(10)]}
    return save_generator(generator, spec, tmp_path_factory.mktemp("generator_package") / "generator")


# ----------------------------------------------------------------------------- evaluation (issue 4)
@pytest.fixture(scope="session")
def mnist5k_full_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 5,000 mnist5k images at 32 px: the domain classifier needs them to reach 97% held-out accuracy."""
    from gan_core.config import DataConfig
    from gan_core.data import prepare

    out = tmp_path_factory.mktemp("mnist5k_full") / "prepared"
    prepare(DataConfig(source="mnist5k", resolution=32, channels=1, prepared_dir=str(out)))
    return out


@pytest.fixture(scope="session")
def lenet_classifier(mnist5k_full_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The domain classifier trained once per session on mnist5k_full_prepared (default settings): its info dict,
    with out_dir = its eval.classifier.out_dir (evaluations pointing there reuse it instead of retraining)."""
    from gan_core.classifier import train_classifier
    from gan_core.config import load_config

    out_dir = tmp_path_factory.mktemp("lenet_classifier")
    empty = out_dir / "empty_params.yaml"
    empty.write_text("{}\n")
    cfg = load_config(empty, {"data.prepared_dir": str(mnist5k_full_prepared),
                              "eval.classifier.out_dir": str(out_dir), "eval.device": "cpu"})
    return {**train_classifier(cfg), "out_dir": str(out_dir)}


@pytest.fixture
def eval_config(tmp_path: Path):
    """Factory: a Config evaluating against `prepared` on the CPU, every output path under tmp_path.

    `eval_config(prepared, classifier_dir, **{"eval.num_samples": 200})`; built from the code's defaults.
    """
    from gan_core.config import load_config

    empty = tmp_path / "empty_params.yaml"
    empty.write_text("{}\n")

    def make(prepared: Path, classifier_dir: str | Path | None = None, **overrides: object):
        base = {
            "data.prepared_dir": str(prepared),
            "train.out_dir": str(tmp_path / "train"),
            "eval.out_dir": str(tmp_path / "eval"),
            "eval.cache_dir": str(tmp_path / "cache"),
            "eval.classifier.out_dir": str(classifier_dir or tmp_path / "classifier"),
            "eval.device": "cpu",
            "eval.num_samples": 500,
            "eval.batch_size": 100,
        }
        return load_config(empty, {**base, **overrides})

    return make
