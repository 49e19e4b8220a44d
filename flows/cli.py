"""`ganops` — the service's command line.

    ganops demo                                   # the main job on defaults (what `make demo` runs)
    ganops retrain train.steps=200                # the retrain flow, with dotted overrides
    ganops models                                 # registered versions, metrics, gate results, aliases
    ganops promote 3                              # gated; --force needs --reason
    ganops rollback                               # champion back to the previous one
    ganops generate --model models:/ganops-generator@champion -n 64 --out grid.png
    ganops schedule --cron "0 3 * * *"            # serve the retrain flow on a schedule
    ganops ui                                     # the MLflow UI on the local store

Trailing `key=value` arguments override params.yaml; `--params PATH` picks another file.
"""

from __future__ import annotations

import typer

from gan_core.cli import run_app

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__)


def main(argv: list[str] | None = None) -> None:
    raise SystemExit(run_app(app, argv))
