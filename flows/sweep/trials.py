"""A sweep's trials: each trains one point of the space through the candidate routine (flows.candidate, as a
retrain's candidate), in an MLflow child run of the study's parent run; hopeless ones are pruned, failing ones are
recorded and the sweep goes on.

    ran = run_trials(plan)                 # trials of the plan's study until its budget (or this process's timeout)
    trials_task(plan, workers=2, inputs)   # the flow's task: here, or in spawned worker processes

Pruning: every pruning.every_steps a single-process trial's EMA generator is evaluated on pruning.num_samples
samples (PruneHopeless) and Optuna's median rule may stop it. A distributed trial (train.nproc_per_node > 1,
train.nnodes > 1) trains in torchrun's processes, out of this one's reach: it is judged at its end only.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.candidate import RunInputs, run_inputs, train_candidate
from flows.sweep.space import SearchSpace, load_space, point_text, suggest
from flows.sweep.study import ERROR_ATTR, PRUNED_ATTR, RETRY_ATTR, STATE_TAG, SweepPlan, open_study
from gan_core.config import Config, load_config
from gan_core.errors import UserError, first_line
from gan_core.training.callbacks import TrainCallback

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient
    from torch import nn

log = logging.getLogger(__name__)


class PruneHopeless(TrainCallback):
    """Every pruning.every_steps (at the next sample grid): evaluate the EMA generator on pruning.num_samples
    samples, report the objective to Optuna and stop the training when the pruner says so."""

    def __init__(self, trial: optuna.Trial, cfg: Config, space: SearchSpace, out_dir: Path,
                 client: MlflowClient, run_id: str, data_version_info: Mapping[str, str] | None = None) -> None:
        self.trial, self.cfg, self.space, self.out_dir = trial, cfg, space, out_dir
        self.client, self.run_id, self.data_version_info = client, run_id, data_version_info
        self.objective = space.objective_for(cfg)
        self.next_step = space.pruning.every_steps

    def on_generator(self, step: int, generator: nn.Module) -> None:
        import optuna

        from gan_core.evaluation.evaluate import evaluate
        from gan_core.tracking.runs import log_metrics

        if step < self.next_step or step >= self.cfg.train.steps:  # the last step gets the full evaluation
            return
        every = self.space.pruning.every_steps
        self.next_step = (step // every + 1) * every
        device = str(next(generator.parameters()).device)  # evaluate where it trains: never move the EMA module
        ecfg = self.cfg.model_copy(update={"eval": self.cfg.eval.model_copy(update={
            "num_samples": self.space.pruning.num_samples, "out_dir": str(self.out_dir / "prune"),
            "device": device})})
        evaluation = evaluate(ecfg, generator, data_version_info=self.data_version_info)
        value = evaluation.metrics.get(self.objective, math.nan)
        log_metrics(self.client, self.run_id, {f"sweep_{self.objective}": value}, step=step)
        if not math.isfinite(value):
            raise UserError(f"{self.objective} is {value} at step {step}")
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"step {step}: {self.objective} {value:.4g}{self._median_text(step)}")

    def _median_text(self, step: int) -> str:
        """` > median 74.6`: the earlier trials' median there, which the median rule compares with."""
        import statistics

        from optuna.trial import TrialState

        earlier = [t.intermediate_values[step] for t in self.trial.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)) if step in t.intermediate_values]
        return f" > median {statistics.median(earlier):.4g}" if earlier else ""


def trial_config(plan: SweepPlan, point: dict[str, Any]) -> tuple[Config, dict[str, str], Path]:
    """The trial's config (base + point, outputs under outputs/sweep/<study>/<training hash>), key and directory."""
    from gan_core.tracking.runs import TRAINING_HASH_TAG, training_key

    merged = {**plan.overrides, **point}
    key = training_key(load_config(plan.params, merged), plan.data_version)
    out = Path(plan.out_dir) / key[TRAINING_HASH_TAG]
    cfg = load_config(plan.params, {**merged, "train.out_dir": str(out / "train"), "eval.out_dir": str(out / "eval")})
    return cfg, key, out


def objective(trial: optuna.Trial, plan: SweepPlan, base: Config, space: SearchSpace, inputs: RunInputs) -> float:
    """Train, evaluate and log one point of the space (flows.candidate's routine, as a retrain's candidate);
    return its objective value."""
    import optuna

    from gan_core.training.launch import distributed

    metric = space.objective_for(base)
    retried = trial.user_attrs.get(RETRY_ATTR)
    point = suggest(trial, space)
    trial.set_user_attr("point", point)
    try:
        cfg, key, out = trial_config(plan, point)
    except UserError as e:  # a combination the validator refuses (each value alone was checked up front)
        return _failed(trial, f"config: {first_line(e)}")
    tags = {"mlflow.parentRunId": plan.parent_run_id, "sweep.study": plan.study, "sweep.trial": str(trial.number)}
    started_at = time.monotonic()
    client = inputs.registry.client(create=True)
    run_id = ""

    def started(run: Any) -> None:
        nonlocal run_id
        run_id = run.info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr("key", key)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        log.info("trial %d%s: %s (MLflow run %s)", trial.number,
                 f" (retry of {retried})" if retried is not None else "", point_text(point), run_id)

    def pruning(run_id: str) -> list[TrainCallback]:
        # A distributed trial trains in torchrun's processes, out of this one's reach: it is judged at its end only.
        return [] if distributed(cfg) else [PruneHopeless(trial, cfg, space, out, client, run_id, inputs.data_version)]

    try:
        candidate = train_candidate(cfg, inputs, key=key, run_name=f"{plan.study}-trial-{trial.number}",
                                    extra_tags=tags, callbacks=pruning, started=started, param_keys=list(space.params))
    except optuna.TrialPruned as pruned:
        client.set_tag(run_id, "sweep.pruned_because", str(pruned))
        trial.set_user_attr(PRUNED_ATTR, str(pruned))
        client.set_terminated(run_id, "KILLED")  # pruned is not failed: the UI shows it stopped, not broken
        client.set_tag(run_id, STATE_TAG, "pruned")
        log.info("trial %d pruned after %.0f s: %s", trial.number, time.monotonic() - started_at, pruned)
        raise
    except Exception as e:
        from gan_core.errors import find_user_error

        if run_id:
            client.set_tag(run_id, STATE_TAG, "failed")
        user = find_user_error(e)
        why = first_line(user) if user is not None else f"{type(e).__name__}: {first_line(e)}"
        if user is None:
            log.debug("trial %d: unexpected error", trial.number, exc_info=True)
        return _failed(trial, why)
    metrics, model_uri = candidate.evaluation.metrics, candidate.model_uri
    trial.set_user_attr("eval_context", candidate.evaluation.context)  # the gate compares in it (registry)
    value = metrics.get(metric, math.nan)
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    trial.set_user_attr("metrics", {k: v for k, v in numbers.items() if math.isfinite(v)})
    trial.set_user_attr("model_uri", model_uri)
    client.set_tag(run_id, STATE_TAG, "complete")
    if not math.isfinite(value):
        return _failed(trial, f"{metric} is {value}")
    log.info("trial %d: %s = %.4g in %.0f s", trial.number, metric, value, time.monotonic() - started_at)
    return float(value)


def _failed(trial: optuna.Trial, why: str) -> float:
    """Record why, and fail the trial the quiet way: Optuna fails a NaN result on one line, where a raised error
    would be logged with its traceback (a failing trial is an expected outcome of a sweep)."""
    trial.set_user_attr(ERROR_ATTR, why)
    log.warning("trial %d failed: %s", trial.number, why)
    return math.nan


def counted(study: optuna.Study) -> int:
    """Trials that use the budget: finished ones (complete, pruned, failed with a reason) and running ones."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and ERROR_ATTR in t.user_attrs:
            n += 1
    return n


def requeue_interrupted(study: optuna.Study) -> None:
    """Enqueue once more the point of each trial that failed without a reason (its process was interrupted)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    # "failed_trial": where Optuna's heartbeat retry (RetryHeartbeatStaleTrialCallback) records what it re-enqueued.
    retried = {t.user_attrs.get(RETRY_ATTR) for t in trials} | {t.system_attrs.get("failed_trial") for t in trials}
    for t in trials:
        if t.state == TrialState.FAIL and ERROR_ATTR not in t.user_attrs and t.number not in retried and t.params:
            study.enqueue_trial(t.params, user_attrs={RETRY_ATTR: t.number})


def run_trials(plan: SweepPlan, worker: int = 0, threads: int | None = None, inputs: RunInputs | None = None) -> int:
    """Run trials of the plan's study until its budget is used (or this process's timeout); return how many ran
    here. The same function runs in the flow's process (with the flow's RunInputs: its registry handle and data
    version) and in each `--workers` process, which builds its own from the plan (a client does not cross a
    process spawn; the data version does, in the plan, so no worker hashes the data again)."""
    from flows.registry import Registry

    if threads:
        import torch

        torch.set_num_threads(threads)
    base = load_config(plan.params, plan.overrides)
    space = load_space(plan.space_path, base, plan.params, plan.overrides)
    if inputs is None:
        registry = Registry(base)
        registry.client()
        registry.point_fluent_api()
        inputs = run_inputs(registry, {"data_version": plan.data_version,
                                       "data_version_source": plan.data_version_source})
    study = open_study(plan, base, space, worker)
    deadline = time.monotonic() + plan.timeout_s if plan.timeout_s else math.inf
    ran = 0
    while (plan.trials is None or counted(study) < plan.trials) and time.monotonic() < deadline:
        requeue_interrupted(study)
        study.optimize(lambda trial: objective(trial, plan, base, space, inputs), n_trials=1)
        ran += 1
    return ran


def _worker(plan: SweepPlan, worker: int, threads: int) -> int:
    """Entry point of a `--workers` process (spawned): log lines prefixed with the worker's number."""
    logging.basicConfig(level=logging.WARNING, format=f"[worker {worker}] %(message)s")
    for name in ("gan_core", "flows.sweep"):
        logging.getLogger(name).setLevel(logging.INFO)
    return run_trials(plan, worker, threads)


@task(name="trials", cache_policy=NO_CACHE)
def trials_task(plan: SweepPlan, workers: int, inputs: RunInputs) -> int:
    """Run the trials here (one worker) or in `workers` spawned processes sharing the cores; return how many ran."""
    if workers == 1:
        return run_trials(plan, inputs=inputs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_worker, plan, i, threads) for i in range(workers)]
        return sum(f.result() for f in futures)
