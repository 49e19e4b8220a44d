"""Credentials never leave the environment (gan_core.redact): a team's setup, tried for real.

An MLflow tracking server on loopback behind a gateway that requires HTTP basic auth (tests/services.py's
AuthProxy: every request without the password is refused), reached with the credentials in the URI as MLflow
accepts them (MLFLOW_TRACKING_URI=http://alice:<password>@127.0.0.1:<port>), AWS variables set. A retrain, a sweep,
`ganops models`, the monitor and failures run against it through the CLI, and the planted secrets must appear in
none of: stdout/stderr, the Prefect database, the MLflow store (params, tags, descriptions), the artifacts, or the
workspace's outputs. Each place is also checked to hold what the commands wrote (the run, its cleaned link), so an
empty search cannot pass.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

PASSWORD = "Planted-pw-5d1f7c"
AWS_SECRET = "Planted-aws-93be0a"
USER = "alice"
SPACE = {"trials": 2, "pruning": {"enabled": False}, "params": {"train.batch_size": {"choices": [8, 16]}}}


def _files_holding(root: Path, *needles: str) -> list[str]:
    """Every file under `root` (or `root` itself) whose bytes contain one of `needles`."""
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    found = []
    for path in paths:
        data = path.read_bytes()
        if any(n.encode() in data for n in needles):
            found.append(str(path))
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, _mlflow_template_db: Path) -> Iterator[dict[str, Any]]:
    """A tracking server (SQLite store, local artifacts served through it) behind the basic-auth gateway."""
    from services import basic_auth_proxy, local_mlflow_server

    root = tmp_path_factory.mktemp("auth-server")
    db = root / "store.db"
    shutil.copyfile(_mlflow_template_db, db)  # migrated once per session
    with local_mlflow_server(f"sqlite:///{db}", root / "artifacts", root / "server.log") as upstream:
        with basic_auth_proxy(upstream, USER, PASSWORD) as proxy:
            yield {"root": root, "db": db, "artifacts": root / "artifacts", "proxy": proxy}


@pytest.mark.slow
def test_a_password_in_the_tracking_uri_is_written_nowhere(
    prefect_harness: None, server: dict[str, Any], retrain_workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import requests
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL
    from processes import free_port

    from flows.cli import main

    proxy = server["proxy"]
    host = proxy.url.removeprefix("http://")
    ws = retrain_workspace(tmp_path / "ws")
    (ws.root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    monkeypatch.chdir(ws.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{USER}:{PASSWORD}@{host}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPLANTED")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    assert requests.get(f"{proxy.url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10).status_code == 401
    proxy.refused.clear()  # that one was ours, without the password

    def ganops(*args: str) -> int:
        with pytest.raises(SystemExit) as exit_:
            main([*args, "--params", str(ws.params)])
        return exit_.value.code

    assert ganops("retrain") == 0
    # The sweep's best trial may tie the champion the retrain just made (exit 3, rejected) or beat it (0): either
    # way it ran to a gate decision through the gateway (2 would be a refused store, 1 a crash).
    assert ganops("sweep", "--space", "space.yaml", "--storage", f"sqlite:///{ws.root / 'optuna.db'}") in (0, 3)
    assert ganops("models") == 0
    assert ganops("monitor") == 0
    assert ganops("models", "--recipe", "conditional") == 2  # no such model: the error names the store
    # A tracking server that does not answer, with the same credentials: the error names it.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{USER}:{PASSWORD}@127.0.0.1:{free_port()}")
    assert ganops("models") == 2
    assert ganops("retrain") == 2
    APILogHandler().flush()  # the flow-run logs still in this process's queue

    out, err = capfd.readouterr()
    printed = out + err
    assert proxy.refused == [], "every request carried the credentials"  # the secret was in use all along
    # Printed: the outcome, the store, the errors; MLflow's own links are off. ganops's own run link goes to the
    # flow-run log (checked in Prefect's database below): Prefect's console handler keeps the stream it was made
    # with, in a whole suite an earlier test's capture, so capfd cannot be relied on to see it.
    assert "status: promoted (version 1)" in printed
    assert f"store http://{host};" in printed and f"no registered model 'ganops-conditional' in http://{host}" in err
    assert "MLflow tracking server http://127.0.0.1:" in err and "🏃 View run" not in printed
    assert PASSWORD not in printed and AWS_SECRET not in printed

    # The Prefect database (artifacts, logs, events, states, parameters), with its write-ahead log.
    prefect_db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().removeprefix("sqlite+aiosqlite:///"))
    assert _files_holding(prefect_db.parent, f"http://{host}/#/experiments/"), "the report's run link is there"
    assert _files_holding(prefect_db.parent, PASSWORD, AWS_SECRET) == []

    # The MLflow store: params, tags, run and version descriptions; checked through the API and as bytes.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{server['db']}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    texts = [str(v) for r in runs for v in (*r.data.params.values(), *r.data.tags.values())]
    texts += [mv.description or "" for mv in client.search_model_versions()] + [
        m.description or "" for m in client.search_registered_models()]
    assert any(f"http://{host}" in t for t in texts)  # a link the descriptions carry, cleaned
    assert not [t for t in texts if PASSWORD in t or AWS_SECRET in t]
    assert _files_holding(server["db"].parent, "ganops-generator") and not _files_holding(
        server["db"].parent, PASSWORD, AWS_SECRET)

    # The artifacts (models, config.yaml, sample grids, sweep tables) and everything the commands left in the
    # workspace (outputs, caches, the study's database).
    assert list(server["artifacts"].rglob("config.yaml"))
    assert _files_holding(server["artifacts"], PASSWORD, AWS_SECRET) == []
    assert list(ws.root.rglob("weights.safetensors"))
    assert _files_holding(ws.root, PASSWORD, AWS_SECRET) == []
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
