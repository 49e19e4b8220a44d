"""The monitor flow: is the champion still good on the latest data? If not, retrain.

    ganops monitor                          # params.yaml
    ganops monitor data.max_images=4000     # overrides apply to the data check and to the retrain it may start

Steps: prepare/version the latest data (the retrain flow's own task), load `models:/<name>@champion`,
re-evaluate it on that data with the same gan_core.evaluate.evaluate the retrain flow uses (into
{eval.out_dir}/monitor, so the last candidate's files stay), and compare its primary metric with the value
recorded on the version at registration. A retrain starts (as a subflow) when

  * there is no champion yet,
  * the data version differs from the one the champion was trained on, or
  * the primary metric got worse by more than gate.max_drift, relative (0.1 = 10%).

Note: after a data change the domain classifier is retrained on the new data, so the re-measured metric is in a
slightly different feature space than the recorded one; the data change alone already triggers the retrain.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from gan_core.config import DEFAULT_PARAMS, Config, load_config
from gan_core.metrics import better
from gan_core.tracking import check_tracking, use_store

MONITOR_KEY = "monitor-summary"


def relative_drift(name: str, recorded: float, current: float) -> float:
    """How much worse `current` is than `recorded`, relative to |recorded| (negative = it improved)."""
    if not (math.isfinite(recorded) and math.isfinite(current)):
        return math.inf
    worse = current - recorded if better(name) == "lower" else recorded - current
    return worse / abs(recorded) if recorded != 0 else (math.inf if worse > 0 else 0.0)


def monitor_config(cfg: Config) -> Config:
    """The same config with evaluation output under {eval.out_dir}/monitor (keeps the candidate's files)."""
    copy = cfg.model_copy(deep=True)
    copy.eval.out_dir = str(Path(cfg.eval.out_dir) / "monitor")
    return copy


@task(name="evaluate_champion")
def evaluate_champion(cfg: Config, model_uri: str) -> dict[str, float]:
    """Evaluate a registered generator or translator (models:/...) on the prepared data."""
    from gan_core.evaluate import evaluate
    from gan_core.tracking import configure

    configure(cfg.registry)
    return evaluate(cfg, generator=model_uri).metrics


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
            f"drift {result['drift']:+.1%} (limit {cfg.gate.max_drift:.0%})"
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
    from flows.registry import champion as current_champion
    from flows.retrain import retrain
    from flows.steps import RetrainFailed, named_step
    from flows.tasks import train_classifier, version_data
    from gan_core.config import parse_overrides

    logger = get_run_logger()
    with named_step("config"):
        parsed = parse_overrides(overrides)
        cfg = load_config(params, parsed)
        use_store(check_tracking(cfg.registry, "config", write=True))
    with named_step("version_data"):
        data = version_data(cfg, dvc_stage_applies(cfg, params, parsed))
    with named_step("find_champion"):
        champion = current_champion(cfg)
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
            train_classifier(cfg)
        with named_step("evaluate_champion"):
            # By version, not alias: the numbers must belong to the version whose recorded metrics we compare.
            uri = cfg.registry.version_uri(champion['version'])
            metrics = evaluate_champion(monitor_config(cfg), uri)
        recorded = float(champion["metrics"].get(name, math.nan))
        current = float(metrics.get(name, math.nan))
        drift = relative_drift(name, recorded, current)
        result.update(recorded=recorded, current=current, drift=drift, metrics=metrics)
        logger.info("champion v%s %s: recorded %.4g, now %.4g (drift %+.1f%%)",
                    champion["version"], name, recorded, current, 100 * drift)
        if drift > cfg.gate.max_drift:
            reasons.append(f"{name} drifted {drift:+.1%} (recorded {recorded:.4g}, now {current:.4g}), "
                           f"past gate.max_drift {cfg.gate.max_drift:.0%}")
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
