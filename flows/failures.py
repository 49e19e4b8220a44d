"""How the flows fail: each step named, user errors on one line, retries only where a second try may help.

    with named_step("train"):            # any exception inside becomes RetrainFailed("train", cause)
        ...
    @task(**SERVICE_RETRIES)             # retry a step that talks to the MLflow store (is_transient decides)

Failures. Every step runs under `named_step(name)`: an exception becomes RetrainFailed("<step>: <cause>"), a failure
report is published, and since promotion is the last step and a single alias move, no alias moves on failure.
A user error (gan_core.errors.UserError, a service outage included) appears in Prefect's log as one-line state
lines, without a traceback (UserErrorsOnOneLine); an unexpected error keeps its traceback.

Services. One retry layer per service: MLflow's own HTTP retries for a tracking server (bounded by
GANOPS_SERVICE_TIMEOUT, see gan_core.tracking.store.mlflow_http_env), Prefect task retries only for a local or database
store, DVC's own clients for a remote. A step whose MLflow call failed while the server no longer answers the probe
is reported as that outage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.tasks import exponential_backoff

from gan_core.errors import ServiceUnavailable, UserError, find_user_error, first_line
from gan_core.redact import RedactCredentials, redact
from gan_core.tracking.store import check_tracking_server, is_http_uri


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what a second try may fix, and only where no lower layer retried already: not a UserError (a
    service outage included), not an MLflow error from a tracking server (MLflow's HTTP client retried it),
    not MLflow's 4xx answers (missing, invalid)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    error = state.data
    if find_user_error(error) is not None:
        return False
    if isinstance(error, MlflowException):
        if is_http_uri(mlflow.get_tracking_uri()):
            return False
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    return True


# Steps that talk to the MLflow store retry with exponential backoff: 2 s, 4 s, 8 s. Against a tracking server
# is_transient declines (MLflow's HTTP retries are the one layer there), so only a local SQLite store (a lock
# held by another process) or a database store is retried here.
SERVICE_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": is_transient,
}


class RetrainFailed(RuntimeError):
    """A step of the retrain flow failed; the message is `step '<step>' failed: <cause>` on one line.

    A user error's own message is the cause (it is written for the user); other errors get their type name. URLs in
    it are cleaned of credentials (gan_core.redact): Prefect keeps the message as the run's state message."""

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        self.cause = cause
        what = first_line(cause) if isinstance(cause, UserError) else f"{type(cause).__name__}: {first_line(cause)}"
        super().__init__(redact(f"step {step!r} failed: {what}"))


class UserErrorsOnOneLine(logging.Filter):
    """Prefect logs a failed task or flow run's exception with its traceback ("Task run failed with exception",
    "Encountered exception during execution"), then the run's final state on one line. For a user error, or a
    RetrainFailed caused by one, that state line and the flow's own `step ... failed` line say it all: the
    exception record is dropped. Unexpected errors keep theirs, traceback included."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and find_user_error(record.exc_info[1]) is not None)


PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


def quiet_user_errors() -> None:
    """Install UserErrorsOnOneLine on the loggers Prefect's engines log run failures to, then RedactCredentials
    (a failure's traceback may quote a URL; the flow-run log is stored in Prefect's database), once per process."""
    for name in PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        for kind in (UserErrorsOnOneLine, RedactCredentials):
            if not any(isinstance(f, kind) for f in logger.filters):
                logger.addFilter(kind())


# At import: every process that runs these flows imports this module first (CLI, tests, a served deployment).
quiet_user_errors()


@contextmanager
def named_step(name: str) -> Iterator[None]:
    """Name the step an exception came from: any exception inside becomes RetrainFailed(name, cause); an MLflow
    error while the tracking server no longer answers becomes that outage (one line, not the client's chain)."""
    try:
        yield
    except RetrainFailed:
        raise
    except Exception as e:
        raise RetrainFailed(name, tracking_outage(name, e) or e) from e


def tracking_outage(step: str, error: Exception) -> ServiceUnavailable | None:
    """ServiceUnavailable when `error` came from MLflow and its tracking server does not answer a probe now."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = mlflow.get_tracking_uri()
    if not (isinstance(error, MlflowException) and is_http_uri(uri)):
        return None
    try:
        check_tracking_server(uri, step)
    except ServiceUnavailable as outage:
        return outage
    return None
