"""Run the retrain flow on a schedule by serving it: a deployment plus a runner in this process.

    prefect server start                                   # schedules need a real Prefect server
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    ganops schedule --cron "0 3 * * *"                     # every night at 03:00 (the server's time zone: UTC)
    ganops schedule --interval 3600 train.steps=500        # every hour, with overrides

The runner polls the server for scheduled runs of the deployment and runs each one in a subprocess that imports
`flows.retrain` (so start it from the project directory). Stop it with Ctrl-C (its schedule is paused).
For work pools and workers instead of a long-running `serve`, see prefect.yaml (`prefect deploy`).
"""

from __future__ import annotations

import datetime
from typing import Any

from gan_core.errors import UserError

DEPLOYMENT_NAME = "ganops-retrain"
SERVER_HELP = (
    "schedules need a Prefect server: run `prefect server start` in another terminal, then "
    "`export PREFECT_API_URL=http://127.0.0.1:4200/api`"
)


def api_url() -> str | None:
    """The Prefect API this process talks to, or None for the ephemeral one (which cannot run schedules)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def check_server(url: str) -> None:
    """Raise UserError unless the Prefect API at `url` answers its health check."""
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as e:
        problem = f"no Prefect server answers at PREFECT_API_URL={url} ({type(e).__name__})"
        raise UserError(f"{problem}; {SERVER_HELP}") from None


def retrain_deployment(
    cron: str | None = None,
    interval: float | None = None,
    params: str = "params.yaml",
    overrides: list[str] | None = None,
    name: str = DEPLOYMENT_NAME,
) -> Any:
    """A RunnerDeployment of the retrain flow with one schedule (cron or interval in seconds)."""
    from prefect.deployments.runner import EntrypointType

    from flows.retrain import retrain

    if (cron is None) == (interval is None):
        raise UserError("give exactly one of --cron EXPR or --interval SECONDS")
    if interval is not None and interval <= 0:
        raise UserError(f"--interval must be a positive number of seconds, got {interval}")
    if cron is not None:
        from prefect.client.schemas.schedules import CronSchedule
        from pydantic import ValidationError

        try:
            CronSchedule(cron=cron)
        except ValidationError:
            raise UserError(f"--cron {cron!r} is not a cron expression; expected e.g. '0 3 * * *'") from None
    return retrain.to_deployment(
        name=name,
        cron=cron,
        interval=datetime.timedelta(seconds=interval) if interval is not None else None,
        parameters={"params": params, "overrides": list(overrides or [])},
        description="Retrain the GAN on schedule: data → train → evaluate → register → gate → promote.",
        tags=["ganops"],
        # Runs import `flows.retrain` by module path, so they work from any checkout location.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve_retrain(
    cron: str | None = None,
    interval: float | None = None,
    params: str = "params.yaml",
    overrides: list[str] | None = None,
    name: str = DEPLOYMENT_NAME,
) -> None:
    """Register the scheduled deployment with the Prefect server and run its flow runs until interrupted."""
    from prefect import serve

    # Arguments first: a typo in --cron is reported as such, not as a missing server.
    deployment = retrain_deployment(cron=cron, interval=interval, params=params, overrides=overrides, name=name)
    url = api_url()
    if url is None:
        raise UserError(SERVER_HELP)
    check_server(url)
    # One retrain at a time: two trainings would fight over train.out_dir and the CPU.
    serve(deployment, limit=1)
