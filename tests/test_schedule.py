"""Schedules: argument checks, the deployment `ganops schedule` serves, and — against a real `prefect server start`
on loopback — a scheduled retrain that fires and completes, plus prefect.yaml deploying to a process work pool."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from processes import free_port, stop_process_group

from gan_core.errors import UserError

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- without a server
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "every night"}, "not a cron expression"),
        ({"cron": "0 3 * * *", "interval": 60}, "exactly one of"),
        ({}, "exactly one of"),
        ({"interval": -5}, "positive number of seconds"),
    ],
)
def test_bad_schedule_arguments_are_user_errors(kwargs: dict, message: str) -> None:
    from flows.schedule import retrain_deployment

    with pytest.raises(UserError, match=message):
        retrain_deployment(**kwargs)


def test_deployment_serves_the_retrain_flow_with_its_schedule_and_parameters() -> None:
    from flows.schedule import retrain_deployment

    cron = retrain_deployment(cron="0 3 * * *", params="my.yaml", overrides=["train.steps=10"])
    assert cron.entrypoint == "flows.retrain.retrain"
    assert cron.parameters == {"params": "my.yaml", "overrides": ["train.steps=10"]}
    assert [s.schedule.cron for s in cron.schedules] == ["0 3 * * *"]
    every = retrain_deployment(interval=90)
    assert [s.schedule.interval for s in every.schedules] == [datetime.timedelta(seconds=90)]


def test_schedule_without_a_server_says_how_to_start_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(updates={PREFECT_API_URL: None}), pytest.raises(SystemExit) as exit_:
        main(["schedule", "--cron", "0 3 * * *"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "prefect server start" in err and "PREFECT_API_URL" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    # A bad argument is named as such, before the missing server.
    with temporary_settings(updates={PREFECT_API_URL: None}), pytest.raises(SystemExit) as exit_:
        main(["schedule", "--cron", "every night"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "not a cron expression" in err and "prefect server start" not in err


# ----------------------------------------------------------------------------- a real server
@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME; yields the env that talks to it.
    One per module: it takes ~15-30 s to come up on 2 busy cores."""
    tmp_path = tmp_path_factory.mktemp("prefect_server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect_home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        # The scheduler and the runner poll every second instead of every minute / ten seconds.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, f"prefect server exited: {(tmp_path / 'server.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "prefect server did not answer /api/health within 90 s"
            time.sleep(0.5)
        yield env
    finally:
        stop_process_group(server)
        log.close()


def _flow_runs(api: str, deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scheduled_retrain_fires_and_completes(
    prefect_server: dict[str, str], retrain_workspace, tmp_path: Path
) -> None:
    ws = retrain_workspace(tmp_path / "ws")
    # Served from the workspace, not the repo: the deployment imports flows.retrain by module path.
    env = {**prefect_server, "MLFLOW_TRACKING_URI": ws.db_uri, "PYTHONPATH": str(REPO)}
    api = env["PREFECT_API_URL"]
    log_path = tmp_path / "runner.log"
    with log_path.open("w") as log:
        runner = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "schedule", "--interval", "5", "--params", str(ws.params)],
            cwd=ws.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            completed = None
            while completed is None:
                tail = log_path.read_text()[-3000:]
                assert runner.poll() is None, f"`ganops schedule` exited: {tail}"
                assert time.monotonic() < deadline, f"no scheduled run completed in 180 s: {tail}"
                runs = _flow_runs(api, "ganops-retrain")
                bad = [r for r in runs if r.state and r.state.type.value in ("FAILED", "CRASHED")]
                assert not bad, f"scheduled run {bad[0].name} ended {bad[0].state.type.value}: {tail}"
                completed = next((r for r in runs if r.state and r.state.type.value == "COMPLETED"), None)
                time.sleep(1)
        finally:
            stop_process_group(runner)
    # Created by the server's scheduler from the interval, not triggered by hand.
    assert completed.auto_scheduled
    assert completed.parameters["params"] == str(ws.params)
    # The run did the real work: a version in this store now holds the champion alias.
    cfg = ws.config()
    champion = ws.client().get_model_version_by_alias(cfg.registry.model_name, cfg.registry.champion_alias)
    assert str(champion.version) == "1" and "data source `digits`" in champion.description


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_prefect_yaml_deploys_a_cron_schedule_to_a_process_work_pool(
    prefect_server: dict[str, str], tmp_path: Path
) -> None:
    import yaml

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployment = spec["deployments"][0]
    project = tmp_path / "project"
    # `prefect deploy` runs from the project directory: a copy of the code, so the test never writes to the repo.
    for package in ("flows", "gan_core"):
        shutil.copytree(REPO / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("prefect.yaml", "params.yaml"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "configs", project / "configs")
    pool = deployment["work_pool"]["name"]
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "prefect", *args], cwd=project, env=prefect_server,
        capture_output=True, text=True, timeout=120,
    )
    created = run("work-pool", "create", pool, "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = run("--no-prompt", "deploy", "--name", deployment["name"])
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            live = client.read_deployment_by_name(f"retrain/{deployment['name']}")
    assert live.work_pool_name == pool
    assert [s.schedule.cron for s in live.schedules] == [deployment["schedules"][0]["cron"]]
    # The sweep deployment: one sweep process per flow run, unscheduled, so several workers can join a study.
    sweep_spec = next(d for d in spec["deployments"] if d["entrypoint"] == "flows/sweep/flow.py:sweep")
    deployed = run("--no-prompt", "deploy", "--name", sweep_spec["name"])
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    with temporary_settings(updates={PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            swept = client.read_deployment_by_name(f"sweep/{sweep_spec['name']}")
    assert swept.work_pool_name == pool and not swept.schedules
    assert swept.parameters["space"] == "configs/sweeps/dcgan.yaml" and (project / swept.parameters["space"]).is_file()
    assert live.entrypoint == deployment["entrypoint"]
    # Workers run the flow from the directory it was deployed from.
    assert live.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}
    ]
