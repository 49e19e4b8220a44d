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
