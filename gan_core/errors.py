"""The exception types for user errors: entry points print their message on one line, no traceback, exit 2.

    raise UserError("train.steps=-1: expected a number of steps >= 1")
    raise ServiceUnavailable("MLflow tracking server", uri, step="models", reason="connection refused",
                             hint="start it or set MLFLOW_TRACKING_URI")
    find_user_error(exc)   # the UserError behind a wrapper (flows.retrain.RetrainFailed), else None
"""

from __future__ import annotations

from gan_core.redact import redact


class UserError(Exception):
    """Bad input from the user (config, paths, data, model URIs).

    The message names the bad value and what is accepted. Every URL in it is cleaned of credentials
    (gan_core.redact): a message is printed, logged and stored by Prefect as a run's state message."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ServiceUnavailable(UserError):
    """A service ganops talks to (MLflow tracking server, DVC remote, Prefect API) did not answer in time.

    Not a bug in ganops and not fixed by a traceback: the user starts the service or points ganops elsewhere,
    so it is reported like a user error (one line, exit 2), naming the service, where it was sought and the step."""

    def __init__(
        self, service: str, target: str, step: str, reason: str, hint: str, state: str = "unreachable"
    ) -> None:
        self.service, self.target, self.step = service, target, step
        super().__init__(f"{service} {target} {state} (step {step!r}): {first_line(reason)}; {hint}")


def first_line(text: object) -> str:
    """The first non-empty line of `text` (messages from libraries may span lines; ours never do)."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def find_user_error(exc: BaseException | None) -> UserError | None:
    """`exc` when it is a UserError, else the UserError it wraps, else None.

    Follows explicit causes only (`raise X from e`, and a `cause` attribute such as RetrainFailed's), never the
    implicit context: an internal error raised while handling a user error is still an internal error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)
        exc = cause if isinstance(cause, BaseException) else exc.__cause__
    return None


class ConfigError(UserError, ValueError):
    """A user error in params.yaml or an override; the message is one line, ready to print."""
