"""Shared pytest fixtures. Each room adds its fixtures below its own banner; keep edits small and targeted."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _quiet_services() -> None:
    """No telemetry from the services the tests start (Prefect's ephemeral API, DVC)."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["DVC_NO_ANALYTICS"] = "1"


@pytest.fixture
def one_cpu_thread() -> Iterator[None]:
    """One torch intra-op thread for the test (restored after): tiny tensors run faster that way, far faster
    when the 2 cores are shared with other processes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


# ----------------------------------------------------------------------------- the repo's own store
@pytest.fixture(scope="session", autouse=True)
def repo_store_untouched() -> Iterator[None]:
    """Tests use private stores: a test that wrote into the repo's MLflow store (./mlflow.db, where `make demo` and
    the user's runs are) fails the session here."""
    db = Path(__file__).resolve().parents[1] / "mlflow.db"

    def fingerprint() -> tuple[int, int] | None:
        return (db.stat().st_size, db.stat().st_mtime_ns) if db.exists() else None

    before = fingerprint()
    yield
    assert fingerprint() == before, f"a test wrote into the repo's MLflow store {db}: give it a private store"


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
    # MLflow gives the Default experiment (id 0) the artifact root ./mlruns of the working directory at creation:
    # create it from the temp dir, or models logged outside an experiment would land in the repo's mlruns/.
    cwd = os.getcwd()
    os.chdir(db.parent)
    try:
        client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
        client.search_experiments()
        client.search_registered_models()
    finally:
        os.chdir(cwd)
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


def tiny_retrain_params(root: Path, db_uri: str) -> dict:
    """A params.yaml tree for a seconds-long retrain under `root`: digits 16 px, MLP, 20 steps, 200 samples."""
    return {
        "data": {"source": "digits", "resolution": 16, "max_images": 400,
                 "prepared_dir": str(root / "data" / "prepared"), "raw_dir": str(root / "data" / "raw")},
        "model": {"arch": "mlp", "latent_dim": 16, "g_width": 32, "d_width": 32},
        "train": {"steps": 20, "batch_size": 16, "log_every": 10, "sample_every": 20, "checkpoint_every": 20,
                  "device": "cpu", "out_dir": str(root / "train")},
        "eval": {"num_samples": 200, "batch_size": 100, "kid_subset_size": 50, "device": "cpu",
                 "cache_dir": str(root / "cache"), "out_dir": str(root / "eval"),
                 # One epoch on 360 digits reaches ~0.5-0.9; the production 0.95 bar needs the full recipe.
                 "classifier": {"epochs": 1, "min_accuracy": 0.3, "resolution": 16,
                                "out_dir": str(root / "classifier")}},
        # 20 MLP steps draw blobs: thresholds loose enough that the first candidate becomes champion.
        "gate": {"thresholds": {"fid_lenet": {"max": 1.0e9}, "class_coverage": {"min": 0.0}}},
        "registry": {"tracking_uri": db_uri, "artifact_location": str(root / "mlruns" / "artifacts")},
    }


@dataclass(frozen=True)
class RetrainWorkspace:
    """A tmp dir with a tiny params.yaml (every path inside it) and its own migrated MLflow store."""

    root: Path
    params: Path
    db_uri: str

    @contextmanager
    def entered(self) -> Iterator[RetrainWorkspace]:
        """Run from the workspace, its store as MLFLOW_TRACKING_URI (tracking.tracking_uri prefers the env var,
        whatever the caller exported): for module-scoped fixtures, which cannot take `monkeypatch`."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", self.db_uri)
            mp.chdir(self.root)
            yield self

    def config(self, overrides: list[str] | None = None):
        from gan_core.config import load_config

        return load_config(self.params, overrides or [])

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.db_uri, registry_uri=self.db_uri)


@pytest.fixture(scope="session")
def retrain_workspace(_mlflow_template_db: Path):
    """Factory: `retrain_workspace(root)` → RetrainWorkspace under root (copy of the session's migrated store).

    Callers chdir to ws.root and point MLFLOW_TRACKING_URI at ws.db_uri (it wins over registry.tracking_uri)."""
    import subprocess

    import yaml

    def make(root: Path) -> RetrainWorkspace:
        # Its own git repo with one commit: run the flow from here (chdir) and the lineage's git_commit stays
        # fixed, whatever is committed to the project meanwhile.
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        subprocess.run(["git", "-C", str(root), "-c", "user.name=ganops-tests", "-c", "user.email=tests@ganops.invalid",
                        "commit", "-q", "--allow-empty", "-m", "workspace"], check=True)
        db = root / "mlruns" / "mlflow.db"
        db.parent.mkdir(parents=True)
        shutil.copyfile(_mlflow_template_db, db)
        params = root / "params.yaml"
        params.write_text(yaml.safe_dump(tiny_retrain_params(root, f"sqlite:///{db}"), sort_keys=False))
        return RetrainWorkspace(root, params, f"sqlite:///{db}")

    return make


# ----------------------------------------------------------------------------- generator package (issue 5)
@pytest.fixture(scope="session")
def generator_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained, seeded) conditional DCGAN generator package: 16 px, 1 channel, 10 classes."""
    import torch

    from gan_core.models import build_generator
    from gan_core.packaging.generator import save_generator

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
    from gan_core.config import load_config
    from gan_core.evaluation.classifier import train_classifier

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


# ----------------------------------------------------------------------------- translation (issue 13)


@pytest.fixture(scope="session")
def pair_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A translation dataset at 16 px, 1 channel: domain A = 300 scikit-learn digits, B = 300 mnist5k images
    (both labelled 0-9)."""
    from gan_core.config import DataConfig
    from gan_core.data import prepare

    out = tmp_path_factory.mktemp("pair_prepared") / "prepared"
    prepare(DataConfig(source="digits", target="mnist5k", resolution=16, channels=1, max_images=300,
                       prepared_dir=str(out)))
    return out


@pytest.fixture(scope="session")
def translator_package(pair_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real translator package (cyclegan trained 2 steps on pair_prepared; 16 px, 1 channel): directions a2b
    (digits → mnist5k) and b2a, loadable with gan_core.load_translator."""
    from translation import TRANSLATION_SETTINGS

    from gan_core.config import load_config
    from gan_core.training.loop import train

    root = tmp_path_factory.mktemp("translator_package")
    empty = root / "empty_params.yaml"
    empty.write_text("{}\n")
    cfg = load_config(empty, {**TRANSLATION_SETTINGS, "data.prepared_dir": str(pair_prepared), "train.steps": 2,
                              "train.device": "cpu",
                              "train.out_dir": str(root / "train")})
    return Path(train(cfg).package_dir)


# ----------------------------------------------------------------------------- label-free evaluation (issue 28)
@pytest.fixture(scope="session")
def simclr_encoder(mnist5k_full_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The label-free domain encoder trained once per session on mnist5k_full_prepared (default settings): its info
    dict, with out_dir = its eval.encoder.out_dir (evaluations pointing there reuse it)."""
    from gan_core.config import load_config
    from gan_core.evaluation.encoder import train_encoder

    out_dir = tmp_path_factory.mktemp("simclr_encoder")
    empty = out_dir / "empty_params.yaml"
    empty.write_text("{}\n")
    cfg = load_config(empty, {"data.prepared_dir": str(mnist5k_full_prepared), "eval.encoder.out_dir": str(out_dir),
                              "eval.device": "cpu"})
    return {**train_encoder(cfg), "out_dir": str(out_dir)}


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat folder of 600 synthetic RGB shape images at 32 px (tests/shapes.py: 12 modes, no labels)."""
    from shapes import write_shapes

    return write_shapes(tmp_path_factory.mktemp("shapes") / "shapes", count=600, size=32)
