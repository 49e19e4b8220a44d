"""`mlflow models serve --env-manager local` on the champion answers a real HTTP request with PNG images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from processes import free_port, stop_process_group, wait_until_ready

from gan_core.config import RegistryConfig
from gan_core.packaging.generator import load_generator, sample_images
from gan_core.serving.generator_model import decode_predictions, log_generator
from gan_core.tracking.store import experiment_id

REPO = Path(__file__).resolve().parents[1]
NAME = "ganops-generator"


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_models_serve_answers_with_base64_pngs(mlflow_store, generator_package: Path, tmp_path: Path) -> None:
    registry = RegistryConfig(tracking_uri=mlflow_store.uri, artifact_location=str(mlflow_store.artifacts))
    client = MlflowClient(mlflow_store.uri)
    run = client.create_run(experiment_id(registry, client))
    info = log_generator(generator_package, run_id=run.info.run_id)
    client.set_terminated(run.info.run_id)
    client.set_registered_model_alias(NAME, "champion", mlflow.register_model(info.model_uri, NAME).version)

    port = free_port()
    # As in an activated venv: MLflow execs `uvicorn` from PATH, and gan_core must be importable by the server
    # (installed with `pip install -e .`, or here on PYTHONPATH).
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store.uri, "GANOPS_DEVICE": "cpu",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(server, f"{base}/ping")

        request = {"dataframe_records": [{"n": 4, "seed": 0, "labels": [3, 1, 4, 1]}]}
        status, body = _post(f"{base}/invocations", request)
        assert status == 200, body
        rows = body["predictions"]
        assert [(r["request"], r["index"], r["label"], r["shape"]) for r in rows] == [
            (0, i, label, [1, 16, 16]) for i, label in enumerate([3, 1, 4, 1])
        ]
        expected = sample_images(load_generator(generator_package), 4, seed=0, labels=[3, 1, 4, 1])
        assert torch.equal(decode_predictions(rows), expected)

        # The split form works too, and a request without labels cycles the classes.
        status, body = _post(f"{base}/invocations", {"dataframe_split": {"columns": ["n", "seed"], "data": [[2, 5]]}})
        assert status == 200 and [r["label"] for r in body["predictions"]] == [0, 1]

        # Integers only, checked on the request as sent: MLflow casts nothing first (1.5 used to become 1 image).
        # The message is ganops' one line, not MLflow's "Failed to predict data '<the whole input>'..." rewrite.
        for rows, message in [
            ([{"n": 0}], "request 0: n=0; expected an integer in [1, 1024]"),
            ([{"n": 1.5}], "request 0: n=1.5; expected an integer in [1, 1024]"),
            ([{"n": "2"}], "request 0: n='2'; expected an integer in [1, 1024]"),
            ([{"n": True}], "request 0: n=True; expected an integer in [1, 1024]"),
            ([{"n": 2, "seed": 0.5}], "request 0: seed=0.5; expected an integer in [0, 2**63 - 1]"),
            ([{"n": 2, "labels": [1.5, 2]}], "request 0: labels=[1.5, 2]; expected 2 integer class ids, one per image"),
            ([{"seed": 1}], "each request needs `n`, the number of images"),
            ([{"n": 2, "seeds": 1}],
             "unknown column(s) ['seeds']; a request has n, and optionally seed, labels and truncation_psi"),
        ]:
            status, body = _post(f"{base}/invocations", {"dataframe_records": rows})
            assert (status, body.get("error_code"), body.get("message")) == (400, "INVALID_PARAMETER_VALUE", message)
        # A missing cell in one row is not an error: pandas' NaN there means "use the default".
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"n": 1, "seed": 3}, {"n": 1}]})
        assert status == 200 and len(body["predictions"]) == 2
    finally:
        stop_process_group(server)
        log.close()
    # User errors are answered, not logged as server failures.
    assert "Traceback" not in (tmp_path / "server.log").read_text()

