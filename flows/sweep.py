"""`ganops sweep`: search hyperparameters with Optuna, then send the best generator through the retrain flow's gate.

    ganops sweep --space configs/sweeps/dcgan.yaml                     # trials one after another
    ganops sweep --space configs/sweeps/dcgan.yaml --workers 2         # two trials at a time on this machine
    ganops sweep --space configs/sweeps/dcgan.yaml --trials 40 train.steps=1000   # budget, base overrides

    from flows.sweep import sweep
    result = sweep(space="configs/sweeps/dcgan.yaml", trials=3)
    result["status"], result["sweep"]["best_trial"]        # "promoted" | "rejected" | "unchanged", 2

The search space file (flows.search_space) names the settings to vary, the objective (default: gate.primary_metric,
in its metric's direction), the budgets and the pruning. The flow:

1. config: the base config (params + overrides) and the space, checked before any trial runs;
2. version_data, train_classifier: the same tasks as the retrain flow, so every trial sees one data version and one
   lenet feature space;
3. study: an Optuna study in a database (registry.study_storage; by default optuna.db beside a SQLite tracking store;
   a PostgreSQL URL at scale), named by --study (default: the space file's name). Joining an existing study checks
   that it searches the same space toward the same objective on the same data and base config. Its MLflow parent
   run (`sweep-<study>`) is created once and shared by every process that joins;
4. trials: each trial trains one config (the base plus the trial's point) in its own MLflow child run (params,
   curves, sample grids, evaluation, model) through the retrain's own candidate routine (flows.candidate: run →
   train → evaluate → log), evaluating its EMA generator every pruning.every_steps on pruning.num_samples samples:
   Optuna's median rule stops trials that are worse than the earlier ones at the same step (the child run ends
   KILLED, tagged sweep.state=pruned). A trial that fails (diverges, a config combination the validator refuses) is
   recorded as failed, with its reason, and the sweep goes on. `--workers N` runs N worker processes on this
   machine; other hosts join the same study with the same command (and the same storage);
5. register, promote: the study's best trial (over every process) becomes a model version and goes through the
   same gate as a retrain's candidate; the parent run gets the results table and plots, and the flow run a markdown
   summary.

Distributed trials. With train.nproc_per_node > 1 (or train.nnodes > 1) in the base config, every trial trains
as a retrain's candidate does: torchrun's processes, rank 0 logging into the trial's run. The EMA generator then
lives in those processes, out of the pruner's reach, so a distributed trial is judged at its end only: it reports
no intermediate value and the median rule never stops it (pruning.* applies to single-process trials).

Budgets. `trials` counts the study's finished trials (completed, pruned, failed), plus those running, over every
process: each process stops starting trials once it is reached, so a resumed sweep runs what is left.
`timeout_s` bounds one process: it starts no trial after that many seconds. A trial whose process died is retried
with the same point: interrupted (Ctrl-C) trials when a sweep on the study starts next, killed ones once their
heartbeat is older than HEARTBEAT_GRACE_S. A trial's outputs live in outputs/sweep/<study>/<training hash>, so a
retried point resumes its checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.candidate import RunInputs, run_inputs, train_candidate
from flows.failures import RetrainFailed, named_step
from flows.search_space import SearchSpace, direction, load_space, suggest
from gan_core.config import DEFAULT_PARAMS, Config, load_config, parse_overrides
from gan_core.errors import ServiceUnavailable, UserError, first_line
from gan_core.training.callbacks import TrainCallback

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient
    from torch import nn

    from flows.registry import Registry

__all__ = ["sweep", "study_storage", "run_trials", "SweepPlan"]

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 30
HEARTBEAT_GRACE_S = 120
"""A running trial whose process has not written a heartbeat for this long is failed, and its point retried."""
SWEEP_ROOT = "outputs/sweep"
OPTUNA_DB = "optuna.db"
ERROR_ATTR = "error"  # trial user attribute: why a trial failed (absent: it was interrupted, and is retried)
RETRY_ATTR = "retry_of"
PRUNED_ATTR = "pruned_because"
PARENT_ATTR = "mlflow_parent_run_id"
FINGERPRINT_ATTR = "fingerprint"
STATE_TAG = "sweep.state"


@dataclass(frozen=True)
class SweepPlan:
    """What a worker process needs to run trials of one study (plain data: it crosses a process spawn)."""

    params: str
    overrides: dict[str, Any]
    space_path: str
    study: str
    storage: str
    trials: int | None
    timeout_s: float | None
    data_version: str
    data_version_source: str
    parent_run_id: str
    seed: int
    out_dir: str


# ----------------------------------------------------------------------------- the study
def study_storage(registry: Registry | Config, storage: str | None = None) -> str:
    """The study database: `storage`, else registry.study_storage, else optuna.db beside a SQLite tracking store."""
    from flows.registry import Registry
    from gan_core.tracking.store import sqlite_path

    registry = Registry.of(registry)
    chosen = storage or registry.cfg.registry.study_storage
    if chosen:
        if chosen.startswith("sqlite:///") and not Path(chosen.removeprefix("sqlite:///")).is_absolute():
            chosen = f"sqlite:///{Path.cwd() / chosen.removeprefix('sqlite:///')}"
        return chosen
    uri = registry.uri
    db = sqlite_path(uri)
    if db is None:
        raise UserError(f"the tracking store {uri} is not a SQLite file, so there is no default place for the sweep's "
                        "Optuna study: set registry.study_storage (or --storage) to a database every sweep host "
                        "reaches, e.g. postgresql://user@db-host/optuna")
    return f"sqlite:///{db.parent / OPTUNA_DB}"


def shown_url(url: str) -> str:
    """A database URL with its password masked, for logs, params and errors."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: the storage step names it in its own error
        return url


def _rdb_storage(url: str, step: str) -> optuna.storages.RDBStorage:
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if url.startswith("postgresql"):
        connect_args: dict[str, Any] = {"connect_timeout": 10}  # a dead host fails in seconds, not the OS's minutes
    elif url.startswith("sqlite"):
        connect_args = {"timeout": 60}  # several worker processes write one file: wait for its lock
    else:
        connect_args = {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Heartbeats have been "experimental" since Optuna 2.8; they are what retries a killed worker's trial.
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(url, engine_kwargs={"connect_args": connect_args},
                              heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=HEARTBEAT_GRACE_S,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    except ImportError as e:
        raise UserError(f"study storage {shown_url(url)}: its database driver is not installed ({e.name})") from None
    except Exception as e:
        raise ServiceUnavailable("Optuna study storage", shown_url(url), step, reason=first_line(e),
                                 hint="check registry.study_storage / --storage") from None


def fingerprint(space: SearchSpace, cfg: Config, data_version: str) -> dict[str, Any]:
    """What makes trials of one study comparable: the space, the objective, the data and every base setting that
    shapes the weights or the metrics. Budgets and pruning may change between the processes of a study."""
    from gan_core.training.identity import evaluation_settings, training_identity

    config = cfg.model_dump(mode="json")
    return {
        "objective": space.objective_for(cfg),
        "params": {k: v.model_dump(mode="json") for k, v in space.params.items()},
        "data_version": data_version,
        "base": training_identity(config, data_version, code=""),
        "eval": evaluation_settings(config),
    }


def open_study(plan: SweepPlan, cfg: Config, space: SearchSpace, worker: int = 0, step: str = "study") -> optuna.Study:
    """Load (or create) the plan's study and check that it searches what this process would."""
    import optuna

    storage = _rdb_storage(plan.storage, step)
    objective = space.objective_for(cfg)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=space.pruning.startup_trials,
                                          n_warmup_steps=space.pruning.warmup_steps)
              if space.pruning.enabled else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=plan.study, direction=direction(objective),
                                load_if_exists=True, pruner=pruner)
    # A resumed or joining process must not draw the points its predecessors drew first: offset the seed.
    study.sampler = optuna.samplers.TPESampler(seed=plan.seed + 1000 * worker + len(study.trials))
    mine = fingerprint(space, cfg, plan.data_version)
    recorded = study.user_attrs.get(FINGERPRINT_ATTR)
    if recorded is None:
        study.set_user_attr(FINGERPRINT_ATTR, mine)
    elif recorded != mine:
        from gan_core.training.identity import first_difference

        raise UserError(f"study {plan.study!r} in {shown_url(plan.storage)} searched with other settings "
                        f"({first_difference(recorded, mine)}): continue it with the same space, data and "
                        "config, or start another with --study NEW")
    return study


def parent_run(study: optuna.Study, cfg: Config, space: SearchSpace, plan_storage: str, space_path: str,
               client: MlflowClient, tags: dict[str, str]) -> str:
    """The study's MLflow parent run: created by the first process, reopened (RUNNING) by the next ones."""
    from mlflow.entities import Param

    from gan_core.tracking.store import experiment_id

    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            client.update_run(run_id, status="RUNNING")
            return run_id
        except Exception:  # the study outlived its store (another tracking URI): start a parent run here
            log.warning("the study's parent run %s is not in this store: starting a new one", run_id)
    objective = space.objective_for(cfg)
    run = client.create_run(experiment_id(cfg.registry, client), run_name=f"sweep-{study.study_name}",
                            tags={"sweep.study": study.study_name, "sweep.role": "parent", **tags})
    run_id = run.info.run_id
    params = [Param("sweep.objective", objective), Param("sweep.direction", direction(objective)),
              Param("sweep.storage", shown_url(plan_storage)), Param("sweep.study", study.study_name),
              *[Param(f"space.{k}", d.describe()) for k, d in space.params.items()]]
    client.log_batch(run_id, params=params, synchronous=True)
    client.log_artifact(run_id, space_path, "sweep")
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


# ----------------------------------------------------------------------------- trials
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
                 f" (retry of {retried})" if retried is not None else "", _point_text(point), run_id)

    def pruning(run_id: str) -> list[TrainCallback]:
        # A distributed trial trains in torchrun's processes, out of this one's reach: it is judged at its end only.
        return [] if distributed(cfg) else [PruneHopeless(trial, cfg, space, out, client, run_id, inputs.data_version)]

    try:
        candidate = train_candidate(cfg, inputs, key=key, run_name=f"{plan.study}-trial-{trial.number}",
                                    extra_tags=tags, callbacks=pruning, started=started)
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


def _point_text(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in point.items())


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if not isinstance(v, str) else v


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
    for name in ("gan_core", __name__):
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


# ----------------------------------------------------------------------------- results
def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, objective value, seconds, the point, the MLflow run, why it failed."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start \
            else None
        # A pruned trial's value in Optuna is its last intermediate one (fewer samples, fewer steps): not a result.
        rows.append({
            "trial": t.number, "state": t.state.name.lower(), "value": t.value if t.state == TrialState.COMPLETE
            else None,
            "seconds": round(seconds, 1) if seconds is not None else None,
            **{k: t.user_attrs.get("point", {}).get(k, v) for k, v in t.params.items()},
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "note": t.user_attrs.get(ERROR_ATTR) or t.user_attrs.get(PRUNED_ATTR) or _retry_note(t),
        })
    return rows


def _retry_note(t: optuna.trial.FrozenTrial) -> str:
    retry_of = t.user_attrs.get(RETRY_ATTR, t.system_attrs.get("failed_trial"))
    if retry_of is not None:
        return f"retry of trial {retry_of}"
    return "interrupted" if t.state.name == "FAIL" else ""


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The completed trial with the best objective (over every process), or None."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    pick = min if study.direction.name == "MINIMIZE" else max
    return pick(complete, key=lambda t: t.value)


def best_first(rows: list[dict[str, Any]], minimize: bool) -> list[dict[str, Any]]:
    """Trial rows ordered by objective, best first; rows without a value (pruned, failed) last."""
    return sorted(rows, key=lambda r: (r["value"] is None, (r["value"] or 0) * (1 if minimize else -1)))


def markdown_table(rows: list[dict[str, Any]], objective: str, order_by_value: bool, minimize: bool) -> str:
    if not rows:
        return "_no trials_"
    columns = [c for c in rows[0] if c != "mlflow_run_id"]
    ordered = best_first(rows, minimize) if order_by_value else rows
    head = "| " + " | ".join(objective if c == "value" else c for c in columns) + " |"
    lines = [head, "|" + "---|" * len(columns)]
    for r in ordered:
        lines.append("| " + " | ".join(_cell(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|")


def log_results(study: optuna.Study, objective_name: str, parent_run_id: str, client: MlflowClient,
                out_dir: Path) -> dict[str, Any]:
    """The results table (CSV, markdown), the optimisation history and parameter importance plots, and summary
    metrics on the parent run. Returns the counts and the importances."""
    from optuna.trial import TrialState

    from gan_core.atomic import write_text

    rows = trial_rows(study)
    minimize = direction(objective_name) == "minimize"
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    write_text(out_dir / "trials.csv", buffer.getvalue())
    write_text(out_dir / "trials.md", markdown_table(rows, objective_name, True, minimize) + "\n")
    counts = {state: sum(1 for r in rows if r["state"] == state) for state in ("complete", "pruned", "fail")}
    importances = param_importances(study)
    _plots(study, objective_name, out_dir, importances)
    for name in ("trials.csv", "trials.md", "optimization_history.png", "param_importances.png"):
        if (out_dir / name).is_file():
            client.log_artifact(parent_run_id, str(out_dir / name), "sweep")
    summary: dict[str, float] = {f"trials_{k}": float(v) for k, v in counts.items()}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        summary[f"best_{objective_name}"] = float(study.best_value)
    from gan_core.tracking.runs import log_metrics

    log_metrics(client, parent_run_id, summary)
    if importances:
        client.log_dict(parent_run_id, importances, "sweep/param_importances.json")
    return {"counts": counts, "importances": importances, "rows": rows}


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's importances of the searched settings for the objective; empty while there are too few completed
    trials to tell (Optuna would return equal shares, which read as a finding)."""
    import warnings

    import optuna

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError):  # no completed trial, or nothing varied
            return {}
    if any("too small" in str(w.message) for w in caught):
        return {}
    return {k: round(float(v), 4) for k, v in found.items()}


def _plots(study: optuna.Study, objective_name: str, out_dir: Path, importances: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and workers
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    from gan_core.atomic import atomic_file

    done = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    minimize = direction(objective_name) == "minimize"
    for state, marker in ((TrialState.COMPLETE, "o"), (TrialState.PRUNED, "x")):
        points = [(t.number, t.value if t.value is not None else t.intermediate_values[max(t.intermediate_values)])
                  for t in done if t.state == state and (t.value is not None or t.intermediate_values)]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker,
                       label=state.name.lower() + (" (last intermediate)" if state == TrialState.PRUNED else ""))
    complete = sorted((t.number, t.value) for t in done if t.state == TrialState.COMPLETE)
    if complete:
        best, line = math.inf if minimize else -math.inf, []
        for number, value in complete:
            best = min(best, value) if minimize else max(best, value)
            line.append((number, best))
        ax.step(*zip(*line, strict=True), where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective_name)
    values = [v for t in done for v in [t.value, *t.intermediate_values.values()] if v is not None]
    if values and min(values) > 0:
        ax.set_yscale("log")  # FIDs span good trials (tens) and pruned noise (hundreds): both stay readable
    ax.set_title(f"study {study.study_name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(out_dir / "optimization_history.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    if importances:
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(importances) + 1.2), dpi=100)
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel(f"importance for {objective_name} (Optuna's default evaluator)")
        fig.tight_layout()
        with atomic_file(out_dir / "param_importances.png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)


def summary_markdown(result: dict[str, Any], table: str, run_link: str | None) -> str:
    s = result["sweep"]
    lines = [f"# Sweep `{s['study']}`", "",
             f"- objective: `{s['objective']}` ({s['direction']}); storage `{s['storage']}`",
             f"- trials: {s['counts']['complete']} complete, {s['counts']['pruned']} pruned, "
             f"{s['counts']['fail']} failed ({s['ran_here']} run by this flow)"]
    if s.get("best_trial") is not None:
        lines.append(f"- best: trial {s['best_trial']}, `{s['objective']}` = {s['best_value']:.4g}: "
                     + _point_text(s["best_point"]))
    if result.get("version"):
        lines.append(f"- registered as version {result['version']}: **{result['status']}**")
        lines += [f"  - {r}" for r in (result.get("gate") or {}).get("reasons", [])]
    if s.get("importances"):
        lines.append("- importances: " + ", ".join(f"`{k}` {v:.2f}" for k, v in s["importances"].items()))
    if run_link:
        lines.append(f"- MLflow parent run: [{s['parent_run_id']}]({run_link})")
    return "\n".join([*lines, "", table, ""])


# ----------------------------------------------------------------------------- the flow
def sweep_run_name() -> str:
    from prefect.runtime import flow_run

    parameters = flow_run.parameters or {}
    name = parameters.get("study") or Path(str(parameters.get("space", "sweep"))).stem
    return f"sweep-{name}"


@flow(name="sweep", flow_run_name=sweep_run_name, validate_parameters=False)
def sweep(
    space: str,
    params: str = str(DEFAULT_PARAMS),
    overrides: dict[str, Any] | list[str] | None = None,
    study: str | None = None,
    trials: int | None = None,
    timeout_s: float | None = None,
    workers: int = 1,
    storage: str | None = None,
) -> dict[str, Any]:
    """Search the space (trials in MLflow child runs, hopeless ones pruned), then register the study's best trial
    and apply the gate. Returns {"status": "promoted" | "rejected" | "unchanged", "version", "metrics", "gate",
    "sweep": {...}}. Raises RetrainFailed naming the step that failed."""
    from flows.dvc_pipeline import dvc_stage_applies
    from flows.registry import Registry
    from flows.retrain import prefect_run_tags
    from flows.tasks import promote, train_classifier, version_data
    from gan_core.tracking.store import check_tracking

    logger = get_run_logger()
    result: dict[str, Any] = {"params": str(params)}
    try:
        with named_step("config"):
            parsed = parse_overrides(overrides)
            cfg = load_config(params, parsed)
            check_sweep_args(trials, timeout_s, workers)
            registry = Registry(cfg, check_tracking(cfg.registry, "config", write=True))  # this run's one handle
            registry.point_fluent_api()
            searched = load_space(space, cfg, params, parsed)
            name = study or Path(space).stem
            store_url = study_storage(registry, storage)
        result["model_name"] = cfg.registry.model_name
        with named_step("version_data"):
            data = version_data(cfg, dvc_stage_applies(cfg, params, parsed))
        inputs = run_inputs(registry, data)  # hashed once, above: every trial (and worker) is handed it
        with named_step("train_classifier"):
            train_classifier(cfg, data["data_version"])
        with named_step("study"):
            client = registry.client(create=True)
            plan = SweepPlan(params=str(params), overrides=parsed, space_path=str(space), study=name,
                             storage=store_url, trials=trials or searched.trials,
                             timeout_s=timeout_s or searched.timeout_s, data_version=data["data_version"],
                             data_version_source=data["data_version_source"], parent_run_id="",
                             seed=cfg.train.seed, out_dir=f"{SWEEP_ROOT}/{name}")
            check_budget(plan.trials, plan.timeout_s)
            opened = open_study(plan, cfg, searched)
            parent = parent_run(opened, cfg, searched, store_url, str(space), client, prefect_run_tags())
            plan = SweepPlan(**{**asdict(plan), "parent_run_id": parent})
        objective_name = searched.objective_for(cfg)
        logger.info("study %s (%s): %s %s over %s; budget %s trials%s", name, shown_url(store_url),
                    direction(objective_name), objective_name, ", ".join(searched.params), plan.trials,
                    f", {plan.timeout_s:g} s" if plan.timeout_s else "")
        with named_step("trials"):
            ran = trials_task(plan, workers, inputs)
        with named_step("results"):
            import optuna

            finished = optuna.load_study(study_name=name, storage=_rdb_storage(store_url, "results"))
            logged = log_results(finished, objective_name, parent, client, Path(plan.out_dir) / "results")
            best = best_trial(finished)
        result["sweep"] = {
            "study": name, "storage": shown_url(store_url), "objective": objective_name,
            "direction": direction(objective_name), "parent_run_id": parent, "ran_here": ran,
            "counts": logged["counts"], "importances": logged["importances"], "trials": logged["rows"],
            "best_trial": best.number if best else None, "best_value": best.value if best else None,
            "best_point": best.user_attrs.get("point") if best else None,
        }
        if best is None:
            client.set_terminated(parent, "FAILED")
            raise RetrainFailed("results", UserError(
                f"no trial of study {name!r} completed ({logged['counts']['pruned']} pruned, "
                f"{logged['counts']['fail']} failed): see the trials' notes in `ganops sweep`'s table or the "
                "MLflow child runs"))
        client.set_tag(parent, "sweep.best_trial", str(best.number))
        client.set_tag(parent, "sweep.best_run_id", best.user_attrs["mlflow_run_id"])
        with named_step("register"):
            version = register_best(inputs, plan, best, parent)
        result.update(version=version["version"], run_id=best.user_attrs["mlflow_run_id"],
                      metrics=best.user_attrs.get("metrics", {}), data_version=data["data_version"])
        with named_step("promote"):
            outcome = promote(registry, version["version"])
        result["gate"] = {k: outcome[k] for k in ("passed", "reasons", "checks", "champion_metrics")}
        result["status"] = ("promoted" if outcome["promoted"] else
                            "unchanged" if outcome["decision"] == "unchanged" else "rejected")
        client.set_terminated(parent, "FINISHED")
        logger.info("best trial %d (%s = %.4g) is version %s: %s", best.number, objective_name, best.value,
                    version["version"], result["status"])
        _publish(registry, result, logged, searched, objective_name)
        return result
    except RetrainFailed as failure:
        logger.error("sweep %s", failure)
        raise


def register_best(inputs: RunInputs, plan: SweepPlan, best: optuna.trial.FrozenTrial, parent: str) -> dict[str, Any]:
    """The best trial's logged model as a version, with the same lineage tags as a retrain's candidate plus the
    study and trial (registering a trial twice returns its version)."""
    from flows.tasks import register
    from gan_core.tracking.runs import training_tags

    trial_cfg, key, _ = trial_config(plan, best.user_attrs["point"])
    lineage = training_tags(trial_cfg, data_version_info=inputs.data_version, device=inputs.device)
    tags = {**lineage, **key, "sweep.study": plan.study, "sweep.trial": str(best.number),
            "sweep.parent_run_id": parent}
    return register(inputs.registry, best.user_attrs["model_uri"], best.user_attrs["mlflow_run_id"],
                    best.user_attrs.get("metrics", {}), tags, best.user_attrs.get("eval_context"))


def check_budget(trials: int | None, timeout_s: float | None) -> None:
    if trials is None and timeout_s is None:
        raise UserError("the sweep has no budget: give trials (--trials, or `trials:` in the space file) or "
                        "timeout_s (--timeout)")


def check_sweep_args(trials: int | None, timeout_s: float | None, workers: int) -> None:
    if trials is not None and trials < 1:
        raise UserError(f"--trials {trials}: expected a number of trials >= 1")
    if timeout_s is not None and not timeout_s > 0:
        raise UserError(f"--timeout {timeout_s}: expected seconds > 0")
    if workers < 1:
        raise UserError(f"--workers {workers}: expected a number of processes >= 1")


def _publish(registry: Registry, result: dict[str, Any], logged: dict[str, Any], space: SearchSpace,
             objective_name: str) -> None:
    """The flow run's markdown summary; failing to write it must not fail a finished sweep."""
    from flows.report import run_url

    try:
        from prefect.artifacts import create_markdown_artifact

        from gan_core.tracking.store import experiment_id

        table = markdown_table(logged["rows"], objective_name, True, direction(objective_name) == "minimize")
        cfg = registry.cfg
        link = run_url(cfg, experiment_id(cfg.registry, registry.client()), result["sweep"]["parent_run_id"])
        create_markdown_artifact(summary_markdown(result, table, link), key="sweep-summary",
                                 description=f"sweep {result['sweep']['study']}")
    except Exception as e:
        get_run_logger().warning("could not publish the sweep report: %s: %s", type(e).__name__, e)
