"""gan_core's progress in the flow-run log: what Prefect's UI shows of a run between its tasks' state lines.

    send_library_logs_to_runs()    # first thing in a flow (idempotent): gan_core's and flows' loggers reach the
                                   # log of the flow run (and task run) they are emitted in

Prefect ships only its own loggers' records to its API; another package's reach a run's log through
PREFECT_LOGGING_EXTRA_LOGGERS, which Prefect reads once, when it configures logging at import, so a flow cannot set
it for itself (a worker or `prefect deploy` process has imported Prefect long before). Here the same handler is
attached to `gan_core` and `flows` in code, once per process, with a filter that ships only records emitted inside a
flow or task run (elsewhere Prefect's handler would warn about a missing run), and one that cleans URLs of
credentials (gan_core.redact): the log is stored in Prefect's database. A training's progress line
("step 500/2000 (25%) d_loss=... ETA ...", every train.log_every steps) then shows in the UI while it trains.
A distributed training logs from torchrun's processes: their lines reach the terminal, not the run's log.
"""

from __future__ import annotations

import logging

from gan_core.redact import RedactCredentials

LIBRARY_LOGGERS = ("gan_core", "flows")
"""Loggers whose INFO records (training progress, resume, the champion's re-measurement) belong in a run's log."""


class InsideARun(logging.Filter):
    """Passes records emitted inside a Prefect flow or task run only."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.context import FlowRunContext, TaskRunContext

        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def send_library_logs_to_runs() -> None:
    """Attach Prefect's API log handler to LIBRARY_LOGGERS (unless PREFECT_LOGGING_EXTRA_LOGGERS did) and let their
    INFO records through (Python's default level is WARNING); once per process."""
    from prefect.logging.handlers import APILogHandler

    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        if any(isinstance(h, APILogHandler) for h in logger.handlers):
            continue
        handler = APILogHandler()
        handler.addFilter(InsideARun())
        handler.addFilter(RedactCredentials())
        logger.addHandler(handler)
