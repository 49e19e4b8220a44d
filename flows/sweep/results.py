"""A sweep's results: one row per trial, the best trial, the table (CSV, markdown), the optimisation history and
parameter importance plots on the parent run, and the flow run's markdown summary.

    rows = trial_rows(study); best = best_trial(study)
    logged = log_results(study, "fid_lenet", parent_run_id, client, out_dir)   # counts, importances, rows
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.sweep.space import direction, point_text
from flows.sweep.study import ERROR_ATTR, PRUNED_ATTR, RETRY_ATTR

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient


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
                     + point_text(s["best_point"]))
    if result.get("version"):
        lines.append(f"- registered as version {result['version']}: **{result['status']}**")
        lines += [f"  - {r}" for r in (result.get("gate") or {}).get("reasons", [])]
    if s.get("importances"):
        lines.append("- importances: " + ", ".join(f"`{k}` {v:.2f}" for k, v in s["importances"].items()))
    if run_link:
        lines.append(f"- MLflow parent run: [{s['parent_run_id']}]({run_link})")
    return "\n".join([*lines, "", table, ""])
