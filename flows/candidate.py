"""One candidate, one routine: open its MLflow run → train (through torchrun when distributed) → evaluate → log the
evaluation and the model. The retrain flow's candidate and every sweep trial go through here, so they train alike:
a sweep trial with train.nproc_per_node=2 trains with two processes, as a retrain does.

    inputs = run_inputs(registry, data)      # once per flow run: the registry handle, the data version, the device
    candidate = train_candidate(cfg, inputs, key=training_key(cfg, data["data_version"]))
    candidate.run_id, candidate.evaluation.metrics, candidate.model_uri, candidate.lineage

What a flow run computes once is handed forward in RunInputs: the registry handle (so the store is opened once),
the prepared data's version (hashed once, by the flow's version_data step: the trainer, the lineage tags and the
evaluation take it from here) and the device type the lineage names.

How each step runs is the caller's (CandidateSteps): the retrain runs them as its Prefect tasks, each under a named
step (flows.failures) with its own retries; a sweep trial runs the plain functions below in its worker. A training
in this process runs the caller's callbacks (a sweep trial's pruning) beside the MLflow callback; a distributed one
runs in torchrun's processes, whose rank 0 logs into the run itself, so it takes none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gan_core.config import Config

if TYPE_CHECKING:  # torch and MLflow's fluent API load when a candidate trains, not when a flow is imported
    import mlflow

    from flows.registry import Registry
    from gan_core.evaluation.evaluate import Evaluation
    from gan_core.training.callbacks import TrainCallback
    from gan_core.training.loop import TrainResult

@dataclass(frozen=True)
class RunInputs:
    """What a flow run computes once and hands to each of its candidates."""

    registry: Registry
    data_version: Mapping[str, str]
    """{"data_version", "data_version_source"}, as gan_core.data.version.data_version_info returns them."""

    @functools.cached_property
    def device(self) -> str:
        """The device type train.device resolves to (cuda | mps | cpu), as the lineage tags name it; picked on
        first use, inside the step that needs it (a device that is not there fails that step)."""
        from gan_core.device import pick_device

        return pick_device(self.registry.cfg.train.device).type


def run_inputs(registry: Registry, data: Mapping[str, Any]) -> RunInputs:
    """The RunInputs of a flow run from its version_data step's result; the registry handle is told the data
    version too (the gate compares a champion's measurement with it)."""
    registry.hand_data_version(data)
    return RunInputs(registry, registry.data_version() or {})


@dataclass(frozen=True)
class Candidate:
    """A trained, evaluated and logged candidate."""

    run_id: str
    run_name: str
    experiment_id: str
    trained: TrainResult
    evaluation: Evaluation
    model_uri: str
    lineage: dict[str, str]
    """The lineage tags its run carries (gan_core.tracking.runs.training_tags); its model version gets them too."""


# ----------------------------------------------------------------------------- the steps
def train_model(cfg: Config, run_id: str, inputs: RunInputs, callbacks: Sequence[TrainCallback] = ()) -> TrainResult:
    """Train per `cfg` into MLflow run `run_id`, resuming the last checkpoint of the same training identity: with
    torchrun when cfg asks for more than one process (train.nproc_per_node, train.nnodes; its rank 0 logs into the
    run), else here, with the MLflow callback and `callbacks`."""
    from gan_core.training.launch import distributed, train_processes

    if distributed(cfg):
        if callbacks:
            raise ValueError("a distributed training runs in torchrun's processes: this process's callbacks cannot "
                             "run there")
        return train_processes(cfg, run_id)
    from gan_core.tracking.runs import MLflowCallback
    from gan_core.training.loop import train

    mlflow_callback = MLflowCallback(run_id, inputs.registry.client())
    return train(cfg, resume=True, callbacks=[mlflow_callback, *callbacks], data_version_info=inputs.data_version)


def evaluate_model(cfg: Config, inputs: RunInputs) -> Evaluation:
    """Evaluate the freshly trained package ({train.out_dir}/generator) against the prepared data."""
    from gan_core.evaluation.evaluate import evaluate

    return evaluate(cfg, data_version_info=inputs.data_version)


def log_model(cfg: Config, run_id: str, evaluation: Evaluation, package_dir: str, inputs: RunInputs) -> str:
    """Log the evaluation (metrics, their context, its files) and the package as the run's pyfunc model; return the
    model's URI."""
    from gan_core.tracking.runs import log_candidate

    inputs.registry.point_fluent_api()  # pyfunc logging reads it
    return log_candidate(cfg, run_id, evaluation.metrics, package_dir, inputs.registry.client(), evaluation.context)


@contextmanager
def unnamed(step: str) -> Iterator[None]:
    """A step that is not named for failure reports (a sweep trial records its failures itself)."""
    yield


@dataclass(frozen=True)
class CandidateSteps:
    """How each step of the routine runs: the plain functions above, or the retrain flow's Prefect tasks of the
    same signatures; `named` wraps each step (flows.failures.named_step in the retrain)."""

    train: Callable[..., TrainResult] = train_model
    evaluate: Callable[..., Evaluation] = evaluate_model
    log: Callable[..., str] = log_model
    named: Callable[[str], AbstractContextManager[Any]] = unnamed


def no_callbacks(run_id: str) -> Sequence[TrainCallback]:
    return ()


# ----------------------------------------------------------------------------- the routine
def train_candidate(
    cfg: Config,
    inputs: RunInputs,
    *,
    key: Mapping[str, str],
    run_name: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
    callbacks: Callable[[str], Sequence[TrainCallback]] = no_callbacks,
    started: Callable[[mlflow.ActiveRun], None] | None = None,
    steps: CandidateSteps = CandidateSteps(),
    param_keys: Sequence[str] = (),
) -> Candidate:
    """Open the candidate's MLflow run (params — gan_core.tracking.runs.run_params, plus `param_keys` —, lineage,
    the training key `key` as tags, `extra_tags`), train, evaluate and log into it; the run ends FAILED when a step
    raises (and the exception goes on).

    `started(run)` is called once the run is open (what the caller records about it, before training);
    `callbacks(run_id)` gives the training's own callbacks (none for a distributed training)."""
    from gan_core.tracking.runs import start_training_run, training_tags

    registry = inputs.registry
    tags = {**{k: v for k, v in key.items() if k != "data_version"}, **(extra_tags or {})}
    with steps.named("train"):
        lineage = training_tags(cfg, data_version_info=inputs.data_version, device=inputs.device)
        with start_training_run(cfg, run_name, tags, client=registry.client(create=True), lineage_tags=lineage,
                                param_keys=param_keys) as run:
            run_id = run.info.run_id
            if started is not None:
                started(run)
            trained = steps.train(cfg, run_id, inputs, list(callbacks(run_id)))
            with steps.named("evaluate"):
                evaluation = steps.evaluate(cfg, inputs)
            with steps.named("log_candidate"):
                model_uri = steps.log(cfg, run_id, evaluation, trained.package_dir, inputs)
    return Candidate(run_id=run_id, run_name=run.info.run_name, experiment_id=run.info.experiment_id,
                     trained=trained, evaluation=evaluation, model_uri=model_uri, lineage=lineage)
