"""What a retrain run did, as Prefect artifacts: a markdown summary and a table of recent model versions.

    publish_report(registry, result)                 # after a promoted / rejected / skipped run
    publish_failure(cfg, result, error, registry)    # after a failed step: which step, why, and that no alias moved

The markdown is built by pure functions (`summary_markdown`, `failure_markdown`) so it can be read in tests
and printed by the CLI; `publish_*` only hand it to Prefect (artifacts appear in the UI under the flow run and,
by key, on the Artifacts page). Every URL in it is cleaned of credentials (gan_core.redact): Prefect stores
artifacts in its database, for anyone who opens its UI. The MLflow run is a link only where the UI's address is
known (GANOPS_MLFLOW_UI, or a tracking server, which is its own UI).
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gan_core.config import Config
from gan_core.config.metrics import better
from gan_core.errors import ServiceUnavailable, find_user_error
from gan_core.evaluation.context import context_hash, describe, short
from gan_core.redact import redact
from gan_core.tracking.store import run_reference, run_url

if TYPE_CHECKING:
    from flows.registry import Registry

SUMMARY_KEY = "retrain-summary"
VERSIONS_KEY = "model-versions"
MAX_INLINE_IMAGE_BYTES = 200_000
RECENT_VERSIONS = 10


def mlflow_run_markdown(cfg: Config, result: dict[str, Any]) -> str:
    """The run as a markdown link into the MLflow UI when one is known (GANOPS_MLFLOW_UI, or a tracking server),
    else its name, id and store: a link to a guessed address would open nothing."""
    name, experiment, run = result.get("run_name") or result.get("run_id"), result.get("experiment_id"), result.get(
        "run_id")
    url = run_url(cfg.registry, experiment, run)
    return f"[{name}]({url})" if url else run_reference(cfg.registry, name, experiment, run)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    return "—" if value is None else str(value)


def _threshold_text(threshold: Any) -> str:
    parts = []
    if getattr(threshold, "max", None) is not None:
        parts.append(f"≤ {threshold.max:g}")
    if getattr(threshold, "min", None) is not None:
        parts.append(f"≥ {threshold.min:g}")
    return " and ".join(parts) or "—"


def metrics_table_markdown(cfg: Config, metrics: dict[str, Any], champion_metrics: dict[str, Any],
                           champion_label: str = "champion") -> str:
    """Rows: every numeric metric, gated ones first — candidate value, threshold, champion value (in the
    candidate's evaluation context: the gate leaves it empty when there is none), direction."""
    names = list(dict.fromkeys([cfg.gate.primary_metric, *cfg.gate.thresholds, *sorted(metrics)]))
    lines = [f"| metric | candidate | threshold | {champion_label} | better |", "| --- | --- | --- | --- | --- |"]
    for name in names:
        value = metrics.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        threshold = cfg.gate.thresholds.get(name)
        label = f"{name} (primary)" if name == cfg.gate.primary_metric else name
        limit = _threshold_text(threshold) if threshold else "—"
        lines.append(f"| {label} | {_fmt(value)} | {limit} | {_fmt(champion_metrics.get(name))} | {better(name)} |")
    return "\n".join(lines)


def sample_grid_markdown(cfg: Config) -> str:
    """The evaluation's sample grid, inlined as a data URI when small (the UI cannot read local files)."""
    path = Path(cfg.eval.out_dir) / "samples.png"
    if not path.is_file():
        return ""
    if path.stat().st_size > MAX_INLINE_IMAGE_BYTES:
        return f"Sample grid: `{path.resolve()}`"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"![samples](data:image/png;base64,{data})"


def summary_markdown(cfg: Config, result: dict[str, Any]) -> str:
    """The run summary: outcome, data version, metrics vs thresholds vs champion, gate reasons, MLflow link."""
    status = result.get("status", "unknown")
    name = cfg.registry.model_name
    version = result.get("version")
    headline = {
        "promoted": f"✅ version {version} of `{name}` promoted to `@{cfg.registry.champion_alias}`",
        "rejected": f"⛔ version {version} of `{name}` registered but "
                    f"{'not promoted' if result.get('reason') else 'rejected by the gate'} (champion unchanged)",
        "skipped": f"⏭️ training skipped: {result.get('reason', 'nothing changed')}",
    }.get(status, f"status: {status}")
    data = result.get("data") or {}
    lines = [
        "# GAN retrain",
        "",
        f"**{headline}**",
        "",
        f"- data version: `{result.get('data_version')}` ({data.get('data_source', cfg.data.source)}, "
        f"{data.get('count', '?')} images, shape {data.get('shape', '?')})",
        f"- model: `{cfg.registry.version_uri(version)}`" if version else "- model: none registered",
        f"- champion: `{cfg.registry.model_uri()}`",
    ]
    if result.get("run_id"):
        lines.append(f"- MLflow run: {mlflow_run_markdown(cfg, result)}")
    decision = result.get("gate") or {}
    if decision:
        lines += ["", f"## Gate: {'passed' if decision.get('passed') else 'failed'}", ""]
        lines += [f"- {_mark(c)} {c['reason']}" for c in decision.get("checks", [])]
    lines += context_lines(cfg, result.get("eval_context"), decision.get("champion_comparison"))
    metrics = result.get("metrics") or {}
    if metrics:
        champion_metrics = decision.get("champion_metrics") or {}
        comparison = decision.get("champion_comparison") or {}
        label = "champion (re-measured)" if comparison.get("remeasured") and champion_metrics else "champion"
        lines += ["", "## Metrics", "", metrics_table_markdown(cfg, metrics, champion_metrics, label)]
    if result.get("reason") and status == "rejected":
        lines += ["", f"Rejected: {result['reason']}"]
    if status != "skipped":
        grid = sample_grid_markdown(cfg)
        if grid:
            lines += ["", "## Samples", "", grid]
    return redact("\n".join(lines) + "\n")  # a URL in a reason or cause: no credentials in Prefect


def approval_markdown(registry: Registry, result: dict[str, Any]) -> str:
    """The text above the Prefect UI's approval form, most telling first (the form shows it in a box of its own
    height): the question and how to answer, the gate's checks, candidate vs champion numbers, links to the MLflow
    version and run, both sample grids side by side, then the data and evaluation context."""
    from flows.registry.descriptions import version_url

    cfg, version = registry.cfg, str(result.get("version"))
    decision = result.get("gate") or {}
    champion = decision.get("champion")
    over = f"over champion v{champion}" if champion else "as the first champion"
    lines = [f"### Approve version {version} of `{cfg.registry.model_name}` {over}?", "",
             f"Switch **Approve** on to move `@{cfg.registry.champion_alias}` to it, or leave it off to reject it; "
             "the reason is recorded on the model version. From a terminal: "
             f"`ganops approve {version} --reason TEXT` or `ganops reject {version} --reason TEXT`. "
             f"No answer within {cfg.registry.approval_timeout:g} s rejects it.", "",
             f"**Gate: {'passed' if decision.get('passed') else 'failed'}**", ""]
    lines += [f"- {_mark(c)} {c['reason']}" for c in decision.get("checks", [])]
    metrics = result.get("metrics") or {}
    if metrics:
        comparison = decision.get("champion_comparison") or {}
        champion_metrics = decision.get("champion_metrics") or {}
        label = f"champion v{champion}" + (" (re-measured)" if comparison.get("remeasured") else "")
        lines += ["", metrics_table_markdown(cfg, metrics, champion_metrics, label)]
    url = version_url(registry, version)
    links = [f"model version [{cfg.registry.model_name} v{version}]({url})" if url
             else f"model version `{cfg.registry.version_uri(version)}`"]
    if result.get("run_id"):
        links.append(f"run {mlflow_run_markdown(cfg, result)}")
    lines += ["", "MLflow: " + ", ".join(links)]
    candidate_grid = sample_grid_markdown(cfg)
    champion_grid = champion_grid_markdown(registry, champion) if champion else ""
    if candidate_grid or champion_grid:
        if champion:
            lines += ["", f"| candidate v{version} | champion v{champion} |", "| --- | --- |",
                      f"| {candidate_grid or '—'} | {champion_grid or '—'} |"]
        else:
            lines += ["", f"Samples of v{version}:", "", candidate_grid]
    data = result.get("data") or {}
    if result.get("data_version"):
        lines += ["", f"Data version `{result['data_version']}` ({data.get('data_source', cfg.data.source)}, "
                  f"{data.get('count', '?')} images)."]
    context = context_lines(cfg, result.get("eval_context"), decision.get("champion_comparison"))
    lines += ["**Evaluation context**" if line == "## Evaluation context" else line for line in context]
    return redact("\n".join(lines) + "\n")


def champion_grid_markdown(registry: Registry, version: str) -> str:
    """The champion's evaluation sample grid (its run's eval/samples.png), inlined when small; "" when its run
    has none (an older or deleted run)."""
    import tempfile

    from flows.registry.handle import run_id_of

    run_id = run_id_of(registry.client().get_model_version(registry.name, version))
    if not run_id:
        return ""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(registry.client().download_artifacts(run_id, "eval/samples.png", tmp))
        except Exception:  # no grid logged, or the run is gone: the form says what it can without it
            return ""
        if path.stat().st_size > MAX_INLINE_IMAGE_BYTES:
            return f"Sample grid: `eval/samples.png` of MLflow run {run_id}"
        return f"![champion samples](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')})"


def _mark(check: dict[str, Any]) -> str:
    if check.get("skipped"):
        return "⚠️"  # passed only because it could not be applied: the reason says why
    return "✅" if check["passed"] else "❌"


def context_lines(cfg: Config, context: dict[str, Any] | None, comparison: dict[str, Any] | None) -> list[str]:
    """The evaluation context of the candidate's numbers and where the champion's came from (recorded in the same
    context, re-measured in it, or not comparable)."""
    if context is None and not comparison:
        return []
    lines = ["", "## Evaluation context", ""]
    if context is not None:
        lines.append(f"- candidate: {describe(context)}")
    if comparison:
        name, v = cfg.gate.primary_metric, comparison["version"]
        recorded = comparison.get("recorded") or comparison.get("metrics") or {}
        recorded_hash = comparison["recorded_context_hash" if comparison.get("remeasured") else "context_hash"]
        was = f"recorded {name} {_fmt(recorded.get(name))} in context {short(recorded_hash)}"
        if comparison.get("unavailable"):
            lines.append(f"- champion v{v}: {was}; not compared (could not be re-evaluated in the candidate's "
                         f"context: {comparison['unavailable']})")
        elif comparison.get("remeasured"):
            now = (comparison.get("metrics") or {}).get(name)
            lines.append(f"- champion v{v}: re-measured {name} {_fmt(now)} in context "
                         f"{short(comparison.get('context_hash'))} (the candidate's); {was}, not comparable")
        elif context is not None and comparison.get("context_hash") == context_hash(context):
            lines.append(f"- champion v{v}: {was}, the candidate's own context")
        else:
            why = "another context" if context is not None else "the candidate records no context"
            lines.append(f"- champion v{v}: {was}; not compared ({why})")
    return lines


def failure_markdown(cfg: Config | None, result: dict[str, Any], failure: BaseException) -> str:
    """Which step failed and why; states that no alias was moved."""
    step = getattr(failure, "step", "unknown")
    alias = cfg.registry.champion_alias if cfg is not None else "champion"
    lines = [
        "# GAN retrain",
        "",
        f"**❌ failed at step `{step}`**",
        "",
        f"- cause: `{failure}`",
        f"- data version: `{result.get('data_version', '—')}`",
    ]
    if step == "promote":
        lines.append(f"- the alias move itself failed: check where `@{alias}` points with `ganops models`")
    else:
        lines.append(f"- no alias was moved: `@{alias}` still points where it did before this run")
    if result.get("version"):
        lines.append(f"- version {result['version']} was registered but not promoted")
    if cfg is not None and result.get("run_id"):
        lines.append(f"- MLflow run: {mlflow_run_markdown(cfg, result)}")
    return redact("\n".join(lines) + "\n")


def versions_rows(registry: Registry, limit: int = RECENT_VERSIONS) -> list[dict[str, Any]]:
    """The newest model versions as table rows (version, aliases, data version, primary metric and its evaluation
    context, gate, created)."""
    from flows.registry import list_versions

    cfg = registry.cfg
    rows = []
    for v in list_versions(registry, missing_ok=True)[:limit]:
        metrics = v.get("metrics") or {}
        tags = v.get("tags") or {}
        rows.append(
            {
                "version": v["version"],
                "aliases": ", ".join(v.get("aliases") or []),
                "data_version": tags.get("data_version", ""),
                cfg.gate.primary_metric: _fmt(metrics.get(cfg.gate.primary_metric)),
                "eval_context": short(v.get("context_hash")),
                "gate": tags.get("gate.decision", ""),
                "git_commit": tags.get("git_commit", "")[:10],
                "run_id": v.get("run_id", ""),
            }
        )
    return rows


def publish_report(registry: Registry, result: dict[str, Any]) -> None:
    """Markdown summary + recent-versions table as artifacts of the current flow run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    cfg = registry.cfg
    create_markdown_artifact(summary_markdown(cfg, result), key=SUMMARY_KEY, description="what this retrain did")
    rows = versions_rows(registry)
    if rows:
        create_table_artifact(rows, key=VERSIONS_KEY, description=f"recent versions of {cfg.registry.model_name}")


def publish_failure(
    cfg: Config | None, result: dict[str, Any], failure: BaseException, registry: Registry | None = None
) -> None:
    """Failure summary as an artifact (and the versions table when the registry is reachable; `registry` is None
    when the run failed before its handle was built).

    After an unreachable service the table is left out: asking the registry again would only add its timeouts
    to a failure that is already known."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(failure_markdown(cfg, result, failure), key=SUMMARY_KEY, description="retrain failed")
    if cfg is None or registry is None or isinstance(find_user_error(failure), ServiceUnavailable):
        return
    try:
        rows = versions_rows(registry)
    except Exception:  # the registry may be what failed; the failure summary above is what matters
        return
    if rows:
        create_table_artifact(rows, key=VERSIONS_KEY, description=f"recent versions of {cfg.registry.model_name}")
