"""The retrain flow's steps as Prefect tasks: each calls the same gan_core or flows function as the CLI and the DVC
stages (gan_core.data.prepare, gan_core.evaluation.extractors.train_extractors, the candidate routine's steps in
flows.candidate — gan_core.training.loop.train or torchrun, gan_core.evaluation.evaluate.evaluate, the run's
logging —, flows.registry's register / promote, which applies the gate).

Tasks that take the flow's registry handle (flows.registry.Registry, alone or in flows.candidate.RunInputs: a live
client) are not cached by their inputs (cache_policy=NO_CACHE): Prefect could not hash the handle, and no step here
is worth caching by input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.candidate import CandidateSteps, RunInputs, evaluate_model, log_model, train_model
from flows.dvc_pipeline import FLOW_STAGES, PREPARE_STAGE, dvc_push, run_dvc
from flows.failures import SERVICE_RETRIES, is_transient, named_step
from gan_core.config import Config

if TYPE_CHECKING:  # the heavy imports stay inside the tasks, so importing the flow stays fast
    from flows.registry import Registry
    from gan_core.evaluation.evaluate import Evaluation
    from gan_core.training.callbacks import TrainCallback
    from gan_core.training.loop import TrainResult


@task(name="version_data")
def version_data(cfg: Config, use_dvc: bool) -> dict[str, Any]:
    """Prepare the dataset (via `dvc repro prepare` when it is the DVC stage) and return its data version."""
    from gan_core.data import prepare, read_meta
    from gan_core.data.version import data_version_info

    if use_dvc:
        run_dvc("repro", PREPARE_STAGE)
        meta = read_meta(cfg.data.prepared_dir)
    else:
        meta = prepare(cfg.data)
    info = data_version_info(cfg.data.prepared_dir)
    return {**info, "data_source": cfg.data.source, "count": meta.get("count"), "shape": meta.get("shape")}


@task(name="push_data")
def push_data() -> bool:
    """`dvc push` the prepared dataset to the default DVC remote (bounded; DVC retries transfers itself)."""
    dvc_push(PREPARE_STAGE)
    return True


@task(name="push_outputs")
def push_outputs() -> bool:
    """`dvc push` what the stages this flow ran itself recorded (classifier, encoder, generator) to the default DVC
    remote: with the data, everything dvc.lock names, so `dvc pull` in another clone gets it all."""
    dvc_push(*FLOW_STAGES, step="push_outputs")
    return True


@task(name="record_dvc_stages")
def record_dvc_stages() -> None:
    """`dvc commit` the stages this flow ran itself, so dvc.lock records their outputs and `dvc status` is clean."""
    run_dvc("commit", "--force", *FLOW_STAGES)


@task(name="find_unchanged", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def find_unchanged(registry: Registry, key: dict[str, str]) -> dict[str, Any] | None:
    """The newest registered candidate when it was trained from the same key and gated, else None. The key is its
    training run's tags (a version keeps only its data version; versions registered before that carry it all)."""
    from mlflow.exceptions import MlflowException

    from flows.registry import latest_version
    from flows.registry.handle import is_missing

    latest = latest_version(registry)
    if latest is None:
        return None
    tags = latest["tags"]
    # A version registered by a run that crashed before its gate is not a finished candidate: train again.
    if "gate.decision" not in tags:
        return None
    try:
        run_tags = registry.client().get_run(latest["run_id"]).data.tags if latest["run_id"] else {}
    except MlflowException as e:
        if not is_missing(e):
            raise
        run_tags = {}  # its run was deleted: nothing says how it was trained
    recorded = {**run_tags, **tags}
    if any(recorded.get(k) != v for k, v in key.items()):
        return None
    return latest


# ----------------------------------------------------------------------------- extractors and candidate
@task(name="train_extractors")
def train_extractors(cfg: Config, data_version: str | None = None) -> dict[str, dict[str, Any]]:
    """Train the offline feature extractors the evaluation reads (the lenet domain classifier, the label-free simclr
    encoder), or reuse them: each keys its model by the data's version (`data_version`, as the version_data step
    computed it) and its settings, so this costs seconds when the data is unchanged; one that is not used here
    is recorded as such (gan_core.evaluation.extractors). Returns {"lenet": info, "simclr": info}."""
    from gan_core.evaluation.extractors import train_extractors as fit_extractors

    return fit_extractors(cfg, data_version=data_version)


@task(name="train", retries=1, retry_delay_seconds=5, retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def train_generator(cfg: Config, run_id: str, inputs: RunInputs, callbacks: Sequence[TrainCallback] = ()
                    ) -> TrainResult:
    """Train the GAN, logging to the MLflow run (flows.candidate.train_model: torchrun when distributed). It
    resumes the last checkpoint when that has the same training identity (gan_core.training.identity): a retry
    continues, and a run that differs only in evaluation, logging or device settings from a finished one trains no
    step again."""
    return train_model(cfg, run_id, inputs, callbacks)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_generator(cfg: Config, inputs: RunInputs) -> Evaluation:
    """Evaluate the freshly trained generator package against the prepared data."""
    return evaluate_model(cfg, inputs)


@task(name="log_candidate", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def log_candidate(cfg: Config, run_id: str, evaluation: Evaluation, package_dir: str, inputs: RunInputs) -> str:
    """Log evaluation metrics and their context, the metrics JSON, the sample grid and the pyfunc model; return
    the model URI."""
    return log_model(cfg, run_id, evaluation, package_dir, inputs)


RETRAIN_STEPS = CandidateSteps(train=train_generator, evaluate=evaluate_generator, log=log_candidate,
                               named=named_step)
"""The candidate routine (flows.candidate.train_candidate) as the retrain runs it: each step a Prefect task with
its retries, named for failure reports."""


# ----------------------------------------------------------------------------- registry
@task(name="register", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def register(registry: Registry, model_uri: str, run_id: str, metrics: dict[str, Any], tags: dict[str, str],
             context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register the candidate as a new model version carrying lineage tags, metrics and their context."""
    from flows.registry import register_candidate

    return register_candidate(registry, model_uri=model_uri, run_id=run_id, metrics=metrics, tags=tags,
                              context=context)


@task(name="promote", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def promote(registry: Registry, version: str) -> dict[str, Any]:
    """Apply the gate under the promotion lock and, when it passes, move the champion alias to the version (one
    alias update: nothing is half-promoted)."""
    from flows.registry import promote as gate_and_promote

    return gate_and_promote(registry, version)


@task(name="gate", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def gate_for_approval(registry: Registry, version: str, flow_run_id: str) -> dict[str, Any]:
    """registry.approval: manual — apply the gate under the promotion lock without moving @champion; a passing
    version is recorded as waiting for approval by this flow run."""
    from flows.registry.approval import gate_for_approval as gate_and_wait

    return gate_and_wait(registry, version, flow_run_id)


@task(name="answer", cache_policy=NO_CACHE)
def carry_out_answer(registry: Registry, version: str, approve: bool | None, reason: str) -> dict[str, Any]:
    """A person's answer (approve None: nobody answered in time): promote over the champion the version was gated
    against, or reject it; the answer is recorded on the version. Not retried: an approval is carried out once."""
    from flows.registry.approval import answer, time_out

    if approve is None:
        return time_out(registry, version, registry.cfg.registry.approval_timeout)
    return answer(registry, version, approve, reason)
