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

from gan_core.errors import ServiceUnavailable, UserError

DEPLOYMENT_NAME = "ganops-retrain"
SERVER_HELP = (
    "schedules need a Prefect server: run `prefect server start` in another terminal, then "
    "`export PREFECT_API_URL=http://127.0.0.1:4200/api`"
)


def api_url() -> str | None:
    """The Prefect API this process talks to, or None for the ephemeral one (which cannot run schedules)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def check_server(url: str, step: str = "schedule", hint: str = SERVER_HELP) -> None:
    """Raise ServiceUnavailable (one line, naming `step`) unless the Prefect API at `url` answers its health check
    within the probe timeout: Prefect's own client would retry a silent server for minutes."""
    import httpx

    from gan_core.tracking.store import PROBE_TIMEOUT_S, connection_problem, service_timeout_s

    timeout = min(PROBE_TIMEOUT_S, service_timeout_s())
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
    except httpx.TimeoutException:
        reason = f"no answer within {timeout:g} s"
    except httpx.HTTPError as e:
        reason = connection_problem(e)
    else:
        if response.is_success:
            return
        reason = f"its /health answered HTTP {response.status_code} (PREFECT_API_URL should end in /api)"
    raise ServiceUnavailable("Prefect API", f"PREFECT_API_URL={url}", step, reason, hint)


def check_prefect_api(step: str) -> None:
    """Probe the Prefect server when PREFECT_API_URL names one (the ephemeral API needs no check)."""
    url = api_url()
    if url is not None:
        check_server(url, step, "start it (`prefect server start`), or unset PREFECT_API_URL to let ganops start a "
                     "temporary local API")


def bound_prefect_client() -> None:
    """With a Prefect server (PREFECT_API_URL set), keep one API request that stops answering within about
    GANOPS_SERVICE_TIMEOUT: 3 attempts of budget/4 s, 2 s and 4 s apart, instead of Prefect's 6 attempts of 60 s.
    A user's own PREFECT_CLIENT_MAX_RETRIES / PREFECT_API_REQUEST_TIMEOUT win. Prefect reads its settings when
    it is imported: call this first."""
    import os

    from gan_core.tracking.store import service_timeout_s

    if not os.environ.get("PREFECT_API_URL"):
        return
    budget = service_timeout_s()
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "2")
    os.environ.setdefault("PREFECT_API_REQUEST_TIMEOUT", f"{budget / 4:g}")


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

    from gan_core.config import load_config
    from gan_core.tracking.store import check_tracking

    # Arguments first: a typo in --cron is reported as such, not as a missing server. Then what every scheduled
    # run would trip over (the params file, its values, the tracking server), now rather than at 03:00.
    deployment = retrain_deployment(cron=cron, interval=interval, params=params, overrides=overrides, name=name)
    check_tracking(load_config(params, overrides or []).registry, "schedule")
    url = api_url()
    if url is None:
        raise UserError(SERVER_HELP)
    check_server(url)
    # One retrain at a time: two trainings would fight over train.out_dir and the CPU.
    serve(deployment, limit=1)
