"""The domain classifier: accuracy on mnist5k, determinism, caching by data version, torch-fidelity registration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hostile import CodeRunningPickle
from PIL import Image
from safetensors.torch import load_file
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor

from gan_core.config import DataConfig
from gan_core.data import load_prepared, prepare
from gan_core.errors import UserError
from gan_core.evaluation.classifier import METRICS_FILE, require_trusted, train_classifier
from gan_core.evaluation.fidelity import LENET_EXTRACTOR, LeNetFeatureExtractor
from gan_core.packaging.classifier import SPEC_FILE, WEIGHTS_FILE, load_classifier, stored_classifier


def test_classifier_is_accurate_on_mnist5k(lenet_classifier: dict, mnist5k_full_prepared: Path) -> None:
    # Measured over seeds 0-2 x OMP_NUM_THREADS 1-2: 0.978-0.984 held out (500 images: binomial sd 0.006; the thread
    # count alone moved seed 0 from 0.978 to 0.982), 0.991-0.996 on the first 1,000 training images. 0.96 is 3 sd
    # below the lowest held-out value: another CPU trains other weights, and this must not fail on it.
    assert lenet_classifier["holdout_accuracy"] >= 0.96
    assert lenet_classifier["holdout_count"] == 500  # 10% of 5,000 held out, never trained on
    model = Path(lenet_classifier["model_dir"])
    assert (model / WEIGHTS_FILE).is_file() and (model / SPEC_FILE).is_file()
    recorded = json.loads((Path(lenet_classifier["out_dir"]) / METRICS_FILE).read_text())
    assert recorded["holdout_accuracy"] == lenet_classifier["holdout_accuracy"]

    # The stored model reproduces the recorded accuracy on data it saw (a sanity check of the saved weights).
    data = load_prepared(mnist5k_full_prepared)
    net = load_classifier(model)
    accuracy = (net.predict(data.images[:1000]) == data.labels[:1000]).double().mean().item()
    assert accuracy >= 0.97  # measured 0.991-0.996 (above)


def test_classifier_is_reused_for_same_data_and_settings(
    lenet_classifier: dict, mnist5k_full_prepared: Path, eval_config
) -> None:
    weights = Path(lenet_classifier["model_dir"]) / WEIGHTS_FILE
    before = weights.stat().st_mtime_ns
    # min_accuracy and out_dir do not shape the weights: changing min_accuracy must not retrain.
    cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"], **{"eval.classifier.min_accuracy": 0.5})
    info = train_classifier(cfg)
    assert info["trained"] is False
    assert info["holdout_accuracy"] == lenet_classifier["holdout_accuracy"]
    assert weights.stat().st_mtime_ns == before


@pytest.fixture
def digits_small(tmp_path: Path) -> Path:
    out = tmp_path / "digits"
    prepare(DataConfig(source="digits", resolution=16, max_images=600, prepared_dir=str(out)))
    return out


def test_training_is_deterministic_and_seeded(digits_small: Path, eval_config, tmp_path: Path) -> None:
    quick = {"eval.classifier.epochs": 1}
    a = train_classifier(eval_config(digits_small, tmp_path / "a", **quick))
    b = train_classifier(eval_config(digits_small, tmp_path / "b", **quick))
    c = train_classifier(eval_config(digits_small, tmp_path / "c", **quick, **{"eval.classifier.seed": 1}))
    wa, wb, wc = (load_file(Path(x["model_dir"]) / WEIGHTS_FILE) for x in (a, b, c))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # same data + settings → bit-identical weights
    assert a["holdout_accuracy"] == b["holdout_accuracy"]
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)  # the seed matters


def test_retrains_when_data_changes(digits_small: Path, eval_config, tmp_path: Path) -> None:
    quick = {"eval.classifier.epochs": 1}
    first = train_classifier(eval_config(digits_small, tmp_path / "cls", **quick))
    assert first["trained"] is True
    assert train_classifier(eval_config(digits_small, tmp_path / "cls", **quick))["trained"] is False
    prepare(DataConfig(source="digits", resolution=16, max_images=500, prepared_dir=str(digits_small)))
    again = train_classifier(eval_config(digits_small, tmp_path / "cls", **quick))
    assert again["trained"] is True
    assert again["data_version"] != first["data_version"]
    assert again["train_count"] + again["holdout_count"] == 500


def test_unlabelled_data_is_a_user_error(tmp_path: Path, eval_config) -> None:
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(4):
        Image.new("L", (16, 16), color=i * 60).save(folder / f"{i}.png")
    prepared = tmp_path / "prepared"
    prepare(DataConfig(source=f"folder:{folder}", resolution=16, prepared_dir=str(prepared)))
    with pytest.raises(UserError, match="needs labels"):
        train_classifier(eval_config(prepared))


def test_lenet_is_a_registered_torch_fidelity_extractor(lenet_classifier: dict, mnist5k_full_prepared: Path) -> None:
    assert FEATURE_EXTRACTORS_REGISTRY[LENET_EXTRACTOR] is LeNetFeatureExtractor
    extractor = create_feature_extractor(
        LENET_EXTRACTOR, ["penultimate", "logits"], cuda=False, verbose=False,
        feature_extractor_weights_path=lenet_classifier["model_dir"],
    )
    images = load_prepared(mnist5k_full_prepared).images[:64]  # (64, 1, 32, 32) uint8
    penultimate, logits = extractor(images.expand(-1, 3, -1, -1))  # torch-fidelity's form: (B, 3, H, W) uint8
    assert penultimate.shape == (64, 128) and logits.shape == (64, 10)
    # Grayscale repeated to RGB and back is exact: the extractor sees what the classifier was trained on.
    net = load_classifier(lenet_classifier["model_dir"])
    assert torch.equal(logits.argmax(1), net.predict(images))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_eval_device_is_a_user_error() -> None:
    from gan_core.device import pick_device

    with pytest.raises(UserError, match=r"eval.device='cuda' but no CUDA device.*eval.device=auto"):
        pick_device("cuda", key="eval.device", auto_mps=False)
    assert pick_device("auto", key="eval.device", auto_mps=False) == torch.device("cpu")


def test_evaluation_reads_the_stored_classifier_and_never_trains_one(
    mnist5k_full_prepared, lenet_classifier, eval_config
) -> None:
    """stored_classifier finds the model train_classifier wrote for this data and settings; with other settings (or
    none stored) it names the directory and the command, and writes nothing."""
    cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"])
    assert stored_classifier(cfg)["holdout_accuracy"] == lenet_classifier["holdout_accuracy"]
    other = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={
        "classifier": cfg.eval.classifier.model_copy(update={"epochs": cfg.eval.classifier.epochs + 1})})})
    before = sorted(p.name for p in Path(lenet_classifier["model_dir"]).iterdir())
    with pytest.raises(UserError, match=r"no domain classifier .*python -m gan_core classifier"):
        stored_classifier(other)
    assert sorted(p.name for p in Path(lenet_classifier["model_dir"]).iterdir()) == before


# ----------------------------------------------------------------------------- damaged model directories

def _damage(model: Path, how: str, marker: Path) -> Path:
    """Damage a copy of a model directory; returns the file the error must name."""
    weights, spec = model / WEIGHTS_FILE, model / SPEC_FILE
    if how == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "missing_weights":
        weights.unlink()
    elif how == "pickle_as_weights":
        torch.save({"body.0.weight": CodeRunningPickle(marker)}, weights)
    elif how == "cut_json":
        spec.write_text(spec.read_text()[:40])
    elif how == "json_not_object":
        spec.write_text("[1, 2]")
    elif how == "no_kwargs":
        spec.write_text(json.dumps({k: v for k, v in json.loads(spec.read_text()).items() if k != "kwargs"}))
    elif how == "kwargs_mismatch":  # edited kwargs that no longer fit the weights
        data = json.loads(spec.read_text())
        data["kwargs"]["num_classes"] = 7
        spec.write_text(json.dumps(data))
        return weights
    return spec if "json" in how or "kwargs" in how else weights


DAMAGES = ["truncated_weights", "missing_weights", "pickle_as_weights", "cut_json", "json_not_object", "no_kwargs",
           "kwargs_mismatch"]


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_model_is_a_one_line_user_error(lenet_classifier: dict, tmp_path: Path, how: str) -> None:
    model = tmp_path / "model"
    shutil.copytree(lenet_classifier["model_dir"], model)
    marker = tmp_path / "pwned"
    named = _damage(model, how, marker)
    with pytest.raises(UserError) as err:
        load_classifier(model)
    message = str(err.value)
    assert str(named) in message and "\n" not in message
    assert not marker.exists()  # never unpickled


@pytest.mark.parametrize("how", ["truncated_weights", "cut_json", "kwargs_mismatch"])
def test_damaged_stored_model_is_retrained(digits_small: Path, eval_config, tmp_path: Path, how: str) -> None:
    cfg = eval_config(digits_small, tmp_path / "cls", **{"eval.classifier.epochs": 1})
    first = train_classifier(cfg)
    _damage(Path(first["model_dir"]), how, tmp_path / "pwned")
    with pytest.warns(UserWarning, match="retraining the domain classifier"):
        again = train_classifier(cfg)
    assert again["trained"] is True and again["holdout_accuracy"] == first["holdout_accuracy"]  # same machine
    load_classifier(again["model_dir"])  # whole again


def test_damaged_metrics_file_is_rewritten(digits_small: Path, eval_config, tmp_path: Path) -> None:
    cfg = eval_config(digits_small, tmp_path / "cls", **{"eval.classifier.epochs": 1})
    first = train_classifier(cfg)
    metrics = tmp_path / "cls" / METRICS_FILE
    metrics.write_text("{not json")
    again = train_classifier(cfg)
    assert again["trained"] is False
    assert json.loads(metrics.read_text())["holdout_accuracy"] == first["holdout_accuracy"]


def test_below_min_accuracy_is_a_one_line_user_error(lenet_classifier: dict) -> None:
    with pytest.raises(UserError, match=r"held-out accuracy 0\.\d{4} < eval.classifier.min_accuracy=1.0") as err:
        require_trusted(lenet_classifier, 1.0)
    assert "\n" not in str(err.value)
    require_trusted(lenet_classifier, 0.0)  # no error at or above the bar
