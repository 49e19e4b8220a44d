"""`ganops` — the service's command line.

ganops demo                           # the main job on defaults (make demo)
ganops retrain train.steps=200        # the retrain flow, dotted overrides
ganops models                         # versions: metrics, gate, aliases
ganops promote 3                      # gated; --force needs --reason
ganops approve 3 --reason "grids ok"  # answer a retrain waiting for approval
ganops reject 3 --reason "blurry"     # (registry.approval: manual)
ganops rollback                       # champion back to the previous one
ganops generate -n 64                 # sample the champion into outputs/grid.png
ganops schedule --cron "0 3 * * *"    # serve the retrain flow on a cron
ganops monitor                        # retrain on drift or new data
ganops sweep --space configs/sweeps/dcgan.yaml   # Optuna search, best through the gate
ganops ui                             # the MLflow UI on the local store
ganops --version

The flow commands (retrain, demo, monitor, schedule) take trailing
`key=value` overrides of params.yaml; every command takes `--params PATH` to
read another file. `generate --model` takes models:/<name>@<alias>,
models:/<name>/<version> or a package directory.

Exit status, the same for every command: 0 = done (promoted, already the
champion, nothing changed so nothing trained); 3 = the gate rejected the
candidate (`retrain`, `demo`, `monitor`, `sweep`, `promote`: the command ran,
no alias moved); 2 = a user error (bad value, missing file, unreachable
service: one `error:` line); 1 = an unexpected error (a line, then a
traceback). Unreachable services fail fast: GANOPS_SERVICE_TIMEOUT (seconds,
default 120) bounds how long any one of them is waited for.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gan_core.cli import Overrides, Params, Version, print_internal_error, run_app
from gan_core.config import DEFAULT_PARAMS, load_config
from gan_core.config.catalogue import TASKS, family_info
from gan_core.errors import ServiceUnavailable, UserError, find_user_error
from gan_core.redact import clean_url

if TYPE_CHECKING:
    from flows.failures import RetrainFailed
    from flows.registry import Registry
    from gan_core.config import Config

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__)
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


@app.callback()
def _before_any_command(version: Version = False) -> None:
    # Before any command imports Prefect, which reads its client settings once, at import.
    from flows.schedule import bound_prefect_client

    bound_prefect_client()
    # pyproject.toml's [tool.prefect] turns telemetry off only when ganops runs from the repo root; its heartbeat
    # races Prefect's event vacuum on the ephemeral SQLite database ("database is locked" traceback) and tries the
    # network. The environment reaches the ephemeral server's subprocess too; PREFECT_SERVER_ANALYTICS_ENABLED=true
    # opts back in.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # MLflow's artifact download bar (the champion's grid, the logged model's check) is one garbled line among the
    # flow's log lines; a user's own value wins.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def show_progress() -> None:
    """Let gan_core's INFO lines through (Python's default is WARNING) to Prefect's console handler on the root
    logger: training logs one progress line every train.log_every steps, the only output for minutes when stderr
    is not a terminal (CI, a piped `make demo`, a worker)."""
    logging.getLogger("gan_core").setLevel(logging.INFO)


REJECTED = 3
"""Exit status of a command whose candidate the gate rejected: it ran to the end, and no alias moved. Not 0, so a
script's `ganops promote 3 && deploy` stops; not 1 or 2, so a scheduler can tell it from a failure."""


def exit_status(result: dict) -> int:
    """0, or REJECTED when the flow's candidate was rejected by the gate (a skipped run trained no candidate)."""
    return REJECTED if result.get("status") == "rejected" else 0


def plural(count: int, noun: str) -> str:
    """'1 version', '2 versions'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# ----------------------------------------------------------------------------- flows
def _echo_result(result: dict) -> None:
    """One line per fact a user acts on: what happened, which version, why."""
    status, version = result.get("status"), result.get("version")
    typer.echo(f"status: {status}" + (f" (version {version})" if version else ""))
    if result.get("reason"):
        typer.echo(f"reason: {result['reason']}")
    if (result.get("gate") or {}).get("checks"):
        _echo_gate(result["gate"]["checks"])


def _echo_gate(checks: list[dict]) -> None:
    """The gate's decision and its checks, by each check's own flag (flows.gate). Under a failed gate only the
    failed checks are listed: a passed check's line reads as if the candidate had won ("no champion yet: ... has
    nothing to beat: pass"); `ganops models` and the version page keep them all."""
    failed = [c for c in checks if not c["passed"]]
    if not failed:
        typer.echo(f"gate: passed ({plural(len(checks), 'check')})")
        for check in checks:
            typer.echo(f"  {check['reason']}")
        return
    typer.echo(f"gate: failed ({len(failed)} of {plural(len(checks), 'check')})")
    for check in failed:
        typer.echo(f"  {check['reason']}")
    if len(failed) < len(checks):
        typer.echo(f"  ({plural(len(checks) - len(failed), 'other check')} passed)")


def _fail(what: str, error: RetrainFailed) -> Exception:
    """The exception that reports a failed flow: a UserError (one line, exit 2) when a user error or an unreachable
    service caused it; else the summary and traceback are printed here and the exit status is 1."""
    moved = "check `ganops models` for the champion" if error.step == "promote" else "no alias was moved"
    user = find_user_error(error)
    if isinstance(user, ServiceUnavailable):
        return UserError(f"{user} ({what} stopped; {moved})")
    if user is not None:
        return UserError(f"{what} failed: {error} ({moved})")
    print_internal_error(f"{what} failed: {error} ({moved})", error)
    return typer.Exit(1)


def _check_before_flow(what: str, params: Path, overrides: list[str] | None) -> None:
    """What would fail the flow's first step, checked before Prefect starts (its ephemeral API takes ~20 s):
    the params file and overrides, the tracking server, a Prefect server named by PREFECT_API_URL."""
    from flows.approval import check_approval_possible
    from flows.failures import RetrainFailed
    from flows.schedule import check_prefect_api
    from gan_core.tracking.store import check_tracking

    try:
        cfg = load_config(params, overrides)
        check_tracking(cfg.registry, "config", write=True)
        check_prefect_api("config")
        check_approval_possible(cfg)
    except UserError as e:
        raise _fail(what, RetrainFailed("config", e)) from None


def _run_retrain(params: Path, overrides: list[str] | None) -> dict:
    from flows.failures import RetrainFailed
    from flows.retrain import retrain

    _check_before_flow("retrain", params, overrides)
    show_progress()
    try:
        return retrain(params=str(params), overrides=overrides or None)
    except RetrainFailed as e:
        raise _fail("retrain", e) from None


@app.command("retrain")
def retrain_command(
    overrides: Overrides = None,
    params: Params = DEFAULT_PARAMS,
) -> None:
    """Run the retrain flow: data → train → evaluate → register → gate → promote (skips when nothing changed).
    Exit status 0 (promoted or skipped), 3 (rejected by the gate), 2 (user error), 1 (unexpected error)."""
    result = _run_retrain(params, overrides)
    _echo_result(result)
    raise typer.Exit(exit_status(result))


@app.command("demo")
def demo_command(
    overrides: Overrides = None,
    params: Params = DEFAULT_PARAMS,
) -> None:
    """The main job on params.yaml's defaults (mnist5k, offline), then how to look at and use the champion."""
    from flows.registry import Registry, why_no_alias
    from flows.registry import champion as current_champion

    result = _run_retrain(params, overrides)
    _echo_result(result)
    cfg = load_config(params, overrides)
    registry = Registry(cfg)
    champion = current_champion(registry)
    model = cfg.registry.model_uri()
    if champion is None:
        named = str(params) if Path(params).resolve() != DEFAULT_PARAMS.resolve() else None
        typer.echo(why_no_alias(registry, model, named, cfg.recipe) or f"no champion yet: {model}")
        raise typer.Exit(REJECTED)
    typer.echo(f"champion: {model} = version {champion['version']}")
    ganops = runnable("ganops")
    activate = Path(ganops).parent / "activate"
    typer.echo("next:" if ganops == "ganops" else f"next (or `source {activate}` first, then plain `ganops`):")
    typer.echo(f"  {ganops} ui                          # compare runs in the MLflow UI")
    example = TASKS[family_info(cfg.model.arch).task].command_example.format(uri=model)
    typer.echo(f"  {ganops}{example.removeprefix('ganops')}")
    raise typer.Exit(exit_status(result))


def runnable(command: str) -> str:
    """How to type `command` of this environment here: its bare name when PATH finds this environment's copy (an
    activated venv), else its path, relative to the working directory when inside it (`.venv/bin/ganops` after
    `make demo`, which runs .venv/bin/ganops without activating the venv)."""
    import shutil

    bin_dir = Path(sys.executable).parent  # the venv's bin/ (not resolved: a venv's python is a symlink)
    found = shutil.which(command)
    if found is not None and Path(found).parent.resolve() == bin_dir.resolve():
        return command
    path = bin_dir / command
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else str(path)


@app.command("monitor")
def monitor_command(
    overrides: Overrides = None,
    params: Params = DEFAULT_PARAMS,
) -> None:
    """Re-evaluate the champion on the latest data; retrain when quality drifted or the data changed."""
    from flows.failures import RetrainFailed
    from flows.monitor import monitor

    _check_before_flow("monitor", params, overrides)
    show_progress()
    try:
        result = monitor(params=str(params), overrides=overrides or None)
    except RetrainFailed as e:
        raise _fail("monitor", e) from None
    typer.echo(f"action: {result['action']}")
    for reason in result["reasons"]:
        typer.echo(f"reason: {reason}")
    if result.get("retrain"):
        _echo_result(result["retrain"])
        raise typer.Exit(exit_status(result["retrain"]))


@app.command("sweep")
def sweep_command(
    overrides: Overrides = None,
    space: Annotated[Path, typer.Option("--space", help="search space file (see configs/sweeps/dcgan.yaml)")] = Path(
        "configs/sweeps/dcgan.yaml"),
    trials: Annotated[int | None, typer.Option(
        "--trials", help="trial budget of the study, shared by every process on it (default: the space file's)",
    )] = None,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="seconds after which this process starts no more trials")] = None,
    workers: Annotated[int, typer.Option("--workers", help="trials at a time on this machine (processes)")] = 1,
    study: Annotated[str | None, typer.Option(
        "--study", help="study name; the same name continues or joins it (default: the space file's name)")] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", help="study database URL (default: registry.study_storage, else optuna.db beside the "
        "SQLite tracking store)")] = None,
    params: Params = DEFAULT_PARAMS,
) -> None:
    """Search hyperparameters with Optuna (one MLflow child run per trial, hopeless ones pruned), then register
    the best trial and apply the gate, as a retrain would."""
    from flows.failures import RetrainFailed
    from flows.sweep import check_budget, check_sweep_args, load_space, study_storage, sweep
    from gan_core.config import parse_overrides

    _check_before_flow("sweep", params, overrides)
    try:  # the space and the budgets fail here, in one line, before Prefect starts
        check_sweep_args(trials, timeout, workers)
        cfg = load_config(params, overrides)
        searched = load_space(space, cfg, params, parse_overrides(overrides))
        check_budget(trials or searched.trials, timeout or searched.timeout_s)
        study_storage(cfg, storage)
    except UserError as e:
        raise _fail("sweep", RetrainFailed("config", e)) from None
    show_progress()
    logging.getLogger("flows.sweep").setLevel(logging.INFO)
    try:
        result = sweep(space=str(space), params=str(params), overrides=overrides or None, study=study,
                       trials=trials, timeout_s=timeout, workers=workers, storage=storage)
    except RetrainFailed as e:
        raise _fail("sweep", e) from None
    _echo_trials(result["sweep"])
    _echo_result(result)
    raise typer.Exit(exit_status(result))


def _echo_trials(summary: dict) -> None:
    """The study's trials, best first, as a table; then the best one."""
    from rich.console import Console
    from rich.table import Table

    from flows.sweep import best_first

    rows = summary["trials"]
    minimize = summary["direction"] == "minimize"
    rows = best_first(rows, minimize)
    columns = [c for c in (rows[0] if rows else {}) if c not in ("mlflow_run_id",)]
    counts = summary["counts"]
    table = Table(title=f"study {summary['study']}: {counts['complete']} complete, {counts['pruned']} pruned, "
                        f"{counts['fail']} failed", caption=f"storage {summary['storage']}; MLflow parent run "
                        f"{summary['parent_run_id']}")
    for c in columns:
        table.add_column(summary["objective"] if c == "value" else c, no_wrap=c != "note")
    for r in rows:
        table.add_row(*["-" if r[c] is None else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])
                        for c in columns])
    Console(width=max(160, Console().width), emoji=False).print(table)
    if summary.get("best_trial") is not None:
        typer.echo(f"best: trial {summary['best_trial']} ({summary['objective']} = {summary['best_value']:.4g})")


@app.command("schedule")
def schedule_command(
    overrides: Overrides = None,
    cron: str | None = typer.Option(None, "--cron", help='cron expression, e.g. "0 3 * * *"'),
    interval: float | None = typer.Option(None, "--interval", help="seconds between runs"),
    params: Params = DEFAULT_PARAMS,
    name: str = typer.Option("ganops-retrain", "--name", help="deployment name"),
) -> None:
    """Serve the retrain flow on a schedule (needs `prefect server start` and PREFECT_API_URL)."""
    from flows.schedule import serve_retrain

    show_progress()
    serve_retrain(cron=cron, interval=interval, params=str(params), overrides=overrides, name=name)


# ----------------------------------------------------------------------------- registry and consumption
# Downstream users pull and inspect models from anywhere, not only from a checkout with a params.yaml.
RegistryParams = Annotated[
    Path | None,
    typer.Option("--params", help="params file (default: ./params.yaml when present, else the built-in defaults)"),
]
RegistryRecipe = Annotated[
    str | None,
    typer.Option("--recipe", help="a recipe's registered model and gate (configs/recipes/<name>.yaml), "
                 "e.g. --recipe conditional for models:/ganops-conditional"),
]


def _registry(params: Path | None, command: str, recipe: str | None = None) -> Registry:
    """The command's registry handle (its config is `.cfg`), with MLflow pointed at its store (load_generator's
    models:/ URIs go through the fluent API).

    These commands read or move aliases: a missing SQLite store is an error (none is created), and a tracking
    server that does not answer fails now, in seconds, naming the command. They take no `key=value` overrides:
    what they read (store, model name, aliases, gate) comes from the params file and, with --recipe, a recipe's
    file, so a promotion is gated by the project's committed policy, not by one command line's."""
    return _open_store(load_config(params, [f"recipe={recipe}"] if recipe is not None else None), command)


def _open_store(cfg: Config, command: str) -> Registry:
    """The command's one registry handle on an existing store (checked, opened), MLflow's fluent API pointed at it."""
    from flows.registry import Registry
    from gan_core.tracking.store import check_tracking

    registry = Registry(cfg, check_tracking(cfg.registry, command))
    registry.client()
    registry.point_fluent_api()
    return registry


def _require_version(registry: Registry, uri: str, params: Path | None, recipe: str | None = None) -> None:
    """A models:/<name>@<alias> that names no version fails here, saying why (the gate rejected the only version,
    with its failed checks) and what to do (use models:/<name>/<version>, or force a promotion)."""
    from flows.registry import why_no_alias

    reason = why_no_alias(registry, uri, str(params) if params is not None else None, recipe)
    if reason is not None:
        raise UserError(reason)


@app.command("generate")
def generate_command(
    model: Annotated[str | None, typer.Option(
        "--model", help="models:/<name>@<alias>, models:/<name>/<version> or a package directory "
        "(default: models:/<registry.model_name>@<registry.champion_alias>)")] = None,
    n: Annotated[int, typer.Option("-n", "--num", help="number of images")] = 64,
    out: Annotated[Path, typer.Option("--out", help="PNG file to write (atomically); outputs/ is git-ignored")] = Path(
        "outputs/grid.png"),
    seed: Annotated[int, typer.Option("--seed", help="noise seed: the same seed gives the same grid")] = 0,
    labels: Annotated[str | None, typer.Option(
        "--labels", help="class ids, comma-separated, one per image, e.g. 0,1,2")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps")] = "auto",
    truncation: Annotated[float, typer.Option(
        "--truncation", help="truncation psi in [0, 1] for style-based generators (stylegan2); 1 = off")] = 1.0,
    params: RegistryParams = None,
    recipe: RegistryRecipe = None,
) -> None:
    """Sample a generator (the champion by default) into a PNG grid."""
    from gan_core.serving.generate import generate_grid

    cfg = load_config(params, [f"recipe={recipe}"] if recipe is not None else None)
    source = model or cfg.registry.model_uri()
    if source.startswith(MLFLOW_SCHEMES):
        _require_version(_open_store(cfg, "generate"), source, params, recipe)
    # else a package directory: MLflow is not touched at all (no store is looked for or created).
    label_ids = None
    if labels is not None:
        try:
            label_ids = [int(x) for x in labels.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--labels {labels!r}: expected comma-separated class ids, e.g. 0,1,2") from None
    path = generate_grid(source, n, out, seed=seed, labels=label_ids, device=device, truncation_psi=truncation)
    typer.echo(f"wrote {plural(n, 'image')} from {source} to {path}")


@app.command("translate")
def translate_command(
    input_path: Annotated[Path, typer.Option(
        "--input", help="a PNG/JPEG file, or a directory of them (not searched recursively)")],
    out: Annotated[Path, typer.Option("--out", help="directory to write <input name>.png into (atomically)")],
    model: Annotated[str | None, typer.Option(
        "--model", help="models:/<name>@<alias>, models:/<name>/<version> or a translator package directory "
        "(default: models:/<registry.model_name>@<registry.champion_alias>)")] = None,
    direction: Annotated[str, typer.Option("--direction", help="a2b (domain A → B) or b2a")] = "a2b",
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps")] = "auto",
    params: RegistryParams = None,
) -> None:
    """Translate images with a translator (the champion by default): one PNG per input image."""
    from gan_core.serving.translate import check_translate_args, translate_files

    cfg = load_config(params)
    source = model or cfg.registry.model_uri()
    check_translate_args(input_path, out, direction)  # a typo fails before any store is opened
    if source.startswith(MLFLOW_SCHEMES):
        _require_version(_open_store(cfg, "translate"), source, params)
    # else a package directory: MLflow is not touched at all (no store is looked for or created).
    paths = translate_files(source, input_path, out, direction=direction, device=device)
    for path in paths[:20]:
        typer.echo(str(path))
    if len(paths) > 20:
        typer.echo(f"... and {len(paths) - 20} more")
    typer.echo(f"translated {plural(len(paths), 'image')} {direction} with {source} into {out}")


@app.command("models")
def models_command(params: RegistryParams = None, recipe: RegistryRecipe = None) -> None:
    """Registered versions, newest first: key metrics and their evaluation context, gate result, promotion, aliases,
    lineage, created. A value marked † was measured in another evaluation context than the champion's."""
    from rich.console import Console
    from rich.table import Table

    from flows.registry import list_versions
    from gan_core.evaluation.context import short

    registry = _registry(params, "models", recipe)
    cfg = registry.cfg
    versions = list_versions(registry)
    keys = list(dict.fromkeys([cfg.gate.primary_metric, *sorted(cfg.gate.thresholds)]))
    alias = cfg.registry.champion_alias
    champion = next((v for v in versions if alias in v["aliases"]), None)
    caption = f"store {clean_url(registry.uri)}; `ganops ui` to compare runs, `ganops promote N` to gate one"
    marked = {v["version"] for v in versions if champion is not None and not _comparable(v, champion)}
    if champion is not None and marked:
        caption += (f"\n† measured in another evaluation context (data, extractor, samples or seed) than @{alias} "
                    f"v{champion['version']}'s ({short(champion['context_hash'])}): not comparable with its values; "
                    "the gate re-measures the champion in a candidate's context before comparing")
    table = Table(title=f"{cfg.registry.model_name} ({plural(len(versions), 'version')})", caption=caption)
    stages = bool(cfg.registry.stages)  # the column only where registry.stages turns stages on
    for column in ["version", *keys, "context", "gate", "promotion", "aliases", *(["stage"] if stages else []), "data",
                   "commit", "created"]:
        table.add_column(column, no_wrap=True)
    for v in versions:
        tags = v["tags"]
        dagger = "†" if v["version"] in marked else ""
        table.add_row(
            v["version"],
            *[f"{v['metrics'][k]:.4g}{dagger}" if k in v["metrics"] else "-" for k in keys],
            short(v["context_hash"]) if v["context_hash"] else "-",
            tags.get("gate.decision", "-"),
            tags.get("promotion.decision") or ("waiting" if tags.get("approval.status") == "waiting" else "-"),
            ", ".join(f"@{a}" for a in v["aliases"]) or "-",
            *([v["stage"] or "None"] if stages else []),
            tags.get("data_version", "-")[:12],
            tags.get("git_commit", "-")[:8] + ("*" if tags.get("git_dirty") == "true" else ""),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(v["created"] / 1000)),
        )
    # Wide enough that no column is cut when stdout is not a terminal (pipes, tests).
    Console(width=max(160, Console().width), emoji=False).print(table)


def _comparable(version: dict, champion: dict) -> bool:
    """Can `version`'s recorded metrics be set against the champion's? Only in one known evaluation context."""
    return version is champion or (version["context_hash"] is not None
                                   and version["context_hash"] == champion["context_hash"])


@app.command("promote")
def promote_command(
    version: Annotated[str, typer.Argument(help="model version number (see `ganops models`)")],
    force: Annotated[bool, typer.Option("--force", help="skip the gate (a failed run is never promoted)")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="why the gate is overridden (with --force)")] = None,
    params: RegistryParams = None,
    recipe: RegistryRecipe = None,
) -> None:
    """Move the champion alias to VERSION when it passes the gate (thresholds + beat the champion)."""
    from flows.registry import check_promotion_args, promote

    check_promotion_args(version, force, reason)  # a typo is named as such, even where there is no store
    registry = _registry(params, "promote", recipe)
    result = promote(registry, version, force=force, reason=reason)
    alias = registry.champion_alias
    if result["promoted"]:
        previous = f" (was v{result['previous_champion']})" if result["previous_champion"] else ""
        typer.echo(f"{result['decision']}: v{result['version']} is now @{alias}{previous}")
    elif result["decision"] == "unchanged":
        typer.echo(f"unchanged: v{result['version']} already is @{alias}")
    else:
        champion = f"champion: v{result['champion']}" if result["champion"] else "no champion yet"
        typer.echo(f"rejected: v{result['version']} stays off @{alias} ({champion})")
    # The gate was applied in every case (recorded on the version); a forced promotion shows what it overrode.
    _echo_gate(result["checks"])
    if result["decision"] == "rejected":
        raise typer.Exit(REJECTED)


def _answer(version: str, approve: bool, reason: str | None, params: Path | None, recipe: str | None) -> None:
    """Resume the flow run waiting for VERSION with the answer, as the Prefect UI's approval form does."""
    from flows.approval import send_answer
    from flows.registry.handle import check_version_number
    from flows.schedule import api_url, check_prefect_api

    command = "approve" if approve else "reject"
    check_version_number(version)
    if api_url() is None:
        raise UserError(f"`ganops {command}` answers a run on a Prefect server: export PREFECT_API_URL (e.g. "
                        "http://127.0.0.1:4200/api), the server the retrain runs on")
    registry = _registry(params, command, recipe)
    check_prefect_api(command)
    sent = send_answer(registry, version, approve, reason or "")
    verb = "approved" if approve else "rejected"
    typer.echo(f"{verb}: v{version} of {registry.name}; flow run {sent['flow_run_id']} was {sent['state']} and "
               f"now carries it out (`ganops models` shows the outcome)")


@app.command("approve")
def approve_command(
    version: Annotated[str, typer.Argument(help="model version waiting for approval (see `ganops models`)")],
    reason: Annotated[str | None, typer.Option("--reason", help="why; recorded on the model version")] = None,
    params: RegistryParams = None,
    recipe: RegistryRecipe = None,
) -> None:
    """Approve VERSION, which a retrain holds for approval (registry.approval: manual): it takes @champion unless
    another version became champion while it waited."""
    _answer(version, True, reason, params, recipe)


@app.command("reject")
def reject_command(
    version: Annotated[str, typer.Argument(help="model version waiting for approval (see `ganops models`)")],
    reason: Annotated[str, typer.Option("--reason", help="why; recorded on the model version")],
    params: RegistryParams = None,
    recipe: RegistryRecipe = None,
) -> None:
    """Reject VERSION, which a retrain holds for approval (registry.approval: manual): no alias moves."""
    if not reason.strip():
        raise UserError("--reason must say why the version is rejected (it is recorded on the version)")
    _answer(version, False, reason, params, recipe)


@app.command("rollback")
def rollback_command(params: RegistryParams = None, recipe: RegistryRecipe = None) -> None:
    """Point the champion alias back at the version it replaced."""
    from flows.registry import rollback

    registry = _registry(params, "rollback", recipe)
    result = rollback(registry)
    alias = registry.champion_alias
    typer.echo(f"rolled back: @{alias} is v{result['champion']} again (was v{result['replaced']})")


def ui_workers(cpus: int | None = None) -> int:
    """Web workers for `ganops ui`: one per two cores, at most 4 (MLflow's default), at least one. One person
    browsing needs few, and each worker costs seconds to start and ~200 MB."""
    return max(1, min(4, (cpus if cpus is not None else os.cpu_count() or 1) // 2))


def ui_command_line(cfg: Config, port: int = 5000, workers: int | None = None) -> list[str]:
    """`mlflow ui` on this project's store, listening on loopback only, with `workers` web workers (ui_workers)."""
    from gan_core.tracking.store import artifact_location, is_http_uri, require_store

    if not 1 <= port <= 65535:
        raise UserError(f"--port {port}: expected a TCP port in [1, 65535]")
    if workers is not None and not 1 <= workers <= 64:
        raise UserError(f"--workers {workers}: expected a number of web workers in [1, 64]")
    uri = require_store(cfg.registry)  # `mlflow ui` would create an empty store where none is
    if is_http_uri(uri):
        raise UserError(f"the tracking URI {uri} is a tracking server, which serves its own UI: open it in a browser")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--default-artifact-root", artifact_location(cfg.registry), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers or ui_workers())]


@app.command("ui")
def ui_command(
    port: Annotated[int, typer.Option("--port", help="port on 127.0.0.1")] = 5000,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="web workers (default: one per two cores, 1 to 4)")] = None,
    params: RegistryParams = None,
) -> None:
    """Start the MLflow UI on the local store (127.0.0.1 only); Ctrl-C or `kill <pid>` stops it."""
    from gan_core.tracking.store import MODEL_TRAINING_VIEW

    cfg = load_config(params)
    argv = ui_command_line(cfg, port, workers)
    store = argv[argv.index("--backend-store-uri") + 1]
    typer.echo(f"MLflow UI: http://127.0.0.1:{port}/#/experiments?{MODEL_TRAINING_VIEW}  (store {clean_url(store)})")
    typer.echo(f"for links to it in reports: export GANOPS_MLFLOW_UI=http://127.0.0.1:{port}")
    sys.stdout.flush()
    # MLflow's job runner (seven huey processes for its GenAI features, which ganops does not use) doubles the
    # start-up time on a small machine; the user's own setting wins.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # exec: this process becomes `mlflow ui`, whose CLI forwards SIGTERM and SIGINT to its web server, so stopping
    # the PID `ganops ui` printed stops everything. (A child process would outlive a killed parent, port and all.)
    os.execv(argv[0], argv)


def main(argv: list[str] | None = None) -> None:
    raise SystemExit(run_app(app, argv))


if __name__ == "__main__":
    main()
