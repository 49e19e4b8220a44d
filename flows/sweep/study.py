"""A sweep's study: where it lives (an Optuna study in a database), what a process needs to join it (SweepPlan),
what makes its trials comparable (the fingerprint every joining process must match), its MLflow parent run, and
the attributes its trials carry.

    storage = study_storage(registry)            # registry.study_storage, else optuna.db beside a SQLite store
    study = open_study(plan, cfg, space)         # loaded or created, checked against the plan's fingerprint
    parent = parent_run(study, cfg, space, storage, space_path, client, tags)   # created once, reopened after
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.sweep.space import SearchSpace, direction
from gan_core.config import Config
from gan_core.errors import ServiceUnavailable, UserError, first_line
from gan_core.redact import clean_url

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient

    from flows.registry import Registry

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
    """A database URL without its credentials (gan_core.redact), for logs, params, tables and errors."""
    return clean_url(url)


def rdb_storage(url: str, step: str) -> optuna.storages.RDBStorage:
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

    storage = rdb_storage(plan.storage, step)
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

    from gan_core.tracking.runs import training_experiment

    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            client.update_run(run_id, status="RUNNING")
            return run_id
        except Exception:  # the study outlived its store (another tracking URI): start a parent run here
            log.warning("the study's parent run %s is not in this store: starting a new one", run_id)
    objective = space.objective_for(cfg)
    run = client.create_run(training_experiment(cfg, client), run_name=f"sweep-{study.study_name}",
                            tags={"sweep.study": study.study_name, "sweep.role": "parent", **tags})
    run_id = run.info.run_id
    params = [Param("sweep.objective", objective), Param("sweep.direction", direction(objective)),
              Param("sweep.storage", shown_url(plan_storage)), Param("sweep.study", study.study_name),
              *[Param(f"space.{k}", d.describe()) for k, d in space.params.items()]]
    client.log_batch(run_id, params=params, synchronous=True)
    client.log_artifact(run_id, space_path, "sweep")
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id
