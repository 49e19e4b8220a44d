"""The RGB translation pair (configs/make_ink_neon.py, configs/cyclegan-ink-neon.yaml): the maker's folders, and a
tiny run of the same pipeline on them — prepare, the classifier step (classifiers and judges), training with the
semantic term, evaluation with the content check, `ganops translate`, the pyfunc model and `mlflow models serve` on
colour PNGs."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from processes import serve_model, stop_process_group
from pyfunc import save_pyfunc
from test_serve import _post

from flows.cli import app
from gan_core.cli import run_app
from gan_core.config import Config, RegistryConfig, load_config
from gan_core.data import load_domains, prepare
from gan_core.evaluation.classifier import train_classifier
from gan_core.evaluation.evaluate import evaluate
from gan_core.packaging.translator import load_translator, read_image, translate_images
from gan_core.serving.translator_model import decode_translations, log_translator
from gan_core.tracking.store import experiment_id
from gan_core.training.loop import train

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "cyclegan-ink-neon.yaml"


def _maker():
    spec = importlib.util.spec_from_file_location("make_ink_neon", REPO / "configs" / "make_ink_neon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ink_neon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 images per domain, as the maker writes them."""
    out = tmp_path_factory.mktemp("ink_neon") / "raw"
    assert _maker().main([str(out), "--count", "40"]) == 0
    return out


def test_the_maker_writes_two_labelled_colour_domains_the_same_way_every_time(ink_neon: Path, tmp_path: Path,
                                                                             capsys) -> None:
    for domain in ("ink", "neon"):
        classes = sorted(p.name for p in (ink_neon / domain).iterdir())
        assert classes == [str(d) for d in range(10)]  # every class, from a 40-image draw
        files = sorted((ink_neon / domain).rglob("*.png"))
        assert len(files) == 40
        image = Image.open(files[0])
        assert image.mode == "RGB" and image.size == (32, 32)
    # Paper is light and ink dark; the neon wall is dark and the tube bright and pink (red and blue over green).
    ink = np.stack([np.asarray(Image.open(p)) for p in (ink_neon / "ink").rglob("*.png")]).astype(float)
    neon = np.stack([np.asarray(Image.open(p)) for p in (ink_neon / "neon").rglob("*.png")]).astype(float)
    assert np.median(ink) > 180 and ink.min() < 60
    assert np.median(neon) < 60 and neon.max() > 200
    bright = neon[neon.sum(-1) > 300]
    assert (bright[:, 0] > bright[:, 1]).mean() > 0.9 and (bright[:, 2] > bright[:, 1]).mean() > 0.9
    again = tmp_path / "again"
    assert _maker().main([str(again), "--count", "40"]) == 0
    assert _digest(again) == _digest(ink_neon)  # byte-identical
    capsys.readouterr()


def test_the_maker_never_replaces_a_folder_it_did_not_write(tmp_path: Path, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"precious")
    assert _maker().main([str(photos), "--count", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {photos}: holds ['holiday.jpg']") and len(err.strip().splitlines()) == 1
    assert (photos / "holiday.jpg").read_bytes() == b"precious" and len(list(photos.iterdir())) == 1
    assert _maker().main([str(tmp_path / "x"), "--count", "0"]) == 2
    assert "--count 0: expected 1 to 2500" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_shipped_config_is_an_rgb_translation_with_its_own_gate_and_name() -> None:
    cfg = load_config(CONFIG)
    assert (cfg.data.channels, cfg.data.resolution, cfg.model.arch) == (3, 32, "cyclegan")
    assert cfg.data.source.startswith("folder:") and cfg.data.target.startswith("folder:")
    assert cfg.registry.model_name == "ganops-ink-neon" and cfg.train.semantic_weight > 0
    assert {"fid_lenet_a2b", "content_lenet_a2b", "content_lenet_b2a"} <= set(cfg.gate.thresholds)
    others = [load_config(REPO / "configs" / "cyclegan-digits.yaml"), load_config(REPO / "params.yaml")]
    for other in others:  # its data, outputs and model are its own
        assert cfg.data.prepared_dir != other.data.prepared_dir and cfg.train.out_dir != other.train.out_dir
        assert cfg.registry.model_name != other.registry.model_name


@dataclass(frozen=True)
class TinyRun:
    cfg: Config
    classifier_info: dict
    package: Path


@pytest.fixture(scope="module")
def tiny_run(ink_neon: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """The shipped config, shrunk (widths 4, one block, 2 steps) and pointed at the 40-image folders: prepared, the
    classifier step run (classifiers and judges), trained with the semantic term."""
    root = tmp_path_factory.mktemp("ink_neon_run")
    overrides = {
        "data.source": f"folder:{ink_neon / 'ink'}", "data.target": f"folder:{ink_neon / 'neon'}",
        "data.prepared_dir": str(root / "prepared"), "model.g_width": 4, "model.d_width": 4, "model.res_blocks": 1,
        "train.steps": 2, "train.batch_size": 4, "train.device": "cpu", "train.holdout_fraction": 0.25,
        "train.out_dir": str(root / "train"), "eval.out_dir": str(root / "eval"), "eval.cache_dir": str(root / "cache"),
        "eval.device": "cpu", "eval.batch_size": 40, "eval.classifier.out_dir": str(root / "classifier"),
        "eval.classifier.epochs": 1, "eval.classifier.min_accuracy": 0.0}
    cfg = load_config(CONFIG, overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_cpu_thread does, which is per test
    try:
        prepare(cfg.data)
        info = train_classifier(cfg)
        return TinyRun(cfg, info, Path(train(cfg).package_dir))
    finally:
        torch.set_num_threads(threads)


def test_the_pair_trains_evaluates_and_translates_colour_pngs(tiny_run: TinyRun, ink_neon: Path, tmp_path: Path,
                                                             capsys) -> None:
    cfg, info, package = tiny_run.cfg, tiny_run.classifier_info, tiny_run.package
    domains = load_domains(cfg.data.prepared_dir)
    assert domains["a"].images.shape == (40, 3, 32, 32) and domains["a"].classes == [str(d) for d in range(10)]
    assert set(info["judges"]) == {"a", "b"} and info["judges"]["a"]["kwargs"]["in_channels"] == 3
    metrics = evaluate(cfg, str(package)).metrics
    assert {"fid_lenet_a2b", "content_lenet_a2b", "content_lenet_b2a", "cycle_l1_a"} <= set(metrics)

    # `ganops translate` on a colour PNG of another size: fitted to 32 px RGB, as prepare does.
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.open(next((ink_neon / "ink" / "3").glob("*.png"))).resize((48, 48)).save(inputs / "three.png")
    out = tmp_path / "translated"
    argv = ["translate", "--model", str(package), "--input", str(inputs), "--out", str(out), "--device", "cpu"]
    assert run_app(app, argv) == 0
    capsys.readouterr()
    written = Image.open(out / "three.png")
    assert written.mode == "RGB" and written.size == (32, 32)
    expected = translate_images(load_translator(package), read_image((inputs / "three.png").read_bytes(),
                                                                     (3, 32, 32))[None])
    assert torch.equal(torch.from_numpy(np.asarray(written).copy()).permute(2, 0, 1)[None], expected)

    # The pyfunc model (what `mlflow models serve` runs) answers with colour PNGs too.
    model = save_pyfunc(package, tmp_path / "pyfunc")
    import mlflow

    buffer = io.BytesIO()
    Image.open(next((ink_neon / "neon" / "5").glob("*.png"))).save(buffer, format="PNG")
    answer = mlflow.pyfunc.load_model(str(model)).predict(
        pd.DataFrame([{"image": base64.b64encode(buffer.getvalue()).decode(), "direction": "b2a"}]))
    assert list(answer["shape"][0]) == [3, 32, 32]
    assert decode_translations(answer).shape == (1, 3, 32, 32)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mlflow_models_serve_translates_a_posted_colour_png(tiny_run: TinyRun, ink_neon: Path, mlflow_store,
                                                            tmp_path: Path) -> None:
    """The RGB pair's translator registered as the config's model and served by `mlflow models serve`, as the
    README's command does: a posted neon PNG comes back as the ink translation ganops computes locally."""
    name = tiny_run.cfg.registry.model_name
    registry = RegistryConfig(tracking_uri=mlflow_store.uri, artifact_location=str(mlflow_store.artifacts))
    client = MlflowClient(mlflow_store.uri)
    run = client.create_run(experiment_id(registry, client))
    logged = log_translator(tiny_run.package, run_id=run.info.run_id, name="translator")
    client.set_terminated(run.info.run_id)
    import mlflow

    client.set_registered_model_alias(name, "champion", mlflow.register_model(logged.model_uri, name).version)
    server, base = serve_model(f"models:/{name}@champion", mlflow_store.uri, tmp_path)
    try:
        image = next((ink_neon / "neon" / "5").glob("*.png")).read_bytes()
        status, body = _post(f"{base}/invocations", {"dataframe_records": [
            {"image": base64.b64encode(image).decode(), "direction": "b2a"}]})
        assert status == 200, body
        (row,) = body["predictions"]
        assert (row["direction"], row["shape"]) == ("b2a", [3, 32, 32])
        expected = translate_images(load_translator(tiny_run.package, direction="b2a"),
                                    read_image(image, (3, 32, 32))[None])
        assert torch.equal(decode_translations([row]), expected)
        assert Image.open(io.BytesIO(base64.b64decode(row["png_base64"]))).mode == "RGB"
    finally:
        stop_process_group(server)
    assert "Traceback" not in (tmp_path / "server.log").read_text()
