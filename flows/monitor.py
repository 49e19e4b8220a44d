"""The monitor flow: is the champion still good on the latest data? If not, retrain.

    ganops monitor                          # params.yaml
    ganops monitor data.max_images=4000     # overrides apply to the data check and to the retrain it may start

Steps: prepare/version the latest data (the retrain flow's own task), load `models:/<name>/<champion version>`,
re-evaluate it on that data with the same gan_core.evaluation.evaluate.evaluate the retrain flow uses (into
{eval.out_dir}/monitor, so the last candidate's files stay; flows.registry.evaluate_version, which also caches the
measurement for the gate), and compare its primary metric with the value recorded on the version at registration
— only when both were measured in the same evaluation context (gan_core.evaluation.context), the gate's rule. A retrain
starts (as a subflow) when

  * there is no champion yet,
  * the data version differs from the one the champion was trained on,
  * the evaluation context differs from the one the champion's metrics were recorded in (new data, a retrained
    lenet extractor, another eval.num_samples or seed, ...): its recorded numbers say nothing about drift then, so
    a candidate is measured in the new context and the gate re-evaluates the champion in it, or
  * the primary metric got worse by more than gate.max_drift, relative (0.1 = 10%), in the same context.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.run_log import send_library_logs_to_runs
from gan_core.config import DEFAULT_PARAMS, Config, GateConfig, load_config
from gan_core.config.metrics import better
from gan_core.evaluation.context import context_difference, context_hash, recorded_context, short
from gan_core.tracking.store import check_tracking

if TYPE_CHECKING:
    from flows.registry import Registry

MONITOR_KEY = "monitor-summary"
MONITOR_SUBDIR = "monitor"


def relative_drift(name: str, recorded: float, current: float) -> float:
    """How much worse `current` is than `recorded`, relative to |recorded| (negative = it improved)."""
    if not (math.isfinite(recorded) and math.isfinite(current)):
        return math.inf
    worse = current - recorded if better(name) == "lower" else recorded - current
    return worse / abs(recorded) if recorded != 0 else (math.inf if worse > 0 else 0.0)


@task(name="evaluate_champion", cache_policy=NO_CACHE)
def evaluate_champion(registry: Registry, version: str) -> dict[str, Any]:
    """Evaluate a registered version on the prepared data: {"metrics", "context"} (cached for the gate)."""
    from flows.registry import evaluate_version

    evaluation = evaluate_version(registry, version, subdir=MONITOR_SUBDIR)
    return {"metrics": evaluation.metrics, "context": evaluation.context}


def drift_check(
    gate: GateConfig, version: str, recorded: Mapping[str, float], recorded_context: Mapping[str, Any] | None,
    current: Mapping[str, float], current_context: Mapping[str, Any],
) -> tuple[float | None, str | None]:
    """(relative drift of the primary metric or None, the reason to retrain or None), pure. The recorded and
    re-measured values are compared only in the same evaluation context, as the gate compares a candidate with
    the champion; across contexts there is no drift number, and the changed context is the reason."""
    name = gate.primary_metric
    was, now = float(recorded.get(name, math.nan)), float(current.get(name, math.nan))
    now_in = f"re-measurement {now:.4g} (context {short(context_hash(current_context))}), so no drift is measured; " \
        "a retrain measures a candidate in the new context and the gate re-evaluates the champion in it"
    if recorded_context is None:
        return None, (f"evaluation context unknown: champion v{version} records none (registered before contexts "
                      f"were), so its recorded {name} {was:.4g} is not comparable with its {now_in}")
    if context_hash(recorded_context) != context_hash(current_context):
        return None, (f"evaluation context changed ({context_difference(recorded_context, current_context)}): "
                      f"champion v{version}'s recorded {name} {was:.4g} (context "
                      f"{short(context_hash(recorded_context))}) is not comparable with its {now_in}")
    drift = relative_drift(name, was, now)
    if drift > gate.max_drift:
        return drift, (f"{name} drifted {drift:+.1%} (recorded {was:.4g}, now {now:.4g}, both in context "
                       f"{short(context_hash(current_context))}), past gate.max_drift {gate.max_drift:.0%}")
    return drift, None


def monitor_markdown(cfg: Config, result: dict[str, Any]) -> str:
    """Summary of a monitor run: champion, data versions, drift, decision and reasons."""
    lines = [
        "# GAN monitor",
        "",
        f"**action: {result['action']}**",
        "",
        f"- champion: {result.get('champion') or 'none'}",
        f"- latest data version: `{result.get('data_version')}`",
        f"- champion's data version: `{result.get('champion_data_version') or '—'}`",
    ]
    if result.get("drift") is not None:
        lines.append(
            f"- {cfg.gate.primary_metric}: recorded {result['recorded']:.4g}, now {result['current']:.4g}, "
            f"drift {result['drift']:+.1%} (limit {cfg.gate.max_drift:.0%}; context {short(result['context_hash'])})"
        )
    elif result.get("current") is not None:
        lines.append(
            f"- {cfg.gate.primary_metric}: recorded {result['recorded']:.4g} (context "
            f"{short(result['recorded_context_hash'])}), now {result['current']:.4g} (context "
            f"{short(result['context_hash'])}): not comparable, no drift measured"
        )
    lines += ["", "## Reasons", ""] + [f"- {r}" for r in result["reasons"]]
    if result.get("retrain"):
        lines.append(f"- retrain: {result['retrain'].get('status')} (version {result['retrain'].get('version')})")
    return "\n".join(lines) + "\n"


def monitor_run_name() -> str:
    """Prefect flow-run name that says which model's champion is watched, e.g. `monitor-ganops-generator`."""
    from flows.retrain import flow_run_config

    cfg = flow_run_config()
    return f"monitor-{cfg.registry.model_name}" if cfg else "monitor"


@flow(name="monitor", flow_run_name=monitor_run_name, validate_parameters=False)
def monitor(params: str = str(DEFAULT_PARAMS), overrides: dict[str, Any] | list[str] | None = None) -> dict[str, Any]:
    """Re-evaluate the champion on the latest data; trigger the retrain flow when it drifted or the data changed.

    Returns {"action": "retrain" | "none", "reasons", "data_version", "champion", "drift", "retrain": result|None}.
    """
    from prefect.artifacts import create_markdown_artifact

    from flows.dvc_pipeline import dvc_stage_applies
    from flows.failures import RetrainFailed, named_step
    from flows.registry import Registry
    from flows.registry import champion as current_champion
    from flows.retrain import retrain
    from flows.tasks import train_classifier, version_data
    from gan_core.config import parse_overrides

    logger = get_run_logger()
    send_library_logs_to_runs()  # training progress in the flow-run log
    with named_step("config"):
        parsed = parse_overrides(overrides)
        cfg = load_config(params, parsed)
        registry = Registry(cfg, check_tracking(cfg.registry, "config", write=True))  # this run's one handle
        registry.point_fluent_api()
    with named_step("version_data"):
        data = version_data(cfg, dvc_stage_applies(cfg, params, parsed))
    registry.hand_data_version(data)  # hashed once, above: the champion's evaluation is handed it
    with named_step("find_champion"):
        champion = current_champion(registry)
    result: dict[str, Any] = {
        "data_version": data["data_version"],
        "champion": champion["version"] if champion else None,
        "champion_data_version": (champion or {}).get("tags", {}).get("data_version"),
        "drift": None,
        "retrain": None,
    }
    reasons: list[str] = []
    if champion is None:
        reasons.append(f"no @{cfg.registry.champion_alias} version of {cfg.registry.model_name} yet")
    else:
        if result["champion_data_version"] != data["data_version"]:
            reasons.append(
                f"data version changed: champion v{champion['version']} was trained on "
                f"{result['champion_data_version']}, the latest is {data['data_version']}"
            )
        name = cfg.gate.primary_metric
        with named_step("train_classifier"):
            train_classifier(cfg, data["data_version"])
        with named_step("evaluate_champion"):
            # By version, not alias: the numbers must belong to the version whose recorded metrics we compare.
            measured = evaluate_champion(registry, champion["version"])
        recorded_ctx = recorded_context(champion["tags"])
        drift, why = drift_check(cfg.gate, champion["version"], champion["metrics"], recorded_ctx,
                                 measured["metrics"], measured["context"])
        recorded = float(champion["metrics"].get(name, math.nan))
        current = float(measured["metrics"].get(name, math.nan))
        result.update(recorded=recorded, current=current, drift=drift, metrics=measured["metrics"],
                      context_hash=context_hash(measured["context"]), recorded_context_hash=champion["context_hash"])
        logger.info("champion v%s %s: recorded %.4g (context %s), now %.4g (context %s)%s", champion["version"], name,
                    recorded, short(champion["context_hash"]), current, short(result["context_hash"]),
                    f", drift {drift:+.1%}" if drift is not None else ": not comparable")
        if why:
            reasons.append(why)
    result["reasons"] = reasons or ["champion within gate.max_drift on the latest data, and the data is unchanged"]
    result["action"] = "retrain" if reasons else "none"
    logger.info("monitor: %s (%s)", result["action"], "; ".join(result["reasons"]))
    if reasons:
        try:
            result["retrain"] = retrain(params=params, overrides=parsed or None)
        except RetrainFailed:
            create_markdown_artifact(monitor_markdown(cfg, result), key=MONITOR_KEY, description="monitor")
            raise
    create_markdown_artifact(monitor_markdown(cfg, result), key=MONITOR_KEY, description="monitor")
    return result
