"""The domain classifier: accuracy on mnist5k, determinism, caching by data version, torch-fidelity registration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor

from gan_core.classifier import (
    METRICS_FILE,
    SPEC_FILE,
    WEIGHTS_FILE,
    load_classifier,
    resolve_device,
    train_classifier,
)
from gan_core.config import DataConfig
from gan_core.data import load_prepared, prepare
from gan_core.errors import UserError
from gan_core.fidelity import LENET_EXTRACTOR, LeNetFeatureExtractor


def test_classifier_reaches_min_accuracy_on_mnist5k(lenet_classifier: dict, mnist5k_full_prepared: Path) -> None:
    assert lenet_classifier["holdout_accuracy"] >= 0.97
    assert lenet_classifier["holdout_count"] == 500  # 10% of 5,000 held out, never trained on
    model = Path(lenet_classifier["model_dir"])
    assert (model / WEIGHTS_FILE).is_file() and (model / SPEC_FILE).is_file()
    recorded = json.loads((Path(lenet_classifier["out_dir"]) / METRICS_FILE).read_text())
    assert recorded["holdout_accuracy"] == lenet_classifier["holdout_accuracy"]

    # The stored model reproduces the recorded accuracy on data it saw (a sanity check of the saved weights).
    data = load_prepared(mnist5k_full_prepared)
    net = load_classifier(model)
    accuracy = (net.predict(data.images[:1000]) == data.labels[:1000]).double().mean().item()
    assert accuracy >= 0.97


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
    with pytest.raises(UserError, match=r"eval.device='cuda' but no CUDA device.*eval.device=auto"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
