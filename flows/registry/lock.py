"""The promotion lock: every alias move of one store happens under it, so promotions finishing together serialise.

    with promotion_lock(registry.uri): ...     # or `with registry.lock(): ...`

A lock file beside an embedded SQLite store; for a tracking server, a Prefect global concurrency limit (one slot)
when a Prefect server is configured — a service every host that promotes already shares —, else a lock file per
tracking URI on this host. fcntl-style locks (filelock) are released by the OS if the holder dies, and a Prefect
slot is a lease that expires, so a crash never wedges promotion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from gan_core.errors import UserError
from gan_core.redact import clean_url
from gan_core.tracking.store import sqlite_path

LOCK_TIMEOUT_S = 120.0
LOCK_LEASE_S = 60.0
"""A promotion's Prefect slot is a lease renewed while it runs: a holder that dies frees it within this time."""


@contextmanager
def promotion_lock(uri: str) -> Iterator[None]:
    """Serialise alias moves on the store at tracking URI `uri`: a lock file beside a SQLite store; for a tracking
    server, a Prefect global concurrency limit named after it when a Prefect server is configured (hosts that
    promote share it), else a lock file per tracking URI on this host."""
    db = sqlite_path(uri)
    uri = clean_url(uri)  # one lock per server, whoever signs in to it
    if db is None and prefect_server_url() is not None:
        with shared_promotion_lock(uri):
            yield
        return
    if db is not None:
        lock_path = db.with_name(db.name + ".promote.lock")
    else:
        # One host only: several hosts promoting against one tracking server need a Prefect server (above).
        digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
        lock_path = Path.home() / ".cache" / "ganops" / "locks" / f"{digest}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock_path, timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout:
        raise UserError(f"another promotion holds {lock_path} for over {LOCK_TIMEOUT_S:.0f} s; retry later") from None


def prefect_server_url() -> str | None:
    """The Prefect API this process talks to when it is a server (PREFECT_API_URL), None for the ephemeral one."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


@contextmanager
def shared_promotion_lock(tracking: str) -> Iterator[None]:
    """One slot of the global concurrency limit `ganops-promote-<hash of the tracking URI>` (created with limit 1
    on first use), held while the alias moves: every host promoting to that registry waits for it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = f"ganops-promote-{hashlib.sha256(tracking.encode()).hexdigest()[:16]}"
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass  # another host created it first
    try:
        # strict: a limit that vanished must fail the promotion, not let it run unserialised.
        with concurrency(name, occupy=1, timeout_seconds=LOCK_TIMEOUT_S, lease_duration=LOCK_LEASE_S, strict=True):
            yield
    except TimeoutError:
        raise UserError(f"another promotion holds the Prefect concurrency limit {name!r} for over "
                        f"{LOCK_TIMEOUT_S:.0f} s; retry later") from None
