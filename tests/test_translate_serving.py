"""The translator as a pickle-free pyfunc model (predict, bad requests, `mlflow models serve`), `translate_files`
and `ganops translate`: real packages, real MLflow, real PNGs."""

from __future__ import annotations

import base64
import io
import json
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
from processes import serve_model, stop_process_group
from pyfunc import save_pyfunc
from test_serve import _post

from flows.cli import app
from gan_core.cli import run_app
from gan_core.config import RegistryConfig
from gan_core.errors import UserError
from gan_core.packaging.translator import load_translator, read_image, translate_images
from gan_core.serving.translate import translate_files
from gan_core.serving.translator_model import (
    MAX_BASE64_CHARS,
    MAX_REQUESTS,
    decode_translations,
    log_translator,
)
from gan_core.tracking.store import experiment_id

REPO = Path(__file__).resolve().parents[1]
NAME = "test-translator"
SHAPE = (1, 16, 16)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _digit(seed: int, size: int = 16) -> bytes:
    """A grayscale PNG (a bright blob on black, like the digits), `size` px square."""
    rng = np.random.default_rng(seed)
    array = np.zeros((size, size), dtype=np.uint8)
    blob = (slice(size // 4, 3 * size // 4), slice(size // 3, 2 * size // 3))
    array[blob] = rng.integers(128, 256, array[blob].shape)
    return _png(array)


def _expected(translator_package: Path, data: bytes, direction: str) -> torch.Tensor:
    translator = load_translator(translator_package, direction=direction)
    return translate_images(translator, read_image(data, SHAPE)[None])


@pytest.fixture(scope="module")
def model_dir(translator_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The translator saved as a pyfunc model directory (no tracking store needed)."""
    return save_pyfunc(translator_package, tmp_path_factory.mktemp("pyfunc_translator") / "model")


@pytest.fixture(scope="module")
def pyfunc_model(model_dir: Path) -> mlflow.pyfunc.PyFuncModel:
    return mlflow.pyfunc.load_model(str(model_dir))


@pytest.fixture()
def champion_uri(mlflow_store, translator_package: Path) -> str:
    """The package logged in a real run with log_translator, registered as NAME, and given the champion alias."""
    registry = RegistryConfig(tracking_uri=mlflow_store.uri, artifact_location=str(mlflow_store.artifacts))
    client = MlflowClient(mlflow_store.uri)
    run = client.create_run(experiment_id(registry, client))
    info = log_translator(translator_package, run_id=run.info.run_id, name="translator")
    client.set_terminated(run.info.run_id)
    assert info.signature.inputs is None and info.run_id == run.info.run_id
    client.set_registered_model_alias(NAME, "champion", mlflow.register_model(info.model_uri, NAME).version)
    return f"models:/{NAME}@champion"


def test_saved_model_holds_code_safetensors_signature_and_example(model_dir: Path, translator_package: Path) -> None:
    files = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".pth"))], files
    package = f"artifacts/{translator_package.name}"  # MLflow keeps the package directory's name
    assert {f"{package}/weights.safetensors", f"{package}/translator.json", "translator_entry.py",
            "input_example.json", "serving_input_example.json", "code/gan_core/serving/translator_model.py"} <= files
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert mlmodel["signature"]["inputs"] is None  # MLflow would drop unknown columns (a typo'd "direction")
    outputs = yaml.safe_load(mlmodel["signature"]["outputs"])
    assert [c["name"] for c in outputs] == ["request", "direction", "shape", "png_base64"]
    example = json.loads((model_dir / "serving_input_example.json").read_text())["dataframe_split"]
    row = dict(zip(example["columns"], example["data"][0], strict=True))
    assert row["direction"] == "a2b"
    assert read_image(base64.b64decode(row["image"]), SHAPE).shape == SHAPE  # a real PNG of the package's shape


def test_predict_translates_both_directions(pyfunc_model, translator_package: Path) -> None:
    a, b = _digit(0), _digit(1, size=24)  # the second is fitted (resized) to 16 px, as prepare does
    out = pyfunc_model.predict(pd.DataFrame([{"image": _b64(a)}, {"image": _b64(b), "direction": "b2a"},
                                             {"image": _b64(b), "direction": "a2b"}]))
    assert list(out.columns) == ["request", "direction", "shape", "png_base64"]
    assert out["request"].tolist() == [0, 1, 2] and out["direction"].tolist() == ["a2b", "b2a", "a2b"]
    assert all(list(s) == list(SHAPE) for s in out["shape"])
    images = decode_translations(out)
    assert images.shape == (3, *SHAPE) and images.dtype == torch.uint8
    assert torch.equal(images[0:1], _expected(translator_package, a, "a2b"))
    assert torch.equal(images[1:2], _expected(translator_package, b, "b2a"))
    assert torch.equal(images[2:3], _expected(translator_package, b, "a2b"))
    assert not torch.equal(images[1], images[2])  # the two directions are different networks
    # A dict is one request too; line-wrapped base64 is accepted.
    wrapped = "\n".join(_b64(a)[i : i + 76] for i in range(0, len(_b64(a)), 76))
    assert torch.equal(decode_translations(pyfunc_model.predict({"image": wrapped})), images[0:1])


def test_every_request_form_of_mlflows_scoring_server_translates_the_same(
    pyfunc_model, translator_package: Path
) -> None:
    """`inputs` as one request, as columns and as records, and `instances`, parsed as MLflow's server parses them
    (NumPy arrays, not a DataFrame), translate as `dataframe_records` does."""
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    a, b = _b64(_digit(0)), _b64(_digit(1))
    expected = torch.cat([_expected(translator_package, _digit(0), "b2a"),
                          _expected(translator_package, _digit(1), "a2b")])
    for body in ({"inputs": [{"image": a, "direction": "b2a"}, {"image": b}]},
                 {"inputs": {"image": [a, b], "direction": ["b2a", "a2b"]}},
                 {"instances": [{"image": a, "direction": "b2a"}, {"image": b, "direction": "a2b"}]}):
        out = pyfunc_model.predict(infer_and_parse_data(body))
        assert torch.equal(decode_translations(out), expected), body
    one = pyfunc_model.predict(infer_and_parse_data({"inputs": {"image": a, "direction": "b2a"}}))
    assert torch.equal(decode_translations(one), expected[:1])
    with pytest.raises(MlflowException, match=r"^unknown column\(s\) \['dirction'\]"):
        pyfunc_model.predict(infer_and_parse_data({"inputs": {"image": a, "dirction": "b2a"}}))


def _huge_png() -> bytes:
    return _png(np.zeros((4097, 4097), dtype=np.uint8))  # blank: compresses to a few KB


BAD_REQUESTS = [
    # (id, rows, what the one-line message must say)
    ("corrupt-base64", lambda: [{"image": "not base64!!"}], r"request 0: image is not valid base64"),
    ("corrupt-image", lambda: [{"image": _b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)}], r"request 0: image: "),
    ("not-an-image", lambda: [{"image": _b64(b"hello world")}], "request 0: image: not a PNG or JPEG image"),
    ("colour-image", lambda: [{"image": _b64(_digit(0))},
                              {"image": _b64(_png(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)))}],
     r"request 1: image: a colour \(RGB\) image; this translator takes 1-channel"),
    ("oversized-image", lambda: [{"image": _b64(_huge_png())}], r"request 0: image: 4097x4097 pixels is too large"),
    ("oversized-base64", lambda: [{"image": "A" * (MAX_BASE64_CHARS + 4)}],
     r"request 0: image is 8,388,612 base64 characters; at most 8,388,608"),
    ("empty-image", lambda: [{"image": ""}], "request 0: image is empty"),
    ("image-not-a-string", lambda: [{"image": 5}], "request 0: image=5; expected a base64 PNG or JPEG string"),
    ("image-missing-in-a-row", lambda: [{"image": _b64(_digit(0))}, {"direction": "b2a"}], "request 1: no image"),
    ("no-image-column", lambda: [{"direction": "b2a"}], "each request needs `image`"),
    ("bad-direction", lambda: [{"image": _b64(_digit(0)), "direction": "A2B"}],
     r"request 0: direction='A2B'; expected a2b \(domain A → B\) or b2a"),
    ("direction-not-a-string", lambda: [{"image": _b64(_digit(0)), "direction": 1}], "request 0: direction=1"),
    ("unknown-column", lambda: [{"image": _b64(_digit(0)), "dirction": "b2a"}], r"unknown column\(s\) \['dirction'\]"),
    ("too-many-rows", lambda: [{"image": "x"}] * (MAX_REQUESTS + 1),
     f"{MAX_REQUESTS + 1} requests in one call; at most {MAX_REQUESTS}"),
]


@pytest.mark.parametrize(("rows", "message"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_predict_rejects_bad_requests_naming_the_row(pyfunc_model, rows, message: str) -> None:
    with pytest.raises(MlflowException, match=message) as info:
        pyfunc_model.predict(pd.DataFrame(rows()))
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"  # HTTP 400 through `mlflow models serve`
    assert "\n" not in info.value.message


def _write_inputs(root: Path, count: int = 3) -> Path:
    inputs = root / "inputs"
    inputs.mkdir()
    for i in range(count):
        (inputs / f"digit{i}.png").write_bytes(_digit(i, size=16 + 4 * i))
    (inputs / "notes.txt").write_text("not an image, and not a .png: skipped\n")
    return inputs


def test_translate_files_writes_one_png_per_input(translator_package: Path, tmp_path: Path) -> None:
    inputs = _write_inputs(tmp_path)
    out = tmp_path / "out" / "b"
    written = translate_files(translator_package, inputs, out, direction="b2a", device="cpu")
    assert written == [out / f"digit{i}.png" for i in range(3)]
    assert sorted(p.name for p in out.iterdir()) == ["digit0.png", "digit1.png", "digit2.png"]  # no temp files
    for i, path in enumerate(written):
        got = torch.from_numpy(np.asarray(Image.open(path)).copy())[None, None]
        assert torch.equal(got, _expected(translator_package, (inputs / f"digit{i}.png").read_bytes(), "b2a"))
    # One file works too, into an existing directory.
    assert translate_files(translator_package, inputs / "digit0.png", out, device="cpu") == [out / "digit0.png"]


def test_translate_files_fails_on_one_bad_file_writing_nothing(translator_package: Path, tmp_path: Path) -> None:
    inputs = _write_inputs(tmp_path)
    (inputs / "digit1b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    out = tmp_path / "out"
    with pytest.raises(UserError) as info:
        translate_files(translator_package, inputs, out, device="cpu")
    assert str(inputs / "digit1b.png") in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()
    for bad_inputs, message in [(tmp_path / "missing", "does not exist"), (tmp_path / "out2", "no .png/.jpg")]:
        (tmp_path / "out2").mkdir(exist_ok=True)
        with pytest.raises(UserError, match=message):
            translate_files(translator_package, bad_inputs, tmp_path / "o", device="cpu")
    with pytest.raises(UserError, match="--direction 'ab'"):
        translate_files(translator_package, inputs, tmp_path / "o", direction="ab")
    with pytest.raises(UserError, match="is the input directory"):
        translate_files(translator_package, inputs, inputs, device="cpu")
    assert not (tmp_path / "o").exists()


def test_ganops_translate_cli(
    translator_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = _write_inputs(tmp_path)
    out = tmp_path / "translated"
    argv = ["translate", "--model", str(translator_package), "--input", str(inputs), "--out", str(out),
            "--direction", "b2a", "--device", "cpu"]
    assert run_app(app, argv) == 0
    stdout = capsys.readouterr().out
    assert str(out / "digit2.png") in stdout and "translated 3 images b2a" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["digit0.png", "digit1.png", "digit2.png"]

    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    for args, message in [
        (["--input", str(inputs), "--out", str(tmp_path / "x")], f"error: {inputs / 'broken.png'}: "),
        (["--input", str(inputs / "digit0.png"), "--out", str(tmp_path / "x"), "--direction", "ba"],
         "error: --direction 'ba': expected a2b"),
        (["--input", str(tmp_path / "nope"), "--out", str(tmp_path / "x")], "does not exist"),
        (["--input", str(inputs / "digit0.png"), "--out", str(inputs / "notes.txt")], "is not a directory"),
    ]:
        assert run_app(app, ["translate", "--model", str(translator_package), "--device", "cpu", *args]) == 2, args
        captured = capsys.readouterr()
        assert message in captured.err and "Traceback" not in captured.err + captured.out
        assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert not (tmp_path / "x").exists()


def test_ganops_translate_the_registered_champion(
    champion_uri: str, mlflow_store, translator_package: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The default --model is models:/<registry.model_name>@<champion alias> from --params."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"registry": {"model_name": NAME, "tracking_uri": mlflow_store.uri,
                                                   "artifact_location": str(mlflow_store.artifacts)}}))
    (tmp_path / "in.png").write_bytes(_digit(3))
    monkeypatch.chdir(tmp_path)
    argv = ["translate", "--params", str(params), "--input", "in.png", "--out", "out", "--direction", "b2a",
            "--device", "cpu"]
    assert run_app(app, argv) == 0
    assert f"with {champion_uri} into out" in capsys.readouterr().out
    got = torch.from_numpy(np.asarray(Image.open(tmp_path / "out" / "in.png")).copy())[None, None]
    assert torch.equal(got, _expected(translator_package, _digit(3), "b2a"))
    missing = f"models:/{NAME}@nonexistent"
    assert run_app(app, ["translate", "--model", missing, "--input", "in.png", "--out", "o2"]) == 2
    assert f"error: {missing}: 'test-translator' has no alias @nonexistent (its aliases: @champion = v1" in \
        capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_models_serve_translates_a_posted_png(champion_uri: str, mlflow_store, translator_package: Path,
                                              tmp_path: Path) -> None:
    server, base = serve_model(champion_uri, mlflow_store.uri, tmp_path)
    try:
        image = _digit(5)
        status, body = _post(f"{base}/invocations",
                             {"dataframe_records": [{"image": _b64(image), "direction": "b2a"}]})
        assert status == 200, body
        (row,) = body["predictions"]
        assert (row["request"], row["direction"], row["shape"]) == (0, "b2a", list(SHAPE))
        assert base64.b64decode(row["png_base64"]).startswith(b"\x89PNG")
        assert torch.equal(decode_translations([row]), _expected(translator_package, image, "b2a"))

        status, body = _post(f"{base}/invocations", {"dataframe_records": [
            {"image": _b64(image)}, {"image": _b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 40), "direction": "b2a"}]})
        assert 400 <= status < 500 and body.get("error_code") == "INVALID_PARAMETER_VALUE", (status, body)
        assert body["message"].startswith("request 1: image: ") and "\n" not in body["message"]
    finally:
        stop_process_group(server)
    assert "Traceback" not in (tmp_path / "server.log").read_text()
