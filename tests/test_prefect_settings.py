"""Prefect settings the project sets in pyproject.toml's [tool.prefect] (issue 10), read as `ganops` reads them: by a
fresh Python process whose working directory is the repo root (the ephemeral API server it starts is a subprocess in
that same directory). Prefect reads that table from the working directory only, so a control run elsewhere shows
Prefect's own defaults, proving the repo-root results come from the project file.

Every probe runs with no PREFECT_* variable from the caller (conftest sets PREFECT_SERVER_ANALYTICS_ENABLED=false
for the whole session; a developer may export PREFECT_API_URL) and a fresh PREFECT_HOME (no profile), so only the
project's files decide.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# What Prefect itself decides from its settings: the heartbeat service is scheduled in the ephemeral server only when
# its enabled_getter (server.analytics_enabled) says so; importing the module registers it.
PROBE = """
import json
import prefect.server.services.telemetry
from prefect.server.services.perpetual_services import get_enabled_perpetual_services
from prefect.settings import get_current_settings

s = get_current_settings()
print(json.dumps({
    "analytics_enabled": s.server.analytics_enabled,
    "startup_timeout_seconds": s.server.ephemeral.startup_timeout_seconds,
    "ephemeral_services": sorted(c.function.__name__ for c in get_enabled_perpetual_services(ephemeral=True)),
}))
"""

# A flow on the ephemeral API (no PREFECT_API_URL): the heartbeat, when enabled, runs as the server's background
# worker starts, before the client's first request; the flow keeps the server up a second longer.
TINY_FLOW = """
import time
from prefect import flow

@flow
def tiny() -> int:
    time.sleep(1)
    return 1

assert tiny() == 1
"""


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(home)
    env.update(extra)
    return env


def _run(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _probe(cwd: Path, home: Path, **extra: str) -> dict[str, Any]:
    done = _run(PROBE, cwd, _env(home, **extra))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_repo_root_turns_prefect_telemetry_off(tmp_path: Path) -> None:
    got = _probe(REPO_ROOT, tmp_path / "home")
    assert got["analytics_enabled"] is False
    assert "send_telemetry_heartbeat" not in got["ephemeral_services"]
    assert got["startup_timeout_seconds"] == 60


def test_outside_the_repo_prefect_defaults_apply(tmp_path: Path) -> None:
    """The control: the same probe from a directory without the project files sees the heartbeat scheduled."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    got = _probe(elsewhere, tmp_path / "home")
    assert got["analytics_enabled"] is True
    assert "send_telemetry_heartbeat" in got["ephemeral_services"]
    assert got["startup_timeout_seconds"] != 60


def test_env_var_opts_back_in(tmp_path: Path) -> None:
    """Environment variables rank above [tool.prefect], as pyproject.toml's comment tells users."""
    got = _probe(REPO_ROOT, tmp_path / "home", PREFECT_SERVER_ANALYTICS_ENABLED="true")
    assert got["analytics_enabled"] is True
    assert "send_telemetry_heartbeat" in got["ephemeral_services"]


@pytest.mark.slow
def test_ephemeral_server_from_repo_root_runs_no_heartbeat(tmp_path: Path) -> None:
    """A real ephemeral server started from the repo root: with telemetry on, its heartbeat either stores the
    TELEMETRY_SESSION row or logs its failure (the SQLite lock, or the DNS error offline); here neither happens."""
    home = tmp_path / "home"
    done = _run(TINY_FLOW, REPO_ROOT, _env(home))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "database is locked" not in output
    assert "telemetry" not in output.lower()
    with sqlite3.connect(home / "prefect.db") as db:
        states = db.execute("SELECT state_type FROM flow_run").fetchall()
        telemetry = db.execute("SELECT key FROM configuration WHERE key = 'TELEMETRY_SESSION'").fetchall()
    assert states == [("COMPLETED",)]
    assert telemetry == []
