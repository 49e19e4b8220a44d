"""MLflow tracking for one training: params, lineage tags, step metrics, sample grids, evaluation, the model.

    client = open_store(cfg.registry, create=True)
    with start_training_run(cfg, client=client) as run:       # params, lineage tags, dataset, system metrics
        result = train(cfg, callbacks=[MLflowCallback(run.info.run_id, client)])   # curves and sample grids
        evaluation = evaluate(cfg)
        model_uri = log_candidate(cfg, run.info.run_id, evaluation.metrics, result.package_dir, client,
                                  evaluation.context)     # metrics, their context, eval files, the pyfunc model

What the MLflow UI shows: each registered model's runs in an experiment of its own (gan_core.tracking.store), a run
named after what ran (`dcgan-nonsaturating-2000steps-755336f0`) with a description saying it in a sentence
(training_summary; the flows add the gate's outcome and the Prefect flow run), the params runs are compared by
(run_params; the whole config is config.yaml), the prepared data as the run's dataset input (digest = its DVC md5:
the Datasets column names it, both domains for a translator), sample grids as step images from step 0 on (the
image chart opens at step 0), named so they also sort by step as text, and the logged model named for its kind
(`generator`, `translator`).

Every function here takes the run id and the `MlflowClient` explicitly, so the hooks work from any thread (Prefect
runs tasks in worker threads; MLflow's "active run" is thread-local) and never log into whatever store MLflow's
process-wide URI happens to name. Which store: gan_core.tracking.store.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from gan_core.config import Config
from gan_core.config.catalogue import TASKS, family_info
from gan_core.redact import clean_url, redact
from gan_core.tracking.store import (
    NOTE_TAG,
    configure,
    experiment_id,
    run_reference,
    store_exists,
    tracking_uri,
    use_store,
)
from gan_core.training.callbacks import TrainCallback

if TYPE_CHECKING:
    from gan_core.training.loop import Trainer, TrainResult

log = logging.getLogger(__name__)

SAMPLES_KEY = "samples"
"""`mlflow.log_image` key of the training sample grids: the UI's image panel steps through them."""
STEP_DIGITS = 8
"""Digits of the zero-padded step in the image chart's file names (sorted as text, they sort by step)."""
CONFIG_HASH_TAG = "config_hash"
RUN_ID_METADATA = "mlflow_run_id"
"""Key of the generator package's metadata naming the MLflow run that trained it."""
DATASET_SOURCE_TYPE = "ganops"
"""Source type of the dataset inputs: the source is a ganops data.source (mnist5k, folder:..., torchvision:...)."""


# ----------------------------------------------------------------------------- runs
TRAINING_HASH_TAG = "training_hash"
"""Run tag: key of the training identity (gan_core.training.identity: weight-shaping settings, data version, code)."""
EVAL_HASH_TAG = "eval_hash"
"""Run tag: key of the evaluation settings that change the metrics (sample count, seed, extractors, ...)."""
CODE_HASH_TAG = "code_hash"
"""Run tag: hash of gan_core's source, so a dirty work tree's edits are not mistaken for the commit's code."""


def training_key(cfg: Config, data_version: str) -> dict[str, str]:
    """What identifies a candidate: its training identity and evaluation settings (gan_core.training.identity), as tags.

    Not the git commit: committing docs or dvc.lock changes nothing that is trained, and the source hash
    already sees every code change, committed or not."""
    from gan_core.training.identity import code_hash, evaluation_key, identity_key, training_identity

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


def training_tags(
    cfg: Config, *, data_version_info: Mapping[str, str] | None = None, device: str | None = None
) -> dict[str, str]:
    """Lineage of a training: data version and source, git commit and dirty flag, config hash, device, torch.
    `data_version_info` and `device`: as lineage() takes them, when the caller knows them already."""
    from gan_core.training.lineage import lineage

    tags = {k: str(v) for k, v in lineage(cfg, data_version_info=data_version_info, device=device).items()}
    tags.setdefault(CONFIG_HASH_TAG, cfg.hash())
    if cfg.recipe is not None:  # searchable: tags.recipe = 'conditional' (also the `recipe` param)
        tags["recipe"] = cfg.recipe
    return tags


CORE_PARAMS = (
    "recipe", "data.source", "data.target", "data.resolution",
    "model.arch", "model.latent_dim", "model.g_width", "model.d_width",
    "train.loss", "train.steps", "train.batch_size", "train.g_optimizer.lr", "train.d_optimizer.lr",
)
"""The settings runs are compared by, logged as params whatever their value (None, e.g. no recipe, is left out);
about a dozen, so the image chart, which prints them above its grid, still shows the grid."""
COMPARED_SECTIONS = ("data", "model", "train")
"""Sections whose other settings are params when they differ from their defaults (paths and runtime ones never)."""
NOT_COMPARED = frozenset({"data.raw_dir", "data.prepared_dir"})


def run_params(cfg: Config, also: Iterable[str] = ()) -> dict[str, str]:
    """The run's params: CORE_PARAMS, every other data/model/train setting that shapes the weights and is not at its
    default (a recipe's or an override's changes), and the keys in `also` (a sweep's searched settings), as strings.

    Not every config key: the MLflow UI prints a run's params above its image chart, so ~90 of them push the sample
    grid out of the card. The whole config is the run's config.yaml artifact."""
    from gan_core.training.identity import RUNTIME_TRAIN_KEYS

    flat, defaults = cfg.flat(), Config().flat()
    skipped = {f"train.{k}" for k in RUNTIME_TRAIN_KEYS} | NOT_COMPARED
    keys = [k for k in CORE_PARAMS if flat.get(k) is not None]
    keys += [k for k in flat if k.split(".")[0] in COMPARED_SECTIONS and k not in skipped and k not in keys
             and flat[k] != defaults.get(k)]
    keys += [k for k in also if k in flat and k not in keys]
    return {k: _param_value(flat[k]) for k in keys}


def training_summary(cfg: Config, data_version: str) -> str:
    """One sentence saying what a run trains, for its description: ``Generator `dcgan` (nonsaturating loss, 2000
    steps, batch 64) trained on mnist5k at 32 px, data version 755336f0.`` (a translator names both domains)."""
    kind = TASKS[family_info(cfg.model.arch).task]
    model = f"{kind.package.capitalize()} `{cfg.model.arch}`{', conditional,' if cfg.model.conditional else ''}"
    recipe = f", recipe `{cfg.recipe}`" if cfg.recipe else ""
    settings = f"{cfg.train.loss} loss, {cfg.train.steps} steps, batch {cfg.train.batch_size}{recipe}"
    return (f"{model} ({settings}) trained on {dataset_name(cfg)} at {cfg.data.resolution} px, data version "
            f"{data_version[:8]}.")


def run_note(*paragraphs: str | None) -> str:
    """A run's description (MLflow's `mlflow.note.content`, rendered as markdown with clickable links): the given
    paragraphs, URLs cleaned of credentials."""
    return redact("\n\n".join(p for p in paragraphs if p))


def training_experiment(cfg: Config, client: MlflowClient | None = None) -> str:
    """The id of the experiment of cfg's registered model (created when absent, described for its task kind)."""
    return experiment_id(cfg.registry, client, family_info(cfg.model.arch).task)


def config_text(cfg: Config) -> str:
    """The run's config.yaml: the whole config, its URLs (tracking URI, study storage) cleaned of credentials."""
    dump = cfg.model_dump(mode="json")
    for key in ("tracking_uri", "study_storage", "artifact_location"):
        if isinstance(dump["registry"].get(key), str):
            dump["registry"][key] = clean_url(dump["registry"][key])
    return yaml.safe_dump(dump, sort_keys=False)


@contextmanager
def start_training_run(
    cfg: Config, run_name: str | None = None, extra_tags: Mapping[str, str] | None = None, *,
    client: MlflowClient | None = None, lineage_tags: Mapping[str, str] | None = None, param_keys: Iterable[str] = (),
) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run for one training, with system metrics on; the run ends FAILED if the block raises.

    Logs on entry: the params runs are compared by (run_params, plus `param_keys`), the lineage tags, a description
    (training_summary, unless `extra_tags` brings one), the prepared data as the run's dataset input, `config.yaml`
    (every setting) as an artifact. The run is named by training_run_name unless `run_name` is given, in the
    experiment of cfg's registered model.
    `client`: the store to log into (MLflow's fluent API, which starts the run, is pointed at it too); by default
    the configured store, created if missing. `lineage_tags`: training_tags(cfg), when the caller has them.
    """
    if client is None:
        client = configure(cfg.registry, create=True)
    else:
        use_store(client.tracking_uri)  # mlflow.start_run (system metrics need an active run) reads it
    exp_id = training_experiment(cfg, client)
    tags = {**(lineage_tags if lineage_tags is not None else training_tags(cfg)), **(extra_tags or {})}
    tags[NOTE_TAG] = run_note(tags.get(NOTE_TAG) or training_summary(cfg, tags["data_version"]))
    with mlflow.start_run(
        experiment_id=exp_id, run_name=run_name or training_run_name(cfg, tags["data_version"]), tags=tags,
        log_system_metrics=True,
    ) as run:
        run_id = run.info.run_id
        client.log_inputs(run_id, datasets=[dataset_input(cfg, tags["data_version"])])
        params = [Param(k, v) for k, v in run_params(cfg, param_keys).items()]
        client.log_batch(run_id, params=params, synchronous=True)  # MLflow splits it into batches it accepts
        client.log_text(run_id, config_text(cfg), "config.yaml")
        yield run


def train_in_run(trainer: Trainer) -> TrainResult:
    """Run `trainer` as one MLflow training run, as the retrain flow's training is: the same params, lineage and
    identity tags, dataset input, step metrics and sample grids (plus the DVC stage/experiment when run by DVC).
    The generator package records the run's id, so `python -m gan_core evaluate` adds its metrics to this run."""
    cfg = trainer.cfg
    client = configure(cfg.registry, create=True)
    key = training_key(cfg, trainer.data_version)
    tags = {**{k: v for k, v in key.items() if k != "data_version"}, **dvc_run_tags()}
    lineage = training_tags(cfg, data_version_info=trainer.data_version_info, device=trainer.device.type)
    with start_training_run(cfg, extra_tags=tags, client=client, lineage_tags=lineage) as run:
        log.info("MLflow run %s", run_reference(cfg.registry, run.info.run_name, run.info.experiment_id,
                                                 run.info.run_id))
        trainer.callbacks.append(MLflowCallback(run.info.run_id, client))
        return trainer.run()


def log_to_training_run(
    cfg: Config, metrics: Mapping[str, Any], context: Mapping[str, Any] | None = None
) -> str | None:
    """Log an evaluation of {train.out_dir}/generator (its metrics and evaluation context) into the MLflow run that
    trained it (named in the package's metadata); return the run id, or None when the package names no run or the
    run is not in this store."""
    from mlflow.exceptions import MlflowException

    from gan_core.packaging import read_package_spec

    package_dir = Path(cfg.train.out_dir) / "generator"
    run_id = (read_package_spec(package_dir).get("metadata") or {}).get(RUN_ID_METADATA)
    if not run_id or not store_exists(cfg.registry):
        return None
    client = configure(cfg.registry)
    try:
        client.get_run(run_id)
    except MlflowException:
        log.warning("the generator's MLflow run %s is not in %s: evaluation not logged", run_id,
                    clean_url(tracking_uri(cfg.registry)))
        return None
    log_candidate(cfg, run_id, metrics, package_dir, client, context)
    return str(run_id)


def training_label(cfg: Config) -> str:
    """What a training trains, e.g. `dcgan-nonsaturating-2000steps` (`dcgan-cond-...` for a conditional model),
    led by the recipe's name when one is applied (`conditional-dcgan-cond-nonsaturating-3000steps`)."""
    arch = f"{cfg.model.arch}-cond" if cfg.model.conditional else cfg.model.arch
    label = f"{arch}-{cfg.train.loss}-{cfg.train.steps}steps"
    return f"{cfg.recipe}-{label}" if cfg.recipe is not None else label


def training_run_name(cfg: Config, data_version: str) -> str:
    """The MLflow run's name: training_label + the data version's prefix (`dcgan-nonsaturating-2000steps-755336f0`)."""
    return f"{training_label(cfg)}-{data_version[:8]}"


def source_name(source: str) -> str:
    """A data.source as the Datasets column names it: `mnist5k`, `torchvision:MNIST`, a folder's own name."""
    if source.startswith("folder:"):
        return Path(source.removeprefix("folder:")).name or source
    return source


def dataset_name(cfg: Config) -> str:
    """The run's dataset input name: the source (source_name), or both domains of a translator's data
    (`digits ↔ mnist5k`: domain A, then B)."""
    if cfg.data.target is None:
        return source_name(cfg.data.source)
    return f"{source_name(cfg.data.source)} ↔ {source_name(cfg.data.target)}"


def dataset_input(cfg: Config, data_version: str) -> DatasetInput:
    """The prepared data as an MLflow dataset input (context `training`): digest = the DVC md5 (the data version,
    36 characters: MLflow's limit for a digest), source = data.source, profile = image count and shape."""
    meta_path = Path(cfg.data.prepared_dir) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    dataset = Dataset(
        name=dataset_name(cfg),
        digest=data_version,
        source_type=DATASET_SOURCE_TYPE,
        source=json.dumps({"source": cfg.data.source, **({"target": cfg.data.target} if cfg.data.target else {}),
                           "prepared_dir": cfg.data.prepared_dir}),
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

    def __init__(self, run_id: str, client: MlflowClient) -> None:
        self.run_id = run_id
        self.client = client

    def on_train_start(self, info: dict[str, Any]) -> None:
        # Scalar facts (device, parameter counts, resumed step) as tags so runs can be filtered by them.
        tags = [RunTag(f"train.{k}", str(v)) for k, v in info.items() if isinstance(v, str | int | float | bool)]
        if tags:
            self.client.log_batch(self.run_id, tags=tags, synchronous=True)
        self.client.log_dict(self.run_id, info, "train_start.json")

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        log_metrics(self.client, self.run_id, metrics, step=step)

    def on_samples(self, step: int, grid_png: Path) -> None:
        log_step_image(self.client, self.run_id, grid_png, SAMPLES_KEY, step)

    def package_metadata(self) -> dict[str, str]:
        # The package names its run, so a later `python -m gan_core evaluate` logs into the run that trained it.
        return {RUN_ID_METADATA: self.run_id}

    def on_train_end(self, result: TrainResult) -> None:
        self.client.log_dict(self.run_id, result.as_dict(), "train_result.json")
        if Path(result.metrics_path).is_file():
            self.client.log_artifact(self.run_id, result.metrics_path, "train")


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
    *,
    client: MlflowClient,
) -> None:
    """Log evaluation metrics (NaN kept: a failed metric must stay visible) and their JSON and sample grid."""
    log_metrics(client, run_id, metrics)
    client.log_dict(run_id, dict(metrics), "eval/metrics.json")
    if metrics_json is not None:
        client.log_artifact(run_id, str(metrics_json), "eval/files")
    if samples_png is not None:
        client.log_artifact(run_id, str(samples_png), "eval")


def log_candidate(
    cfg: Config, run_id: str, metrics: Mapping[str, Any], package_dir: str | Path, client: MlflowClient,
    context: Mapping[str, Any] | None = None,
) -> str:
    """Log an evaluation of the run's generator (metrics, their evaluation context as eval.* run tags — see
    gan_core.evaluation.context —, eval.out_dir's metrics/info JSON and sample grid) and the package as the run's pyfunc
    model; return the model's URI. The flow and `python -m gan_core evaluate` both log a candidate through here."""
    from gan_core.evaluation.context import context_tags

    if context is not None:
        tags = [RunTag(k, v) for k, v in context_tags(context).items()]
        client.log_batch(run_id, tags=tags, synchronous=True)
    eval_dir = Path(cfg.eval.out_dir)
    samples = eval_dir / "samples.png"
    log_evaluation(run_id, metrics, metrics_json=eval_dir / "metrics.json" if (eval_dir / "metrics.json").is_file()
                   else None, samples_png=samples if samples.is_file() else None, client=client)
    info = eval_dir / "info.json"
    if info.is_file():
        client.log_artifact(run_id, str(info), "eval/files")
    return log_generator_model(run_id, package_dir)


def log_generator_model(run_id: str, package_dir: str | Path) -> str:
    """Log the package (a generator's, or a translator's) as this run's pyfunc model, named for its kind
    (`generator`, `translator`); return its `models:/m-...` URI for registration."""
    from gan_core.serving.mlflow_models import log_package_model, package_task

    return log_package_model(package_dir, run_id, TASKS[package_task(package_dir)].package).model_uri
