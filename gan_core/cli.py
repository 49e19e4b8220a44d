"""`python -m gan_core` — the DVC stages' entry points; each command calls one gan_core function.

    python -m gan_core prepare                          # params.yaml → data/prepared
    python -m gan_core prepare data.source=digits data.resolution=16
    python -m gan_core train train.steps=200
    python -m gan_core classifier                       # the offline domain feature extractor (lenet, labels)
    python -m gan_core encoder                          # the label-free one (simclr)
    python -m gan_core evaluate
    python -m gan_core --help
    python -m gan_core --version

Trailing `key=value` arguments override params.yaml; `--params PATH` picks another file. Each stage prints one
line saying what it produced (so `dvc repro` and `dvc exp run` stay readable); the numbers are in the files it
writes (metrics.json, info.json, meta.json), and `--json` prints the whole result as JSON instead, for scripts.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from gan_core.config import DEFAULT_PARAMS, load_config
from gan_core.errors import find_user_error, first_line
from gan_core.redact import redact

Overrides = Annotated[
    list[str] | None,
    typer.Argument(metavar="KEY=VALUE", show_default=False,
                   help="Dotted overrides of params.yaml, e.g. train.steps=200"),
]
Params = Annotated[Path, typer.Option("--params", help="params file to read instead of ./params.yaml")]

console = Console(stderr=True, emoji=False)  # ":100:" in a quoted value stays text
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__)


def package_version() -> str:
    """The installed ganops distribution's version (pyproject.toml's, as pip installed it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ganops")
    except PackageNotFoundError:  # run from a checkout that was never `pip install`ed
        return "unknown (not installed; run `make test` or `pip install -e .`)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ganops {package_version()}")
        raise typer.Exit()


Version = Annotated[
    bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print ganops's version and exit.")
]


@app.callback()
def _options(version: Version = False) -> None:
    # A stage's output is its one result line and the trainer's progress lines; MLflow's own INFO chatter (system
    # metrics monitor, model validation) and its download progress bars would bury them in `dvc repro`/`dvc exp run`.
    # Set before MLflow is imported, which reads them; a user's own values win.
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


AsJson = Annotated[bool, typer.Option("--json", help="print the whole result as JSON instead of one line")]


def report(line: str, result: Any, as_json: bool) -> None:
    """A stage's result: one line for a person (the default), or the whole result as JSON (`--json`)."""
    if as_json:
        print_json(result)
    else:
        typer.echo(line)


def _numbers(values: dict[str, Any], keys: list[str]) -> str:
    """'fid_lenet=20.26 class_coverage=1' for the keys present, in order."""
    return " ".join(f"{k}={values[k]:.4g}" for k in keys if isinstance(values.get(k), int | float))


def run_app(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run a Typer app: user errors print one line (`error: ...`) and exit 2, without a traceback; unexpected
    errors print a one-line summary, then the traceback (it is a bug to report), and exit 1."""
    try:
        result = app(args=argv, standalone_mode=False)
    except typer.TyperException as e:
        # Usage errors (bad option value, unknown option). Typer vendors its own click, so these are
        # TyperException subclasses, not click's ClickException.
        show = getattr(e, "show", None)
        if show is not None:
            show()
        else:
            print_error(e.format_message())
        return e.exit_code
    except typer.Abort:
        console.print("aborted")
        return 130
    except Exception as e:
        user = find_user_error(e)
        if user is not None:
            # A wrapper that quotes the user error (flows.failures.RetrainFailed: "step 'x' failed: <message>") also
            # says where it happened; any other wrapper's message would hide what the user has to fix.
            print_error(first_line(e) if first_line(user) in str(e) else first_line(user))
            return 2
        print_internal_error(f"{type(e).__name__}: {first_line(e)}", e)
        return 1
    return result if isinstance(result, int) else 0


def print_error(message: str) -> None:
    """`error: <message>` on stderr, on one line whatever the terminal width; URLs cleaned of credentials."""
    # Escaped: a message quoting a value such as `[lenet]` must not be read as rich markup.
    console.print(f"[bold red]error:[/] {escape(redact(message))}", highlight=False, soft_wrap=True)


def print_internal_error(summary: str, exc: BaseException) -> None:
    """The one-line summary of an unexpected error, then its traceback (with the chain of causes) for a bug report;
    URLs cleaned of credentials (a library's message may quote the tracking URI)."""
    print_error(f"{summary} (unexpected: please report it with the traceback below)")
    sys.stderr.write(redact("".join(traceback.format_exception(exc))))
    sys.stderr.flush()


@app.command()
def prepare(overrides: Overrides = None, params: Params = DEFAULT_PARAMS, as_json: AsJson = False) -> None:
    """Build the prepared dataset (uint8 images, labels, meta.json) from data.source; print where and its version."""
    from gan_core.data import prepare as prepare_dataset
    from gan_core.data.version import data_version_info

    cfg = load_config(params, overrides)
    meta = prepare_dataset(cfg.data)

    def summarize(meta: dict) -> dict:
        summary = {key: meta[key] for key in ("source", "count", "shape", "classes", "content_hash")}
        return {**summary, "skipped_files": len(meta["skipped_files"])}

    summary = {"domains": {k: summarize(v) for k, v in meta["domains"].items()}} if "domains" in meta \
        else summarize(meta)
    # The version printed is the md5 `dvc repro` records in dvc.lock for this directory (computed the same way).
    where = {"prepared_dir": str(Path(cfg.data.prepared_dir).resolve())}
    result = {**where, **summary, **data_version_info(cfg.data.prepared_dir)}
    sets = summary["domains"] if "domains" in summary else {"": summary}
    what = ", ".join(f"{f'domain {k}: ' if k else ''}{s['count']} images from {s['source']} "
                     f"({'×'.join(map(str, s['shape']))})" for k, s in sets.items())
    report(f"prepared {what} into {cfg.data.prepared_dir}: data version {result['data_version']}", result, as_json)


Track = Annotated[bool, typer.Option(
    "--mlflow/--no-mlflow", help="log into the MLflow store of registry.tracking_uri, as the retrain flow does")]


@app.command()
def train(
    overrides: Overrides = None,
    params: Params = DEFAULT_PARAMS,
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint in train.out_dir")] = True,
    mlflow: Track = True,
    mlflow_run_id: Annotated[str | None, typer.Option(
        help="log into this existing MLflow run instead of opening one (the retrain flow's, under torchrun)")] = None,
    as_json: AsJson = False,
) -> None:
    """Train the GAN; write checkpoints, the generator package and a metrics JSON to train.out_dir (and, by default,
    log the training as an MLflow run, so `dvc repro`/`dvc exp run` trainings show in the MLflow UI too)."""
    import logging
    import os

    from gan_core.training.loop import Trainer

    # The trainer logs a line per train.log_every steps (resume decisions too) to stderr; stdout is the result.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    cfg = load_config(params, overrides)
    trainer = Trainer(cfg, resume=resume)
    trainer.prepare()  # data, device, outputs and the checkpoint are checked before any MLflow run is opened
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 tracks and reports
    if mlflow and rank0:
        from gan_core.tracking.runs import MLflowCallback, train_in_run
        from gan_core.tracking.store import check_tracking, configure

        check_tracking(cfg.registry, "train", write=True)
        if mlflow_run_id:
            trainer.callbacks.append(MLflowCallback(mlflow_run_id, configure(cfg.registry)))
            result = trainer.run()
        else:
            result = train_in_run(trainer)
    else:
        result = trainer.run()
    if rank0:
        resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
        ran = f"{result.trained_steps} step{'' if result.trained_steps == 1 else 's'}"
        report(f"trained to step {result.steps} ({ran} in {result.wall_time_s:.0f} s on {result.device}{resumed}): "
               f"{result.package_dir}; metrics in {result.metrics_path}",
               result.as_dict(), as_json)


@app.command()
def classifier(overrides: Overrides = None, params: Params = DEFAULT_PARAMS, as_json: AsJson = False) -> None:
    """Train the domain classifier used as the offline feature extractor (fid_lenet, class coverage); on data
    without labels that does not measure lenet, record that it is unused."""
    from gan_core.evaluation.extractors import train_extractor

    cfg = load_config(params, overrides)
    result = train_extractor(cfg, "lenet")
    if not result["used"]:
        report(f"classifier unused: {result['reason']}", result, as_json)
        return
    judges = result.get("judges", {})  # cyclegan's semantic term: a second classifier per domain (its own seed)
    infos = [*(result.get("domains") or {"": result}).values(), *judges.values()]
    done = "trained" if any(info.get("trained", True) for info in infos) else "reused"
    judged = f", judges {min(j['holdout_accuracy'] for j in judges.values()):.4g}" if judges else ""
    report(f"classifier {done}: held-out accuracy {result['holdout_accuracy']:.4g}{judged}; in "
           f"{cfg.eval.classifier.out_dir}", result, as_json)


@app.command()
def encoder(overrides: Overrides = None, params: Params = DEFAULT_PARAMS, as_json: AsJson = False) -> None:
    """Train the label-free domain encoder (fid_simclr, cluster_coverage_simclr) when eval.extractors measures
    simclr; otherwise record that it is unused."""
    from gan_core.evaluation.extractors import train_extractor

    cfg = load_config(params, overrides)
    result = train_extractor(cfg, "simclr")
    if not result["used"]:
        report(f"encoder unused: {result['reason']}", result, as_json)
        return
    done = "trained" if result["trained"] else "reused"
    report(f"encoder {done}: final loss {result['final_loss']:.4g} (chance {result['chance_loss']:.4g}), real halves "
           f"fid_simclr {result['real_halves_fid']:.4g}; in {cfg.eval.encoder.out_dir}", result, as_json)


@app.command()
def evaluate(
    overrides: Overrides = None,
    params: Params = DEFAULT_PARAMS,
    generator: Annotated[
        str | None,
        typer.Option(help="package directory or models:/<name>@<alias>; default {train.out_dir}/generator"),
    ] = None,
    mlflow: Track = True,
    as_json: AsJson = False,
) -> None:
    """Evaluate the trained generator against the prepared dataset; write metrics JSON and a sample grid."""
    from gan_core.evaluation.evaluate import METRICS_FILE
    from gan_core.evaluation.evaluate import evaluate as evaluate_generator

    cfg = load_config(params, overrides)
    if generator is not None and generator.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        from gan_core.tracking.store import check_tracking, configure

        # The configured store, not MLflow's default (./mlflow.db, created on first use); it must exist already.
        check_tracking(cfg.registry, "evaluate")
        configure(cfg.registry)
    result = evaluate_generator(cfg, generator)
    if generator is None and mlflow:  # the pipeline's own generator: its training run gets the evaluation
        from gan_core.tracking.runs import log_to_training_run
        from gan_core.tracking.store import check_tracking

        check_tracking(cfg.registry, "evaluate")
        log_to_training_run(cfg, result.metrics, result.context)
    gated = list(dict.fromkeys([cfg.gate.primary_metric, *sorted(cfg.gate.thresholds)]))
    report(f"evaluated {generator or Path(cfg.train.out_dir) / 'generator'}: {_numbers(result.metrics, gated)}; all "
           f"{len(result.metrics)} metrics in {Path(cfg.eval.out_dir) / METRICS_FILE}", result.as_dict(), as_json)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_app(app, argv))


__all__ = ["app", "main", "run_app", "print_json", "print_error", "print_internal_error",
           "package_version", "Version"]
