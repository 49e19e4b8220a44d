"""Past one machine, against real services on loopback: an MLflow tracking server on PostgreSQL with artifacts in
S3 (served through the tracking server), and a Prefect server on its own database of the same PostgreSQL. Every
service is started here and stopped afterwards; every flow here runs against that Prefect server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import S3, S3_CREDENTIALS, Postgres, TrackingServer, mlflow_server, postgres, prefect_server, s3
from test_dvc import _dvc, _locked, _run, make_clone
from test_schedule import _flow_runs

pytestmark = [pytest.mark.scale, pytest.mark.slow]


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Postgres, S3]]:
    """One PostgreSQL server and S3 for the module: (the server, whose databases are `mlflow`, `prefect` and
    `optuna`, the bucket)."""
    with postgres(tmp_path_factory.mktemp("pg")) as server, s3() as store:
        yield server, store


@pytest.fixture(scope="module")
def tracking_server(databases: tuple[Postgres, S3], tmp_path_factory: pytest.TempPathFactory,
                    ) -> Iterator[TrackingServer]:
    """The MLflow tracking server on them (a test may restart it)."""
    server, store = databases
    with mlflow_server(server.database("mlflow"), store, tmp_path_factory.mktemp("mlflow") / "mlflow.log") as mlflow:
        yield mlflow


@pytest.fixture(scope="module")
def services(tracking_server: TrackingServer) -> tuple[str, S3]:
    """(The tracking server's URL, the bucket)."""
    return tracking_server.url, tracking_server.store


@pytest.fixture(scope="module")
def prefect_api(databases: tuple[Postgres, S3], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start` on the module's PostgreSQL (database `prefect`): its API URL."""
    server, _ = databases
    with prefect_server(tmp_path_factory.mktemp("prefect"), server.database("prefect", driver="asyncpg")) as api:
        yield api


@pytest.fixture
def on_prefect_server(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test, and the processes it starts, talk to the module's Prefect server (not the session's ephemeral
    API): its API URL. Promotions against the tracking server then serialise through it, as across hosts."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    _flush_prefect_workers()  # what earlier tests queued goes to the API they ran on
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        yield prefect_api
        _flush_prefect_workers()


def _flush_prefect_workers() -> None:
    """Send what Prefect's log and event workers queued, and stop them; the next flow starts new ones. They live
    for the process: undrained, a flow's events are still being sent when its API changes or stops (a failed
    heartbeat event, logged as an error). Prefect's test harness drains them the same way."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30, at_exit=False)
    EventsWorker.drain_all(timeout=30, at_exit=False)


def test_a_retrain_against_a_tracking_server_keeps_every_artifact_in_s3(
    services: tuple[str, S3], on_prefect_server: str, retrain_workspace: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.cli import app
    from flows.retrain import retrain
    from gan_core.cli import run_app
    from gan_core.packaging.generator import load_generator, sample_images

    url, store = services
    ws = retrain_workspace(tmp_path / "training-host")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(ws.root)
    result = retrain(params=str(ws.params))
    assert result["status"] == "promoted" and str(result["version"]) == "1"

    # The generator, the sample grids and the evaluation files went to the bucket, none to the training host.
    keys = store.keys()
    assert any(k.endswith("/weights.safetensors") for k in keys), keys[:20]
    assert any(k.endswith(".png") for k in keys) and any(k.endswith("metrics.json") for k in keys)
    local_artifacts = ws.root / "mlruns" / "artifacts"
    assert not local_artifacts.exists() or not any(local_artifacts.rglob("*"))

    # Another host: none of the training host's files, only the server's address.
    shutil.rmtree(ws.root)
    elsewhere = tmp_path / "other-host"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    G = load_generator("models:/ganops-generator@champion")
    assert sample_images(G, 2, seed=0).shape == (2, 1, 16, 16)
    assert run_app(app, ["models"]) == 0


def test_every_registry_feature_works_against_the_tracking_server(
    services: tuple[str, S3], on_prefect_server: str, retrain_workspace: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import subprocess
    import sys

    import yaml
    from mlflow import MlflowClient
    from processes import free_port, stop_process_group, wait_until_ready
    from test_serve import _post

    from flows.cli import app
    from flows.monitor import monitor
    from flows.retrain import retrain
    from gan_core.cli import run_app

    url, _ = services
    ws = retrain_workspace(tmp_path / "host")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # a seconds-long run gets samples too
    monkeypatch.chdir(ws.root)
    name = "scale-generator"  # its own registered model and experiment in the shared server
    tree = yaml.safe_load(ws.params.read_text())
    tree["registry"].update(model_name=name, experiment="scale")
    params = ws.root / "scale.yaml"
    params.write_text(yaml.safe_dump(tree))
    first = retrain(params=str(params))
    second = retrain(params=str(params), overrides=["train.steps=30"])
    assert first["status"] == "promoted" and second["status"] in ("promoted", "rejected")

    # What the run holds: params, step metrics, system metrics, the sample grids and the evaluation.
    client = MlflowClient(url)
    run = client.get_run(first["run_id"])
    assert run.data.params["train.steps"] == "20" and "fid_lenet" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "g_loss")) >= 2
    assert any(key.startswith("system/") for key in run.data.metrics)
    assert client.list_artifacts(run.info.run_id, "eval")

    # Forced promotion and rollback move the alias on the server; every version stays.
    assert run_app(app, ["promote", "2", "--force", "--reason", "scale test", "--params", str(params)]) == 0
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert run_app(app, ["rollback", "--params", str(params)]) == 0
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert {v.version for v in client.search_model_versions(f"name='{name}'")} == {"1", "2"}
    grid = tmp_path / "grid.png"
    assert run_app(app, ["generate", "--model", f"models:/{name}@champion", "-n", "4", "--out", str(grid)]) == 0
    assert grid.stat().st_size > 0

    # The monitor re-measures the champion pulled from the server.
    steady = monitor(params=str(params))
    assert steady["champion"] == "1" and steady["action"] == "none"

    # Serving pulls the model from the server (its artifacts from S3, through the server).
    port = free_port()
    # No AWS_* variables: a client of the tracking server needs no access to the bucket.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, "MLFLOW_TRACKING_URI": url,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}  # uvicorn
    with (tmp_path / "serve.log").open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@champion", "--env-manager",
             "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_ready(server, f"http://127.0.0.1:{port}/ping")
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": [{"n": 2, "seed": 0}]})
        assert status == 200 and len(body["predictions"]) == 2
    finally:
        stop_process_group(server)



def _race_worker(env: dict[str, str], params: str, version: str, barrier, results) -> None:  # noqa: ANN001
    """Another host: its own environment (HOME, so no lock file in common), the shared servers' addresses."""
    import os

    os.environ.update(env)
    from flows import registry
    from gan_core.config import load_config

    handle = registry.Registry(load_config(params))
    handle.client().search_registered_models()  # connect before the start line
    barrier.wait(timeout=60)
    results.put((version, registry.promote(handle, version)["promoted"]))


@pytest.mark.timeout(300)
def test_promotions_racing_from_separate_hosts_serialise_through_the_prefect_server(
    services: tuple[str, S3], on_prefect_server: str, generator_package: Path, digits_prepared: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json
    import multiprocessing as mp

    import yaml
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from pyfunc import save_pyfunc

    from flows import registry
    from gan_core.config import load_config
    from gan_core.tracking.runs import training_tags
    from gan_core.tracking.store import experiment_id

    url, _ = services
    name = "race-generator"
    params = tmp_path / "race.yaml"
    params.write_text(yaml.safe_dump({
        "gate": {"thresholds": {"fid_lenet": {"max": 50.0}}, "primary_metric": "fid_lenet", "min_improvement": 0.05},
        "registry": {"model_name": name, "experiment": "race"},
        "data": {"source": "digits", "prepared_dir": str(digits_prepared)},  # the lineage tags read its version
    }))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    cfg = load_config(params)
    client = MlflowClient(url)
    model = save_pyfunc(generator_package, tmp_path / "pyfunc")

    # One evaluation context for the synthetic metrics: the gate compares them as recorded.
    context = {"format": "ganops-eval-context/1", "task": "generation", "data_version": "synthetic.dir", "seed": 1,
               "extractors": {}}

    def candidate(fid: float) -> str:
        run = client.create_run(experiment_id(cfg.registry, client))
        client.log_artifacts(run.info.run_id, str(model), "generator")
        client.set_terminated(run.info.run_id, "FINISHED")
        return registry.register_candidate(cfg, f"runs:/{run.info.run_id}/generator", run_id=run.info.run_id,
                                           metrics={"fid_lenet": fid}, tags=training_tags(cfg),
                                           context=context)["version"]

    base = candidate(49.0)
    racers = {candidate(fid): fid for fid in (40.0, 30.0, 35.0, 44.0)}  # every one beats the champion by > 5%
    best = min(racers, key=racers.get)

    assert registry.promote(cfg, base)["promoted"]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(racers)), ctx.Queue()
    workers = []
    for i, version in enumerate(racers):
        home = tmp_path / f"host{i}"
        home.mkdir()
        env = {"HOME": str(home), "MLFLOW_TRACKING_URI": url, "PREFECT_API_URL": on_prefect_server}
        workers.append(ctx.Process(target=_race_worker, args=(env, str(params), version, barrier, results)))
    for w in workers:
        w.start()
    outcomes = dict(results.get(timeout=180) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    with get_client(sync_client=True) as prefect:
        limits = {limit.name: limit.limit for limit in prefect.read_global_concurrency_limits()}

    # The one shared lock was used: promotions serialised, so the best racer ends as champion whatever the order.
    assert [limit for name_, limit in limits.items() if name_.startswith("ganops-promote-")] == [1]
    model_info = client.get_registered_model(name)
    assert str(model_info.aliases["champion"]) == best, (outcomes, racers)
    assert outcomes[best] is True
    # No version and no champion lost: each promoted racer replaced the champion of its moment.
    assert {v.version for v in client.search_model_versions(f"name='{name}'")} == {base, *racers}
    history = json.loads(model_info.tags[registry.HISTORY_TAG])
    promoted = [v for v, won in outcomes.items() if won]
    assert history[0] == base and len(history) == len(promoted) and set(history[1:]) <= set(promoted)
    fids = [49.0, *(racers[v] for v in history[1:]), racers[best]]
    assert fids == sorted(fids, reverse=True), f"each champion beat the one before: {fids}"


def test_dvc_pushes_to_and_pulls_from_an_s3_remote(services: tuple[str, S3], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe of README's "From one machine to many": an S3 remote, its endpoint in DVC's config, credentials
    from the usual variables (never in the repo)."""
    _, store = services
    clone = make_clone(tmp_path)
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    _dvc(clone, "remote", "add", "--default", "--force", "storage", f"s3://{store.bucket}/dvc")
    _dvc(clone, "remote", "modify", "storage", "endpointurl", store.endpoint)
    assert "testing" not in (clone / ".dvc" / "config").read_text()
    _dvc(clone, "repro", "prepare")
    _dvc(clone, "push", "prepare")
    assert any(key.startswith("dvc/") for key in store.keys())
    _run(clone, "git", "add", "-A")
    _run(clone, "git", "commit", "-q", "-m", "data on s3")

    other = clone.parent / "other-host"
    _run(clone.parent, "git", "clone", "-q", str(clone), str(other))
    _dvc(other, "pull", "prepare")
    def files(prepared: Path) -> dict[str, bytes]:  # meta.json and the shards
        return {p.relative_to(prepared).as_posix(): p.read_bytes() for p in prepared.rglob("*") if p.is_file()}

    assert files(other / "data" / "prepared") == files(clone / "data" / "prepared")
    assert _locked(other) == _locked(clone)

    # The remote goes away: the flow's push step fails within the budget, on one line naming the remote.
    import time

    from processes import free_port

    from flows.dvc_pipeline import dvc_push
    from gan_core.errors import ServiceUnavailable

    _dvc(other, "remote", "modify", "storage", "endpointurl", f"http://127.0.0.1:{free_port()}")
    monkeypatch.chdir(other)
    monkeypatch.setenv("HOME", str(other.parent / "home"))
    _run(other, "python", "-m", "gan_core", "prepare", "data.max_images=40")  # new data to push
    _dvc(other, "commit", "--force", "prepare")
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable) as failure:
        dvc_push("prepare")
    message = str(failure.value)
    assert "DVC remote 'storage' (s3://" in message and "unreachable (step 'push_data'): connection refused" in message
    assert "\n" not in message and time.monotonic() - start < 120


@pytest.mark.timeout(420)
def test_a_worker_runs_the_deployed_retrain_through_a_tracking_server_restart(
    tracking_server: TrackingServer, on_prefect_server: str, retrain_workspace: Any, tmp_path: Path,
) -> None:
    """prefect.yaml deployed to the Prefect server, a process worker picks up a run with tiny-training parameters.
    While the flow's own subprocess trains and logs, the tracking server restarts (gone for the seconds its start
    takes here): the MLflow retries that process set up carry its requests over the gap, and the run completes with
    its MLflow run, version and champion on the tracking server."""
    import json
    import os
    import subprocess
    import sys
    import threading
    import time

    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client

    url, api = tracking_server.url, on_prefect_server
    ws = retrain_workspace(tmp_path / "ws")  # its params.yaml keeps every path under ws.root
    project = tmp_path / "project"  # `prefect deploy` runs from a copy of the checkout: never writes to the repo
    repo = Path(__file__).resolve().parents[1]
    for package in ("flows", "gan_core"):
        shutil.copytree(repo / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("prefect.yaml", "params.yaml"):
        shutil.copy(repo / name, project / name)
    env = {**os.environ, "PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": url, "PREFECT_WORKER_QUERY_SECONDS": "1"}

    def prefect(*args: str, timeout: float = 120) -> str:
        done = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    prefect("work-pool", "create", "ganops-process", "--type", "process")
    prefect("--no-prompt", "deploy", "--name", "ganops-retrain-nightly")
    overrides = ["registry.model_name=worker-generator", "registry.experiment=worker", "train.steps=60",
                 "train.log_every=5"]
    prefect("deployment", "run", "retrain/ganops-retrain-nightly", "-p", f"params={ws.params}",
            "-p", f"overrides={json.dumps(overrides)}")
    outage: dict[str, float] = {}

    def restart_once_training_logs() -> None:
        client = MlflowClient(url)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # once the training run logs its first steps
            experiment = client.get_experiment_by_name("worker")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and "g_loss" in client.get_run(runs[0].info.run_id).data.metrics:
                break
            time.sleep(0.2)
        tracking_server.stop()
        outage["down"] = time.time()
        tracking_server.start()
        outage["up"] = time.time()

    restarter = threading.Thread(target=restart_once_training_logs)
    restarter.start()
    try:
        prefect("worker", "start", "--pool", "ganops-process", "--run-once", timeout=300)
    finally:
        restarter.join(timeout=240)
    with get_client(sync_client=True) as prefect_client:
        # The nightly cron also scheduled future runs; the one triggered here is the one that ran.
        (run,) = [r for r in _flow_runs(api, "ganops-retrain-nightly") if r.state.type.value != "SCHEDULED"]
        summaries = [a for a in prefect_client.read_artifacts() if a.flow_run_id == run.id]
    assert run.state.type.value == "COMPLETED", run.state
    assert "retrain-summary" in {a.key for a in summaries}
    assert set(outage) == {"down", "up"}, "the tracking server was never restarted"

    client = MlflowClient(url)
    champion = client.get_model_version_by_alias("worker-generator", "champion")
    mlflow_run = client.get_run(champion.run_id)
    assert mlflow_run.data.tags["prefect.flow_run_id"] == str(run.id)
    # The server went down while the run was live: the run's later requests crossed the gap.
    assert mlflow_run.info.start_time / 1000 < outage["down"] < mlflow_run.info.end_time / 1000


@pytest.mark.timeout(300)
def test_a_served_schedule_fires_on_the_prefect_server(
    databases: tuple[Postgres, S3], on_prefect_server: str, retrain_workspace: Any, tmp_path: Path,
) -> None:
    """`ganops schedule --interval 5` against the Prefect server: its scheduler creates the run and the served
    deployment completes it (test_schedule's check, on this server), and the run is stored in PostgreSQL."""
    import os

    import sqlalchemy
    import test_schedule

    env = {**os.environ, "PREFECT_API_URL": on_prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    test_schedule.test_scheduled_retrain_fires_and_completes(env, retrain_workspace, tmp_path)

    server, _ = databases
    engine = sqlalchemy.create_engine(server.database("prefect"))
    try:
        with engine.connect() as prefect_db:
            extensions = prefect_db.execute(sqlalchemy.text("SELECT extname FROM pg_extension")).scalars().all()
            completed = prefect_db.execute(sqlalchemy.text(
                "SELECT count(*) FROM flow_run WHERE auto_scheduled AND state_type = 'COMPLETED'")).scalar()
    finally:
        engine.dispose()
    assert "pg_trgm" in extensions and completed >= 1  # created by Prefect's migrations; the run fired above


def test_a_sweep_shares_its_study_in_postgresql_and_its_runs_on_the_tracking_server(
    databases: tuple[Postgres, S3], services: tuple[str, S3], on_prefect_server: str, retrain_workspace: Any,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a tracking server there is no SQLite file to sit beside: the study goes to a PostgreSQL database
    (registry.study_storage / --storage) that every sweep host reaches."""
    import optuna
    import yaml
    from mlflow import MlflowClient

    from flows.sweep import sweep

    server, _ = databases
    url, store = services
    storage = server.database("optuna")
    ws = retrain_workspace(tmp_path / "sweep-host")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.chdir(ws.root)
    space = ws.root / "space.yaml"
    space.write_text(yaml.safe_dump({"trials": 2, "pruning": {"enabled": False},
                                     "params": {"train.g_optimizer.lr": {"low": 1e-4, "high": 1e-3, "log": True}}}))
    tree = yaml.safe_load(ws.params.read_text())
    tree["registry"].update(study_storage=storage, model_name="ganops-swept")
    ws.params.write_text(yaml.safe_dump(tree, sort_keys=False))
    result = sweep(space=str(space), params=str(ws.params))

    study = optuna.load_study(study_name="space", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(url)
    best = min(study.trials, key=lambda t: t.value)
    version = client.get_model_version("ganops-swept", result["version"])
    assert version.run_id == best.user_attrs["mlflow_run_id"] and result["status"] == "promoted"
    parent = client.get_run(result["sweep"]["parent_run_id"])
    assert parent.data.tags["sweep.best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert any(k.endswith("sweep/trials.csv") for k in store.keys())  # the results went to the bucket too
