"""The generator as a pickle-free pyfunc model: log, register, load by alias, predict, and `ganops generate`."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image
from pyfunc import save_pyfunc
from safetensors.torch import load_file

from flows.cli import app
from gan_core.cli import run_app
from gan_core.config import RegistryConfig
from gan_core.errors import UserError
from gan_core.packaging.generator import WEIGHTS_FILE, load_generator, sample_images
from gan_core.serving.generator_model import decode_predictions, log_generator
from gan_core.tracking.store import experiment_id

NAME = "ganops-generator"


@pytest.fixture()
def champion_uri(mlflow_store, generator_package: Path) -> str:
    """The package logged as a pyfunc model in a real run, registered, and given the champion alias."""
    registry = RegistryConfig(tracking_uri=mlflow_store.uri, artifact_location=str(mlflow_store.artifacts))
    client = MlflowClient(mlflow_store.uri)
    run = client.create_run(experiment_id(registry, client))
    info = log_generator(generator_package, run_id=run.info.run_id)
    client.set_terminated(run.info.run_id)
    version = mlflow.register_model(info.model_uri, NAME).version
    client.set_registered_model_alias(NAME, "champion", version)
    return f"models:/{NAME}@champion"


def test_the_logged_model_holds_code_and_safetensors_not_pickles(champion_uri: str, tmp_path: Path) -> None:
    local = Path(mlflow.artifacts.download_artifacts(champion_uri, dst_path=str(tmp_path)))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".pth"))], files
    expected = {"artifacts/generator/weights.safetensors", "artifacts/generator/generator.json",
                "generator_entry.py"}
    assert expected <= files
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # "models from code": no cloudpickle
    assert Path(pyfunc["model_code_path"]).name == "generator_entry.py"
    # No input schema: MLflow would cast requests to it (n=1.5 → 1) and drop unknown columns before predict.
    assert mlmodel["signature"]["inputs"] is None
    outputs = yaml.safe_load(mlmodel["signature"]["outputs"])
    assert [c["name"] for c in outputs] == ["request", "index", "label", "shape", "png_base64"]
    assert (local / "input_example.json").is_file() and (local / "serving_input_example.json").is_file()
    # The model carries gan_core (MLflow's code_paths, put on sys.path when it loads): the entry imports it, and ganops
    # is on no package index, so the requirements name what gan_core imports instead.
    assert pyfunc["code"] == "code"
    assert {"code/gan_core/__init__.py", "code/gan_core/serving/generator_model.py"} <= files
    assert not [f for f in files if "__pycache__" in f]
    requirements = (local / "requirements.txt").read_text().split()
    assert {"safetensors>=0.4", "pandas", "pillow>=10"} <= set(requirements)
    assert any(r.startswith("torch==") for r in requirements) and not any(r.startswith("ganops") for r in requirements)


def test_predict_by_alias_returns_the_generators_images_as_png(champion_uri: str, generator_package: Path) -> None:
    model = mlflow.pyfunc.load_model(champion_uri)
    requests = pd.DataFrame([{"n": 3, "seed": 7, "labels": [4, 5, 6]}, {"n": 2, "seed": 1, "labels": []}])
    out = model.predict(requests)
    assert list(out.columns) == ["request", "index", "label", "shape", "png_base64"]
    assert out["request"].tolist() == [0, 0, 0, 1, 1] and out["index"].tolist() == [0, 1, 2, 0, 1]
    assert out["label"].tolist() == [4, 5, 6, 0, 1]  # no labels: classes cycle from 0
    assert all(list(s) == [1, 16, 16] for s in out["shape"])
    images = decode_predictions(out)  # uint8 (5, 1, 16, 16)

    direct = load_generator(generator_package)
    assert torch.equal(images[:3], sample_images(direct, 3, seed=7, labels=[4, 5, 6]))
    assert torch.equal(images[3:], sample_images(direct, 2, seed=1))
    # The same request gives the same images; another seed gives others.
    assert torch.equal(decode_predictions(model.predict({"n": 2, "seed": 1})), images[3:])
    assert not torch.equal(decode_predictions(model.predict({"n": 2, "seed": 2})), images[3:])


BAD_REQUESTS = [
    # (id, rows, what the one-line message must say)
    ("n-fraction", [{"n": 1.5}], r"request 0: n=1.5; expected an integer in \[1, 1024\]"),
    ("n-string", [{"n": "2"}], "n='2'"),
    ("n-bool", [{"n": True}], "n=True"),
    ("n-negative", [{"n": -1}], "n=-1"),
    ("n-zero", [{"n": 0}], r"n=0; expected an integer in \[1, 1024\]"),
    ("n-too-many", [{"n": 2000}], "n=2000"),
    ("n-null", [{"n": None}], "n=None"),
    ("n-list", [{"n": [2]}], r"n=\[2\]"),
    ("n-missing", [{"seed": 1}], "each request needs `n`"),
    ("n-fraction-in-second-row", [{"n": 2}, {"n": 1.5}], "request 1: n=1.5"),
    ("seed-fraction", [{"n": 2, "seed": 1.5}], "seed=1.5"),
    ("seed-string", [{"n": 2, "seed": "7"}], "seed='7'"),
    ("seed-negative", [{"n": 2, "seed": -1}], r"seed=-1; expected an integer in \[0, 2\*\*63 - 1\]"),
    ("seed-above-int64", [{"n": 2, "seed": 2**63}], "seed=9223372036854775808"),
    ("seed-huge", [{"n": 2, "seed": 10**30}], "seed=1000000000000000000000000000000"),
    ("labels-fractions", [{"n": 2, "labels": [1.5, 2]}], "expected 2 integer class ids"),
    ("labels-strings", [{"n": 2, "labels": ["1", "2"]}], r"labels=\['1', '2'\]"),
    ("labels-bools", [{"n": 2, "labels": [True, False]}], "labels=\\[True, False\\]"),
    ("labels-a-string", [{"n": 2, "labels": "0,1"}], "labels='0,1'"),
    ("labels-count", [{"n": 2, "labels": [1, 2, 3]}], "expected 2 integer class ids"),
    ("labels-out-of-range", [{"n": 2, "labels": [1, 10]}], r"labels must lie in \[0, 9\]"),
    ("labels-negative", [{"n": 2, "labels": [-1, 0]}], r"labels must lie in \[0, 9\]"),
    ("unknown-column", [{"n": 2, "seeds": 3}], r"unknown column\(s\) \['seeds'\]"),
    ("too-many-in-all", [{"n": 1000}, {"n": 100}], "ask for 1100 images in all; at most 1024"),
]


@pytest.fixture(scope="module")
def pyfunc_model(generator_package: Path, tmp_path_factory: pytest.TempPathFactory) -> mlflow.pyfunc.PyFuncModel:
    """The same pyfunc model saved to a directory and loaded once (no tracking store needed to predict)."""
    path = save_pyfunc(generator_package, tmp_path_factory.mktemp("pyfunc") / "model")
    return mlflow.pyfunc.load_model(str(path))


@pytest.mark.parametrize(("rows", "message"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_predict_rejects_bad_requests(pyfunc_model, rows: list[dict], message: str) -> None:
    with pytest.raises(MlflowException, match=message) as info:
        pyfunc_model.predict(pd.DataFrame(rows))
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"  # HTTP 400 through `mlflow models serve`
    assert "\n" not in info.value.message


def test_predict_takes_rows_that_leave_out_optional_cells(pyfunc_model, generator_package: Path) -> None:
    """pandas fills a cell one row leaves out with NaN, which turns the column's other integers into floats."""
    out = pyfunc_model.predict(pd.DataFrame([{"n": 2, "seed": 5, "labels": [7, 8]}, {"n": 1}]))
    assert out["request"].tolist() == [0, 0, 1] and out["label"].tolist() == [7, 8, 0]
    direct = load_generator(generator_package)
    images = decode_predictions(out)
    assert torch.equal(images[:2], sample_images(direct, 2, seed=5, labels=[7, 8]))
    assert torch.equal(images[2:], sample_images(direct, 1, seed=0))


def test_load_generator_by_alias_gives_the_packaged_weights(champion_uri: str, generator_package: Path) -> None:
    generator = load_generator(champion_uri, device="cpu")
    weights = load_file(generator_package / WEIGHTS_FILE)
    state = generator.state_dict()
    assert state.keys() == weights.keys()
    assert all(torch.equal(state[k], weights[k]) for k in weights)
    assert not generator.training and generator.spec["num_classes"] == 10


def test_ganops_generate_writes_a_grid_of_the_champions_images(
    champion_uri: str,
    mlflow_store,
    generator_package: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "grids" / "grid.png"
    labels = ",".join(str(i) for i in range(10))
    argv = ["generate", "-n", "10", "--out", str(out), "--seed", "3", "--labels", labels, "--device", "cpu"]
    assert run_app(app, argv) == 0
    assert f"to {out}" in capsys.readouterr().out
    grid = np.asarray(Image.open(out))  # ceil(sqrt(10)) = 4 per row, 3 rows, 2 px borders: (56, 74, 3)
    assert grid.shape == (3 * 18 + 2, 4 * 18 + 2, 3)
    expected = sample_images(load_generator(generator_package), 10, seed=3, labels=list(range(10)))
    for i in range(10):
        row, col = divmod(i, 4)
        tile = grid[2 + 18 * row : 18 + 18 * row, 2 + 18 * col : 18 + 18 * col, 0]
        assert np.array_equal(tile, expected[i, 0].numpy()), f"tile {i}"
    assert [p.name for p in out.parent.iterdir()] == ["grid.png"]  # no temp file left behind

    # Downstream use needs no checkout: with no params.yaml in the cwd, the defaults + MLFLOW_TRACKING_URI serve.
    monkeypatch.chdir(tmp_path)
    assert run_app(app, ["generate", "--model", champion_uri, "-n", "4", "--out", "g.png", "--device", "cpu"]) == 0
    assert (tmp_path / "g.png").is_file()
    assert run_app(app, ["generate", "-n", "abc"]) == 2
    assert "Invalid value for '-n'" in capsys.readouterr().err

    assert run_app(app, ["generate", "--labels", "a,b", "--out", str(out)]) == 2
    assert "--labels 'a,b'" in capsys.readouterr().err
    missing = f"models:/{NAME}@nonexistent"
    assert run_app(app, ["generate", "--model", missing, "--out", str(out)]) == 2
    assert f"error: {missing}: 'ganops-generator' has no alias @nonexistent (its aliases: @champion = v1); name " \
        "one of them, or a version such as models:/ganops-generator/1" in capsys.readouterr().err
    # load_generator itself, without the CLI's registry check, still says it cannot fetch it.
    with pytest.raises(UserError, match=f"cannot fetch '{missing}'"):
        load_generator(missing)
