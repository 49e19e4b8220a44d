"""MLflow tracking for one training: params, lineage tags, step metrics, sample grids, evaluation, the model.

    with start_training_run(cfg) as run:                      # params, config hash, lineage tags, system metrics
        result = train(cfg, callbacks=[MLflowCallback(run.info.run_id)])
        log_evaluation(run.info.run_id, evaluate(cfg), metrics_json="outputs/eval/metrics.json")
        model_uri = log_generator_model(run.info.run_id, result["package_dir"])

What the MLflow UI shows: the experiment carries `mlflow.experimentKind` = custom_model_development and a
description (MLflow 3.17's UI still starts in its GenAI mode: the links ganops prints add
flows.report.MODEL_TRAINING_VIEW); a run is named after what ran
(`dcgan-nonsaturating-2000steps-755336f0`); the prepared data is the run's dataset input (digest = its DVC md5),
so the Datasets column names it; sample grids are step images, named so they also sort by step as text.

Every function here takes the run id explicitly and logs through an `MlflowClient`, so the hooks work from
any thread (Prefect runs tasks in worker threads; MLflow's "active run" is thread-local).
The tracking URI is `MLFLOW_TRACKING_URI` when set, else `cfg.registry.tracking_uri`.

Stores are created only where ganops writes (configure(create=True): a training run, a registration); reads
and alias moves need an existing store and create nothing. An http(s) tracking server is probed once at the
start of a command (check_tracking_server), and MLflow's own HTTP retries, the one retry layer for it, are
bounded by GANOPS_SERVICE_TIMEOUT (mlflow_http_env) unless the user set MLflow's variables.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from gan_core.callbacks import TrainCallback
from gan_core.config import Config, RegistryConfig
from gan_core.errors import ServiceUnavailable, UserError, first_line
from gan_core.preflight import ensure_writable_dir

if TYPE_CHECKING:
    from gan_core.train import Trainer

log = logging.getLogger(__name__)

SAMPLES_KEY = "samples"
"""`mlflow.log_image` key of the training sample grids: the UI's image panel steps through them."""
STEP_DIGITS = 8
"""Digits of the zero-padded step in the image chart's file names (sorted as text, they sort by step)."""
CONFIG_HASH_TAG = "config_hash"
MODEL_NAME = "generator"
"""Name of the logged pyfunc model inside its run."""
RUN_ID_METADATA = "mlflow_run_id"
"""Key of the generator package's metadata naming the MLflow run that trained it."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""The kind MLflow records for a model-training experiment (the UI's mode itself follows `?workflowType=`)."""
NOTE_TAG = "mlflow.note.content"
"""MLflow's description tag (experiments and runs)."""
DATASET_SOURCE_TYPE = "ganops"
"""Source type of the dataset inputs: the source is a ganops data.source (mnist5k, folder:..., torchvision:...)."""

# MLflow's log_batch limits per request (mlflow/utils/validation.py): stay below them.


# ----------------------------------------------------------------------------- store
SERVICE_TIMEOUT_ENV = "GANOPS_SERVICE_TIMEOUT"
"""Seconds within which a command gives up on an unreachable service (MLflow, a DVC remote, the Prefect API)."""
DEFAULT_SERVICE_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 10.0
"""Longest wait for the reachability probe at the start of a command (a refused connection fails at once)."""
MLFLOW_HTTP_RETRIES = 2
"""Retries of one MLflow HTTP request (MLflow's own retry layer: the only one, Prefect does not retry on top)."""
_HTTP_SCHEMES = ("http://", "https://")


def service_timeout_s() -> float:
    """GANOPS_SERVICE_TIMEOUT in seconds (default 120)."""
    raw = os.environ.get(SERVICE_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_SERVICE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{SERVICE_TIMEOUT_ENV}={raw!r}: expected a number of seconds > 0, e.g. 120")
    return value


def mlflow_http_env(budget_s: float) -> dict[str, str]:
    """MLflow's HTTP retry settings that keep one request to a dead server within about 0.4 x `budget_s`.

    3 attempts of at most budget/8 s each (connect or read), 0 s then 2 s apart plus up to 1 s jitter each:
    at most 3 * 15 + 4 = 49 s at the default 120 s; a refused connection fails in about 3 s."""
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(MLFLOW_HTTP_RETRIES),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(budget_s // 8))),
    }


_ours: dict[str, str] = {}
"""The MLflow variables this process set itself: updated when the budget changes; a user's own value is kept."""


def bound_mlflow_http_retries() -> None:
    """Set MLflow's HTTP retry variables from GANOPS_SERVICE_TIMEOUT unless the user set them (MLflow's defaults
    retry one request for about 4 minutes, 7 times)."""
    for key, value in mlflow_http_env(service_timeout_s()).items():
        if key not in os.environ or os.environ[key] == _ours.get(key):
            os.environ[key] = _ours[key] = value


def _origin() -> str:
    return "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "registry.tracking_uri"


def tracking_uri(registry: RegistryConfig) -> str:
    """`MLFLOW_TRACKING_URI` when set, else the configured URI; relative SQLite paths become absolute.

    Pure: creates nothing (read-only commands must leave no store behind; see configure(create=True))."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or registry.tracking_uri
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        # sqlite:////abs/path keeps its leading slash after the prefix; relative paths resolve against cwd.
        db = db if db.is_absolute() else Path.cwd() / db
        return f"sqlite:///{db}"
    if uri.startswith("file:") or "://" not in uri:
        raise UserError(
            f"{_origin()}={uri!r} is a plain-file store, which MLflow 3.13+ refuses; "
            "use sqlite:///mlflow.db or an http(s):// tracking server"
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


def is_http_uri(uri: str) -> bool:
    """True for a tracking server (http/https), whose client retries requests itself."""
    return uri.startswith(_HTTP_SCHEMES)


def store_exists(registry: RegistryConfig) -> bool:
    """False only for a SQLite store whose file is missing (a server or database URI is assumed to exist)."""
    db = sqlite_path(tracking_uri(registry))
    return db is None or db.is_file()


def require_store(registry: RegistryConfig) -> str:
    """The tracking URI, after checking that a SQLite store exists there (read-only commands must not create one)."""
    uri = tracking_uri(registry)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise UserError(
            f"no MLflow store at {db}: run `ganops demo` (or `ganops retrain`) first, or set MLFLOW_TRACKING_URI"
        )
    return uri


def check_tracking(registry: RegistryConfig, step: str, write: bool = False) -> str:
    """Fail fast, naming `step`, on a tracking setup that cannot work; return the URI. Creates no store.

    A bad GANOPS_SERVICE_TIMEOUT, a plain-file URI or an unsupported scheme is a UserError; an http(s) server that
    does not answer the probe is ServiceUnavailable. A missing SQLite store: `write=True` (a retrain will create
    it) proves its directory writable now, not after training; reads leave it to configure(), which refuses."""
    service_timeout_s()
    uri = tracking_uri(registry)
    db = sqlite_path(uri)
    if is_http_uri(uri):
        check_tracking_server(uri, step)
    elif db is None:
        open_store(registry)  # a database or plugin URI: MLflow itself says whether it supports the scheme
    elif write and not db.is_file():
        ensure_writable_dir(db.parent, f"the directory of {_origin()}")
    return uri


def check_tracking_server(uri: str, step: str) -> None:
    """A cheap reachability probe of an http(s) tracking server: ServiceUnavailable in seconds, not minutes.

    Any HTTP answer proves the server is there (auth and API errors are MLflow's to report); no-op for other URIs."""
    if is_http_uri(uri):
        probe_http("MLflow tracking server", uri, f"{uri.rstrip('/')}/health", step,
                   "start it or set MLFLOW_TRACKING_URI")


def probe_http(service: str, target: str, url: str, step: str, hint: str) -> None:
    """GET `url` once with a short timeout; raise ServiceUnavailable(service, target, step) when nothing answers."""
    import requests

    timeout = min(PROBE_TIMEOUT_S, service_timeout_s())
    try:
        requests.get(url, timeout=timeout, allow_redirects=False)
    except requests.exceptions.SSLError:
        return  # something answered; certificate problems are the client's to report, with their own message
    except requests.exceptions.Timeout:
        raise ServiceUnavailable(service, target, step, f"no answer within {timeout:g} s", hint) from None
    except requests.exceptions.RequestException as e:
        raise ServiceUnavailable(service, target, step, connection_problem(e), hint) from None


def connection_problem(error: BaseException) -> str:
    """A short reason for a failed connection: refused, unknown host, or the library's first line."""
    text = str(error)
    # requests says "Connection refused", aiohttp (DVC's http remotes) "Connect call failed ... [Errno 111]".
    if "refused" in text.lower() or "Errno 111" in text:
        return "connection refused"
    if any(s in text for s in ("Name or service not known", "NameResolution", "nodename nor servname",
                               "Temporary failure in name resolution", "getaddrinfo failed")):
        return "host name not found"
    return first_line(text)[:200]


def open_store(registry: RegistryConfig, create: bool = False) -> MlflowClient:
    """A client on the configured store (tracking and registry); sets no global MLflow state.

    `create=False` (reads, alias moves): a missing SQLite store is a UserError and nothing is created.
    `create=True` (training runs, registration): its directory is created and proven writable first.
    """
    uri = tracking_uri(registry)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        if not create:
            require_store(registry)
        # SQLite creates the file but not its directory.
        ensure_writable_dir(db.parent, f"the directory of {_origin()}")
    bound_mlflow_http_retries()
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except UnsupportedModelRegistryStoreURIException:
        raise UserError(
            f"{_origin()}={uri!r}: not a tracking URI MLflow supports; use sqlite:///path/mlflow.db, "
            "http(s)://host:port of a tracking server, or a database URI (postgresql://, mysql://)"
        ) from None


def configure(registry: RegistryConfig, create: bool = False) -> MlflowClient:
    """open_store, and point MLflow's fluent API at the same store: only for code that uses it (mlflow.start_run,
    mlflow.register_model, pyfunc logging, load_generator("models:/...")); everything else takes the client."""
    client = open_store(registry, create=create)
    use_store(client.tracking_uri)
    return client


def use_store(uri: str) -> None:
    """Point MLflow's fluent API (and the flows' outage and retry checks, which read it) at `uri`, creating nothing.
    A flow does this once, in its config step."""
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # MLflow also exports the URI to the environment; undo that, or the next configure() with another config
    # would read it back as the user's MLFLOW_TRACKING_URI.
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported


def experiment_tags(registry: RegistryConfig) -> dict[str, str]:
    """Tags that mark the experiment as model training, with a description.

    `mlflow.experimentKind` records the kind (MLflow 3.17's UI mode still follows `?workflowType=`, see
    flows.report.MODEL_TRAINING_VIEW); `mlflow.note.content` is the description the experiment page shows."""
    return {
        EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
        NOTE_TAG: (
            "GAN trainings by ganops: one run per training, named `<arch>-<loss>-<steps>steps-<data version>`, "
            "with every params.yaml key as a param, lineage tags (data version, git commit, config hash), "
            "losses per step, the sample grids in the `samples` image chart and the evaluation metrics "
            "(`fid_<extractor>`, `class_coverage`, ...). The Datasets column names the prepared data and its "
            "DVC md5.\n\n"
            f"Each training's generator is registered as `{registry.model_name}`; the gate's decision is on each "
            f"version's page and the promoted one is `{registry.model_uri()}`."
        ),
    }


def experiment_id(registry: RegistryConfig, client: MlflowClient | None = None) -> str:
    """The id of the configured experiment, created (with its artifact location and experiment_tags) when absent.

    An existing experiment gets the tags it lacks; values already there (a description edited in the UI) stay."""
    client = client or open_store(registry)
    return ensure_experiment(client, registry.experiment, artifact_location(registry), experiment_tags(registry))


def ensure_experiment(client: MlflowClient, name: str, location: str, tags: Mapping[str, str]) -> str:
    """The id of experiment `name`, created with `location` and `tags` when absent; an existing one gets the tags
    it lacks (values already there stay)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=location, tags=dict(tags))
        except mlflow.exceptions.MlflowException:
            # Another process created it between our lookup and our create.
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    for key, value in tags.items():
        if key not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


# ----------------------------------------------------------------------------- runs
TRAINING_HASH_TAG = "training_hash"
"""Run tag: key of the training identity (gan_core.identity: weight-shaping settings, data version, code)."""
EVAL_HASH_TAG = "eval_hash"
"""Run tag: key of the evaluation settings that change the metrics (sample count, seed, extractors, ...)."""
CODE_HASH_TAG = "code_hash"
"""Run tag: hash of gan_core's source, so a dirty work tree's edits are not mistaken for the commit's code."""


def training_key(cfg: Config, data_version: str) -> dict[str, str]:
    """What identifies a candidate: its training identity and evaluation settings (gan_core.identity), as tags.

    Not the git commit: committing docs or dvc.lock changes nothing that is trained, and the source hash
    already sees every code change, committed or not."""
    from gan_core.identity import evaluation_key, identity_key, training_identity
    from gan_core.lineage import code_hash

    config, code = cfg.model_dump(mode="json"), code_hash()
    return {
        "data_version": data_version,
        TRAINING_HASH_TAG: identity_key(training_identity(config, data_version, code)),
        EVAL_HASH_TAG: evaluation_key(config),
        CODE_HASH_TAG: code,
    }


def dvc_run_tags() -> dict[str, str]:
    """Tags naming the DVC stage (and `dvc exp run` experiment) this process runs in; empty outside DVC."""
    tags = {}
    if os.environ.get("DVC_STAGE"):
        tags["dvc.stage"] = os.environ["DVC_STAGE"]
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]
    return tags


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

    Logs on entry: every config key as a param (dotted names), the lineage tags, the prepared data as the run's
    dataset input, `config.yaml` as an artifact. The run is named by training_run_name unless `run_name` is given.
    """
    client = configure(cfg.registry, create=True)
    exp_id = experiment_id(cfg.registry, client)
    tags = {**training_tags(cfg), **(extra_tags or {})}
    with mlflow.start_run(
        experiment_id=exp_id, run_name=run_name or training_run_name(cfg, tags["data_version"]), tags=tags,
        log_system_metrics=True,
    ) as run:
        run_id = run.info.run_id
        client.log_inputs(run_id, datasets=[dataset_input(cfg, tags["data_version"])])
        params = [Param(k, _param_value(v)) for k, v in sorted(cfg.flat().items())]
        client.log_batch(run_id, params=params, synchronous=True)  # MLflow splits it into batches it accepts
        client.log_text(run_id, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "config.yaml")
        yield run


def train_in_run(trainer: Trainer) -> dict[str, Any]:
    """Run `trainer` as one MLflow training run, as the retrain flow's training is: the same params, lineage and
    identity tags, dataset input, step metrics and sample grids (plus the DVC stage/experiment when run by DVC).
    The generator package records the run's id, so `python -m gan_core evaluate` adds its metrics to this run."""
    from gan_core.lineage import data_version

    cfg = trainer.cfg
    client = configure(cfg.registry, create=True)
    key = training_key(cfg, data_version(cfg.data.prepared_dir))
    tags = {**{k: v for k, v in key.items() if k != "data_version"}, **dvc_run_tags()}
    with start_training_run(cfg, extra_tags=tags) as run:
        log.info("MLflow run %s (%s) in %s", run.info.run_name, run.info.run_id, tracking_uri(cfg.registry))
        trainer.callbacks.append(MLflowCallback(run.info.run_id, client))
        return trainer.run()


def log_to_training_run(cfg: Config, metrics: Mapping[str, Any]) -> str | None:
    """Log an evaluation of {train.out_dir}/generator into the MLflow run that trained it (named in the package's
    metadata); return the run id, or None when the package names no run or the run is not in this store."""
    from mlflow.exceptions import MlflowException

    from gan_core.package import read_spec

    package_dir = Path(cfg.train.out_dir) / "generator"
    run_id = (read_spec(package_dir).get("metadata") or {}).get(RUN_ID_METADATA)
    if not run_id or not store_exists(cfg.registry):
        return None
    client = configure(cfg.registry)
    try:
        client.get_run(run_id)
    except MlflowException:
        log.warning("the generator's MLflow run %s is not in %s: evaluation not logged", run_id,
                    tracking_uri(cfg.registry))
        return None
    log_candidate(cfg, run_id, metrics, package_dir, client)
    return str(run_id)


def training_label(cfg: Config) -> str:
    """What a training trains, e.g. `dcgan-nonsaturating-2000steps` (`dcgan-cond-...` for a conditional model)."""
    arch = f"{cfg.model.arch}-cond" if cfg.model.conditional else cfg.model.arch
    return f"{arch}-{cfg.train.loss}-{cfg.train.steps}steps"


def training_run_name(cfg: Config, data_version: str) -> str:
    """The MLflow run's name: training_label + the data version's prefix (`dcgan-nonsaturating-2000steps-755336f0`)."""
    return f"{training_label(cfg)}-{data_version[:8]}"


def dataset_name(source: str) -> str:
    """The Datasets column's name for a data.source: `mnist5k`, `torchvision:MNIST`, a folder's own name."""
    if source.startswith("folder:"):
        return Path(source.removeprefix("folder:")).name or source
    return source


def dataset_input(cfg: Config, data_version: str) -> DatasetInput:
    """The prepared data as an MLflow dataset input (context `training`): digest = the DVC md5 (the data version,
    36 characters: MLflow's limit for a digest), source = data.source, profile = image count and shape."""
    meta_path = Path(cfg.data.prepared_dir) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    dataset = Dataset(
        name=dataset_name(cfg.data.source),
        digest=data_version,
        source_type=DATASET_SOURCE_TYPE,
        source=json.dumps({"source": cfg.data.source, "prepared_dir": cfg.data.prepared_dir}),
        profile=json.dumps({"num_images": meta.get("count"), "shape": meta.get("shape")}),
    )
    return DatasetInput(dataset=dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])


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
    client.log_batch(run_id, metrics=batch, synchronous=True)


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
        log_step_image(self.client, self.run_id, grid_png, SAMPLES_KEY, step)

    def package_metadata(self) -> dict[str, str]:
        # The package names its run, so a later `python -m gan_core evaluate` logs into the run that trained it.
        return {RUN_ID_METADATA: self.run_id}

    def on_train_end(self, result: dict[str, Any]) -> None:
        self.client.log_dict(self.run_id, _jsonable(result), "train_result.json")
        metrics_path = result.get("metrics_path")
        if metrics_path and Path(metrics_path).is_file():
            self.client.log_artifact(self.run_id, str(metrics_path), "train")


def step_image_stem(key: str, step: int, timestamp_ms: int, uid: str) -> str:
    """`images/<key>+step+<step>+timestamp+<ms>+<uuid>`: the file name MLflow's log_image(key=, step=) writes and its
    UI's image chart reads, with the step zero-padded to STEP_DIGITS so the grids sort by step in the artifact
    browser (MLflow's own `+step+250+` sorts after `+step+2000+`; the UI reads the step with parseInt either way)."""
    return f"images/{key.replace('/', '~')}+step+{step:0{STEP_DIGITS}d}+timestamp+{timestamp_ms}+{uid}"


def log_step_image(client: MlflowClient, run_id: str, png: str | Path, key: str, step: int) -> None:
    """Log an image at a step for the run's image chart (full PNG + the UI's compressed WebP, as log_image does),
    named by step_image_stem."""
    import tempfile
    import uuid

    from mlflow.tracking.multimedia import compress_image_size
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_IMAGES
    from PIL import Image

    stem = step_image_stem(key, step, int(time.time() * 1000), str(uuid.uuid4()))
    with Image.open(png) as img, tempfile.TemporaryDirectory() as tmp:
        img.load()
        name = Path(stem).name
        img.save(Path(tmp) / f"{name}.png")
        compress_image_size(img).save(Path(tmp) / f"{name}+compressed.webp")
        client.log_artifacts(run_id, tmp, str(Path(stem).parent))
    client.set_tag(run_id, MLFLOW_LOGGED_IMAGES, True, synchronous=True)  # what log_image sets


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


def log_candidate(
    cfg: Config, run_id: str, metrics: Mapping[str, Any], package_dir: str | Path, client: MlflowClient
) -> str:
    """Log an evaluation of the run's generator (metrics, eval.out_dir's metrics/info JSON and sample grid) and the
    package as the run's pyfunc model; return the model's URI. The flow and `python -m gan_core evaluate` both
    log a candidate through here."""
    eval_dir = Path(cfg.eval.out_dir)
    samples = eval_dir / "samples.png"
    log_evaluation(run_id, metrics, metrics_json=eval_dir / "metrics.json" if (eval_dir / "metrics.json").is_file()
                   else None, samples_png=samples if samples.is_file() else None, client=client)
    info = eval_dir / "info.json"
    if info.is_file():
        client.log_artifact(run_id, str(info), "eval/files")
    return log_generator_model(run_id, package_dir)


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
