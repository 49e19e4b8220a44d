"""The sweep flow: config → version_data, train_extractors → study → trials → results → register, promote.

    from flows.sweep import sweep
    result = sweep(space="configs/sweeps/dcgan.yaml", trials=3)
    result["status"], result["sweep"]["best_trial"]        # "promoted" | "rejected" | "unchanged", 2

The Prefect deployment's entrypoint (prefect.yaml: `flows/sweep/flow.py:sweep`). What each step does: flows.sweep.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger

from flows.candidate import RunInputs, run_inputs
from flows.failures import RetrainFailed, named_step
from flows.run_log import send_library_logs_to_runs
from flows.states import final_state
from flows.sweep.results import best_trial, log_results, markdown_table, summary_markdown
from flows.sweep.space import SearchSpace, direction, load_space
from flows.sweep.study import SWEEP_ROOT, SweepPlan, open_study, parent_run, rdb_storage, shown_url, study_storage
from flows.sweep.trials import trial_config, trials_task
from gan_core.config import DEFAULT_PARAMS, Config, load_config, parse_overrides
from gan_core.errors import UserError
from gan_core.redact import redact

if TYPE_CHECKING:
    import optuna

    from flows.registry import Registry

__all__ = ["sweep", "check_budget", "check_sweep_args"]


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
    from flows.approval import check_approval_possible
    from flows.dvc_pipeline import dvc_stage_applies
    from flows.registry import Registry
    from flows.registry.descriptions import version_url
    from flows.retrain import (
        gate_then_promote,
        prefect_flow_run_url,
        prefect_markdown,
        prefect_run_id,
        prefect_run_tags,
        tell,
    )
    from flows.tasks import train_extractors, version_data
    from gan_core.tracking.runs import run_note
    from gan_core.tracking.store import NOTE_TAG, check_tracking

    logger = get_run_logger()
    send_library_logs_to_runs()  # training progress in the flow-run log
    result: dict[str, Any] = {"params": str(params)}
    cfg: Config | None = None
    try:
        with named_step("config"):
            parsed = parse_overrides(overrides)
            cfg = load_config(params, parsed)
            check_approval_possible(cfg)
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
        with named_step("train_extractors"):
            train_extractors(cfg, data["data_version"])
        with named_step("study"):
            client = registry.client(create=True)
            plan = SweepPlan(params=str(params), overrides=parsed, space_path=str(space), study=name,
                             storage=store_url, trials=trials or searched.trials,
                             timeout_s=timeout_s or searched.timeout_s, data_version=data["data_version"],
                             data_version_source=data["data_version_source"], parent_run_id="",
                             seed=cfg.train.seed, out_dir=f"{SWEEP_ROOT}/{name}")
            check_budget(plan.trials, plan.timeout_s)
            opened = open_study(plan, cfg, searched)
            prefect = prefect_run_tags()
            note = run_note(f"Sweep `{name}`: {plan.trials or 'unbounded'} trials over "
                            f"{', '.join(f'`{k}`' for k in searched.params)}; each trial is a child run.",
                            prefect_markdown(prefect))
            parent = parent_run(opened, cfg, searched, store_url, str(space), client, {**prefect, NOTE_TAG: note})
            plan = SweepPlan(**{**asdict(plan), "parent_run_id": parent})
        objective_name = searched.objective_for(cfg)
        logger.info("study %s (%s): %s %s over %s; budget %s trials%s", name, shown_url(store_url),
                    direction(objective_name), objective_name, ", ".join(searched.params), plan.trials,
                    f", {plan.timeout_s:g} s" if plan.timeout_s else "")
        with named_step("trials"):
            ran = trials_task(plan, workers, inputs)
        with named_step("results"):
            import optuna

            finished = optuna.load_study(study_name=name, storage=rdb_storage(store_url, "results"))
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
            version = register_best(inputs, plan, best)
        result.update(version=version["version"], run_id=best.user_attrs["mlflow_run_id"],
                      metrics=best.user_attrs.get("metrics", {}), data_version=data["data_version"])
        # The gate and the promotion as a retrain's (registry.approval: manual waits for a person here).
        outcome = gate_then_promote(registry, result)
        result["status"] = ("promoted" if outcome["promoted"] else
                            "unchanged" if outcome["decision"] == "unchanged" else "rejected")
        if outcome.get("reject_reason"):
            result["reason"] = outcome["reject_reason"]
        client.set_terminated(parent, "FINISHED")
        logger.info("best trial %d (%s = %.4g) is version %s: %s", best.number, objective_name, best.value,
                    version["version"], result["status"])
        _publish(registry, result, logged, searched, objective_name)
        if result["status"] != "unchanged":
            tell(cfg, result["status"], {**result, "primary_metric": cfg.gate.primary_metric,
                                         "previous_champion": outcome.get("previous_champion")},
                 version_url(registry, version["version"]) or prefect_flow_run_url(prefect_run_id()))
        return final_state(result)  # named "Rejected" in Prefect when the gate rejected the best trial
    except RetrainFailed as failure:
        logger.error("sweep %s", failure)
        if cfg is not None:
            tell(cfg, "failed", {**result, "error": f"sweep: {failure}"}, prefect_flow_run_url(prefect_run_id()))
        raise


def register_best(inputs: RunInputs, plan: SweepPlan, best: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The best trial's logged model as a version, tagged as a retrain's candidate is; its run's tags name the study
    and trial, which the version's description quotes (registering a trial twice returns its version)."""
    from flows.tasks import register
    from gan_core.tracking.runs import training_tags

    trial_cfg, key, _ = trial_config(plan, best.user_attrs["point"])
    lineage = training_tags(trial_cfg, data_version_info=inputs.data_version, device=inputs.device)
    tags = {**lineage, **key}
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
    from gan_core.tracking.store import run_url

    try:
        from prefect.artifacts import create_markdown_artifact

        from gan_core.tracking.runs import training_experiment

        table = markdown_table(logged["rows"], objective_name, True, direction(objective_name) == "minimize")
        cfg = registry.cfg
        link = run_url(cfg.registry, training_experiment(cfg, registry.client()), result["sweep"]["parent_run_id"])
        create_markdown_artifact(redact(summary_markdown(result, table, link)), key="sweep-summary",
                                 description=f"sweep {result['sweep']['study']}")
    except Exception as e:
        get_run_logger().warning("could not publish the sweep report: %s: %s", type(e).__name__, e)
