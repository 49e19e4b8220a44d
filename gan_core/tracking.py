"""MLflow tracking for one training: params, lineage tags, step metrics, sample grids, evaluation, the model.

    with start_training_run(cfg) as run:                      # params, config hash, lineage tags, system metrics
        result = train(cfg, callbacks=[MLflowCallback(run.info.run_id)])
        log_evaluation(run.info.run_id, evaluate(cfg), metrics_json="outputs/eval/metrics.json")
        model_uri = log_generator_model(run.info.run_id, result["package_dir"])

Every function here takes the run id explicitly and logs through an `MlflowClient`, so the hooks work from
any thread (Prefect runs tasks in worker threads; MLflow's "active run" is thread-local).
The tracking URI is `MLFLOW_TRACKING_URI` when set, else `cfg.registry.tracking_uri`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from gan_core.callbacks import TrainCallback
from gan_core.config import Config, RegistryConfig
from gan_core.errors import UserError

SAMPLES_KEY = "samples"
"""`mlflow.log_image` key of the training sample grids: the UI's image panel steps through them."""
CONFIG_HASH_TAG = "config_hash"
MODEL_NAME = "generator"
"""Name of the logged pyfunc model inside its run."""

# MLflow's log_batch limits per request (mlflow/utils/validation.py): stay below them.
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000


# ----------------------------------------------------------------------------- store
def tracking_uri(registry: RegistryConfig) -> str:
    """`MLFLOW_TRACKING_URI` when set, else the configured URI; relative SQLite paths become absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or registry.tracking_uri
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        # sqlite:////abs/path keeps its leading slash after the prefix; relative paths resolve against cwd.
        db = db if db.is_absolute() else Path.cwd() / db
        # SQLite creates the file but not its directory.
        db.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{db}"
    if uri.startswith("file:") or "://" not in uri:
        raise UserError(
            f"tracking URI {uri!r} is a plain-file store, which MLflow 3.13+ refuses; "
            "use sqlite:///mlruns/mlflow.db or an http(s):// tracking server"
        )
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_location(registry: RegistryConfig) -> str:
    """The experiment's artifact root as a URI: local paths are resolved to absolute `file://` URIs."""
    loc = registry.artifact_location
    if "://" in loc:  # s3://, gs://, file:///..., mlflow-artifacts://
        return loc
    path = Path(loc).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    return path.as_uri()


def configure(registry: RegistryConfig) -> MlflowClient:
    """Point MLflow (fluent API and a client) at the configured store and return the client.

    Every entry point calls this, so a later `MLFLOW_TRACKING_URI` change is honoured.
    """
    uri = tracking_uri(registry)
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # MLflow also exports the URI to the environment; undo that, or the next configure() with another config
    # would read it back as the user's MLFLOW_TRACKING_URI.
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(registry: RegistryConfig, client: MlflowClient | None = None) -> str:
    """The id of the configured experiment, created (with its artifact location) when absent."""
    client = client or configure(registry)
    exp = client.get_experiment_by_name(registry.experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(registry.experiment, artifact_location=artifact_location(registry))
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and our create.
        exp = client.get_experiment_by_name(registry.experiment)
        if exp is None:
            raise
        return exp.experiment_id


# ----------------------------------------------------------------------------- runs
def training_tags(cfg: Config) -> dict[str, str]:
    """Lineage of a training: data version and source, git commit and dirty flag, config hash, device, torch."""
    from gan_core.lineage import lineage

    tags = {k: str(v) for k, v in lineage(cfg).items()}
    tags.setdefault(CONFIG_HASH_TAG, cfg.hash())
    return tags


@contextmanager
def start_training_run(
    cfg: Config, run_name: str | None = None, extra_tags: Mapping[str, str] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run for one training, with system metrics on; the run ends FAILED if the block raises.

    Logs on entry: every config key as a param (dotted names), the lineage tags, `config.yaml` as an artifact.
    """
    client = configure(cfg.registry)
    exp_id = experiment_id(cfg.registry, client)
    tags = {**training_tags(cfg), **(extra_tags or {})}
    with mlflow.start_run(
        experiment_id=exp_id, run_name=run_name, tags=tags, log_system_metrics=True
    ) as run:
        run_id = run.info.run_id
        params = [Param(k, _param_value(v)) for k, v in sorted(cfg.flat().items())]
        for i in range(0, len(params), _MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[i : i + _MAX_PARAMS_PER_BATCH], synchronous=True)
        client.log_text(run_id, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "config.yaml")
        yield run


def _param_value(v: Any) -> str:
    # Lists and None as JSON so `[lenet]` and `null` read the same as in params.yaml.
    return v if isinstance(v, str) else json.dumps(v)


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log numeric metrics at one step in batches (non-numeric values are skipped: they are not metrics)."""
    now = int(time.time() * 1000)
    batch = [
        Metric(k, float(v), now, step)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    for i in range(0, len(batch), _MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch[i : i + _MAX_METRICS_PER_BATCH], synchronous=True)


class MLflowCallback(TrainCallback):
    """Forwards the trainer's hooks to one MLflow run: step metrics, sample grids per step, the final result."""

    def __init__(self, run_id: str, client: MlflowClient | None = None) -> None:
        self.run_id = run_id
        self.client = client or MlflowClient(tracking_uri=mlflow.get_tracking_uri())

    def on_train_start(self, info: dict[str, Any]) -> None:
        # Scalar facts (device, parameter counts, resumed step) as tags so runs can be filtered by them.
        tags = [RunTag(f"train.{k}", str(v)) for k, v in info.items() if isinstance(v, str | int | float | bool)]
        if tags:
            self.client.log_batch(self.run_id, tags=tags, synchronous=True)
        self.client.log_dict(self.run_id, _jsonable(info), "train_start.json")

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        log_metrics(self.client, self.run_id, metrics, step=step)

    def on_samples(self, step: int, grid_png: Path) -> None:
        from PIL import Image

        with Image.open(grid_png) as img:
            img.load()
            # key + step: the UI's image panel shows the grids with a step slider.
            self.client.log_image(self.run_id, img, key=SAMPLES_KEY, step=step, synchronous=True)

    def on_train_end(self, result: dict[str, Any]) -> None:
        self.client.log_dict(self.run_id, _jsonable(result), "train_result.json")
        metrics_path = result.get("metrics_path")
        if metrics_path and Path(metrics_path).is_file():
            self.client.log_artifact(self.run_id, str(metrics_path), "train")


def log_evaluation(
    run_id: str,
    metrics: Mapping[str, Any],
    metrics_json: str | Path | None = None,
    samples_png: str | Path | None = None,
    client: MlflowClient | None = None,
) -> None:
    """Log evaluation metrics (NaN kept: a failed metric must stay visible) and their JSON and sample grid."""
    client = client or MlflowClient(tracking_uri=mlflow.get_tracking_uri())
    log_metrics(client, run_id, metrics)
    client.log_dict(run_id, _jsonable(dict(metrics)), "eval/metrics.json")
    if metrics_json is not None:
        client.log_artifact(run_id, str(metrics_json), "eval/files")
    if samples_png is not None:
        client.log_artifact(run_id, str(samples_png), "eval")


def log_generator_model(run_id: str, package_dir: str | Path) -> str:
    """Log the generator package as this run's pyfunc model; return its `models:/m-...` URI for registration."""
    from gan_core.mlflow_model import log_generator

    return log_generator(package_dir, run_id=run_id, name=MODEL_NAME).model_uri


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy: paths and other objects become strings, NaN/inf stay as JSON's NaN/Infinity."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out[str(k)] = _jsonable(v)
        elif isinstance(v, str | int | float | bool) or v is None:
            out[str(k)] = v
        elif isinstance(v, list | tuple):
            out[str(k)] = [x if isinstance(x, str | int | float | bool) or x is None else str(x) for x in v]
        else:
            out[str(k)] = str(v)
    return out
