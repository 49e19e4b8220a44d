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
from processes import free_port, serve_model, stop_process_group, wait_until_ready

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

    server, base = serve_model(f"models:/{NAME}@champion", mlflow_store.uri, tmp_path)
    try:
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

        # MLflow's other request forms ask for the same rows: `inputs` as one request, as columns or as records,
        # and `instances`; the images are those of the dataframe forms.
        for request, rows in [
            ({"inputs": {"n": 2, "seed": 5}}, [(0, 2, 5)]),
            ({"inputs": {"n": [2, 1], "seed": [5, 0]}}, [(0, 2, 5), (1, 1, 0)]),
            ({"inputs": [{"n": 1, "seed": 0}, {"n": 2, "seed": 5}]}, [(0, 1, 0), (1, 2, 5)]),
            ({"instances": [{"n": 2, "seed": 5}]}, [(0, 2, 5)]),
        ]:
            status, body = _post(f"{base}/invocations", request)
            assert status == 200, (request, body)
            generator = load_generator(generator_package)
            expected = torch.cat([sample_images(generator, n, seed=seed) for _, n, seed in rows])
            assert torch.equal(decode_predictions(body["predictions"]), expected), request
            assert [r["request"] for r in body["predictions"]] == [i for i, n, _ in rows for _ in range(n)]
        status, body = _post(f"{base}/invocations", {"inputs": {"n": [2, 3], "seed": [0]}})
        assert (status, body.get("message")) == (400, "column 'seed' does not hold one value per request (2 in 'n'); "
                                                      "as columns, every input is a list of the same length")
        status, body = _post(f"{base}/invocations", {"inputs": {"n": 1.5}})
        assert (status, body.get("message")) == (400, "request 0: n=1.5; expected an integer in [1, 1024]")

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
    # User errors are answered, not logged as server failures.
    assert "Traceback" not in (tmp_path / "server.log").read_text()



@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_models_serve_in_mlflows_own_virtualenv_needs_only_the_model(generator_package: Path, tmp_path: Path) -> None:
    """`mlflow models serve` with MLflow's default env manager (virtualenv): MLflow builds an environment from the
    model's requirements alone (no ganops in it) and the model brings gan_core itself (`code_paths`). It answers
    both request forms, {"dataframe_records": ...} and {"inputs": {...}}, with the package's own images.

    Needs pyenv (MLflow's virtualenv manager finds the model's Python with it) and a package index. The first run
    builds the environment (about 4 minutes here, 6 GB: torch's CUDA build); MLflow keeps it under MLFLOW_ENV_ROOT
    (default ~/.mlflow/envs) and later runs reuse it."""
    import re
    import shutil

    from pyfunc import save_pyfunc

    if shutil.which("pyenv") is None:
        pytest.skip("MLflow's virtualenv env manager needs pyenv on PATH")
    model = save_pyfunc(generator_package, tmp_path / "model")
    requirements = (model / "requirements.txt").read_text().split()
    assert {f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"} <= set(requirements)
    assert not [r for r in requirements if r.startswith("ganops")]  # not on PyPI: the model carries gan_core instead
    assert (model / "code" / "gan_core" / "serving" / "generator_model.py").is_file()

    port = free_port()
    env = {**os.environ, "GANOPS_DEVICE": "cpu",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "MLFLOW_LOGGING_LEVEL": "INFO"}  # MLflow names the environment at INFO (a CLI test set WARNING here)
    env.pop("PYTHONPATH", None)  # nothing of the repo's: the server's gan_core can only be the model's copy
    log_path = tmp_path / "server.log"
    log = log_path.open("wb")
    server = subprocess.Popen(  # no --env-manager: MLflow's default, virtualenv
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model), "-h", "127.0.0.1", "-p", str(port),
         "-w", "1"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(server, f"{base}/ping", timeout_s=1100, log=log_path)
        expected = sample_images(load_generator(generator_package), 3, seed=5)
        for request in ({"dataframe_records": [{"n": 3, "seed": 5}]}, {"inputs": {"n": 3, "seed": 5}}):
            status, body = _post(f"{base}/invocations", request)
            assert status == 200, body
            assert torch.equal(decode_predictions(body["predictions"]), expected)
    finally:
        stop_process_group(server)
        log.close()
    # The environment MLflow served from has no gan_core of its own.
    envs = re.findall(r"(?:environment in|Environment) (\S+)", log_path.read_text())
    assert envs, log_path.read_text()[-2000:]
    python = Path(envs[-1]) / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import gan_core"], cwd=tmp_path, env=env, capture_output=True)
    assert probe.returncode != 0 and b"No module named 'gan_core'" in probe.stderr
