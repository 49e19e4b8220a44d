"""Past one machine, against real services on loopback: an MLflow tracking server on PostgreSQL with artifacts in
S3 (served through the tracking server). Every service is started here and stopped afterwards."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import S3, mlflow_server, postgres, s3

pytestmark = [pytest.mark.scale, pytest.mark.slow]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, S3]]:
    root = tmp_path_factory.mktemp("services")
    with postgres(root / "pg") as database, s3() as store, mlflow_server(database, store, root / "mlflow.log") as url:
        yield url, store


def test_a_retrain_against_a_tracking_server_keeps_every_artifact_in_s3(
    services: tuple[str, S3], prefect_harness: None, retrain_workspace: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.cli import app
    from flows.retrain import retrain
    from gan_core.cli import run_app
    from gan_core.package import load_generator, sample_images

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
    services: tuple[str, S3], prefect_harness: None, retrain_workspace: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import subprocess
    import sys

    import yaml
    from mlflow import MlflowClient
    from processes import free_port, stop_process_group
    from test_serve import _post, _wait_until_ready

    from flows.cli import app
    from flows.monitor import monitor
    from flows.retrain import retrain
    from gan_core.cli import run_app

    url, _ = services
    ws = retrain_workspace(tmp_path / "host")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # a seconds-long training gets samples too
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
        _wait_until_ready(server, f"http://127.0.0.1:{port}/ping")
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": [{"n": 2, "seed": 0}]})
        assert status == 200 and len(body["predictions"]) == 2
    finally:
        stop_process_group(server)

