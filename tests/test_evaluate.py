"""Evaluation: FID/KID/PR in the domain feature space order real < trained < noise, numbers are reproducible,
the real-feature cache is used and invalidated by data changes, class checks catch mode collapse."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gan_core import metrics as m
from gan_core.cli import app, run_app
from gan_core.config import DataConfig
from gan_core.data import load_prepared, prepare
from gan_core.errors import UserError
from gan_core.evaluate import METRICS_FILE, SAMPLES_FILE, evaluate
from gan_core.fidelity import GeneratedImages, ImagesDataset, fidelity_metrics
from gan_core.package import sample_images

LENET_METRICS = {"fid_lenet", "kid_lenet", "kid_lenet_std", "precision_lenet", "recall_lenet"}


class ReplayGenerator(nn.Module):
    """A 'generator' that returns stored images picked by its noise: a perfect generator of `images`.

    Conditional (`conditional=True`): picks an image of the requested class (`label_shift` asks for the wrong one).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, conditional: bool = False,
                 label_shift: int = 0):
        super().__init__()
        self.register_buffer("images", images.float() / 127.5 - 1.0)  # (N, C, H, W) in [-1, 1]
        self.register_buffer("labels", labels if labels is not None else torch.zeros(len(images), dtype=torch.long))
        self.anchor = nn.Parameter(torch.zeros(()))  # sample_images finds the device from the parameters
        self.latent_dim = 4
        self.num_classes = 10 if conditional else 0
        self.label_shift = label_shift

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        pick = (z[:, 0].abs() * 1e6).long()  # (B,) a well-spread integer per latent
        if labels is None:
            return self.images[pick % len(self.images)]
        out = []
        for p, y in zip(pick.tolist(), ((labels + self.label_shift) % 10).tolist(), strict=True):
            pool = (self.labels == y).nonzero().flatten()
            out.append(self.images[pool[p % len(pool)]])
        return torch.stack(out)


class NoiseGenerator(ReplayGenerator):
    """Uniform noise images of the same shape: the worst generator."""

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int((z[0, 0].abs() * 1e6).item()))
        return torch.rand(len(z), *self.images.shape[1:], generator=gen) * 2 - 1


@pytest.fixture(scope="module")
def mnist(mnist5k_full_prepared: Path):
    return load_prepared(mnist5k_full_prepared)


# ----------------------------------------------------------------------------- FID ordering
def test_fid_real_halves_small_noise_large(mnist, lenet_classifier: dict, tmp_path: Path) -> None:
    half_a, half_b = ImagesDataset(mnist.images[:2500]), ImagesDataset(mnist.images[2500:])
    noise = GeneratedImages(NoiseGenerator(mnist.images[:1]), 2500, seed=0, batch_size=250)
    common = {"weights": lenet_classifier["model_dir"], "real_cache_name": None, "cache_dir": tmp_path}
    real_vs_real = fidelity_metrics(half_a, half_b, "lenet", **common)
    noise_vs_real = fidelity_metrics(noise, half_b, "lenet", **common)

    assert set(real_vs_real) == LENET_METRICS
    assert all(math.isfinite(v) for v in real_vs_real.values())
    assert real_vs_real["fid_lenet"] * 50 < noise_vs_real["fid_lenet"]
    assert real_vs_real["kid_lenet"] * 50 < noise_vs_real["kid_lenet"]
    assert real_vs_real["precision_lenet"] > 0.9 and real_vs_real["recall_lenet"] > 0.9
    assert noise_vs_real["recall_lenet"] < 0.05  # noise covers none of the digits


def test_more_training_lowers_fid_toward_real_data(
    mnist_prepared: Path, mnist5k_full_prepared: Path, mnist, lenet_classifier: dict, tiny_train_config, eval_config,
) -> None:
    from gan_core.train import train

    def train_and_evaluate(steps: int) -> float:
        train_cfg = tiny_train_config(mnist_prepared, **{
            "model.arch": "dcgan", "model.g_width": 16, "model.d_width": 16, "model.latent_dim": 32,
            "train.batch_size": 32, "train.steps": steps, "train.ema_decay": 0.0,
            "train.sample_every": 1000, "train.checkpoint_every": 1000, "train.log_every": 50})
        result = train(train_cfg)  # resumes from the previous call's checkpoint: the same run, trained longer
        cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"])
        return evaluate(cfg, result["package_dir"])["fid_lenet"]

    short, longer = train_and_evaluate(30), train_and_evaluate(150)
    cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"])
    perfect = evaluate(cfg, ReplayGenerator(mnist.images))["fid_lenet"]
    # Uniform noise is not asserted above a 30-step GAN: in the classifier's feature space an early GAN's
    # blobs sit farther from the digits than noise does (measured: 1384 vs 868), so "worst" would be a lie.
    assert perfect * 10 < longer < short


# ----------------------------------------------------------------------------- reproducibility and outputs
def test_evaluate_writes_metrics_and_grid_and_is_reproducible(
    mnist5k_full_prepared: Path, mnist, lenet_classifier: dict, eval_config
) -> None:
    cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"])
    G = ReplayGenerator(mnist.images[:1000])
    first = evaluate(cfg, G)

    assert LENET_METRICS | {m.CLASS_COVERAGE, m.CLASS_ENTROPY, m.CLASSIFIER_ACCURACY} <= set(first)
    assert m.CLASS_ACCURACY not in first  # unconditional generator
    assert not any(k.endswith("_inception") for k in first)
    info = first[m.INFO_KEY]
    assert info["num_samples"] == 500 and info["seed"] == cfg.eval.seed
    assert info["extractors"]["lenet"]["holdout_accuracy"] >= 0.97
    assert info["data_version"].endswith(".dir")  # the md5 DVC records (gan_core.lineage)
    on_disk = json.loads((Path(cfg.eval.out_dir) / METRICS_FILE).read_text())
    assert on_disk == json.loads(json.dumps(first))
    with Image.open(Path(cfg.eval.out_dir) / SAMPLES_FILE) as grid:
        assert grid.size == (8 * 34 + 2, 8 * 34 + 2)  # 8x8 tiles of 32 px with 2 px padding

    again = evaluate(cfg, G)
    assert m.metric_values(again) == m.metric_values(first)  # same inputs + seed → same numbers
    other_seed = evaluate(cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"seed": 7})}), G)
    assert other_seed["fid_lenet"] != first["fid_lenet"]


def test_generated_samples_are_the_same_however_they_are_read(mnist) -> None:
    G = ReplayGenerator(mnist.images[:100])
    a = GeneratedImages(G, 50, seed=3, batch_size=20)
    b = GeneratedImages(G, 50, seed=3, batch_size=20)
    forward = torch.stack([a[i] for i in range(50)])
    backward = torch.stack([b[i] for i in reversed(range(50))]).flip(0)
    assert forward.shape == (50, 3, 32, 32) and forward.dtype == torch.uint8
    assert torch.equal(forward, backward)
    assert torch.equal(a.chunk(1), sample_images(G, 20, seed=3 * 2**20 + 1))


# ----------------------------------------------------------------------------- the real-feature cache
def _replay_digits(prepared: Path) -> ReplayGenerator:
    return ReplayGenerator(load_prepared(prepared).images)


def test_real_features_cached_by_data_version(tmp_path: Path, eval_config) -> None:
    prepared = tmp_path / "digits"
    prepare(DataConfig(source="digits", resolution=16, max_images=800, prepared_dir=str(prepared)))
    quick = {"eval.classifier.epochs": 2, "eval.classifier.min_accuracy": 0.0, "eval.num_samples": 300}
    cfg = eval_config(prepared, **quick)
    cache = Path(cfg.eval.cache_dir)

    first = evaluate(cfg, _replay_digits(prepared))
    lenet = first[m.INFO_KEY]["extractors"]["lenet"]
    assert lenet["real_pass"] == "computed"
    files = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert files and all(p.name.startswith(lenet["real_cache_name"]) for p in files)
    assert first[m.INFO_KEY]["data_version"].removesuffix(".dir") in lenet["real_cache_name"]

    second = evaluate(cfg, _replay_digits(prepared))
    assert second[m.INFO_KEY]["extractors"]["lenet"]["real_pass"] == "cached"  # no real image was read
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == files  # nothing rewritten
    assert m.metric_values(second) == m.metric_values(first)

    # New data → new data version → a new cache entry, computed from the new images; the old one is left alone.
    prepare(DataConfig(source="digits", resolution=16, max_images=700, prepared_dir=str(prepared)))
    third = evaluate(cfg, _replay_digits(prepared))
    new = third[m.INFO_KEY]["extractors"]["lenet"]
    assert new["real_pass"] == "computed"
    assert new["real_cache_name"] != lenet["real_cache_name"]
    assert third[m.INFO_KEY]["num_real"] == 700
    assert any(p.name.startswith(new["real_cache_name"]) for p in cache.iterdir())


# ----------------------------------------------------------------------------- class checks
def test_class_checks_catch_mode_collapse(mnist5k_full_prepared: Path, mnist, lenet_classifier: dict,
                                          eval_config) -> None:
    cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"], **{"eval.num_samples": 300})
    diverse = evaluate(cfg, ReplayGenerator(mnist.images))
    threes = mnist.images[mnist.labels == 3]
    collapsed = evaluate(cfg, ReplayGenerator(threes))
    assert diverse[m.CLASS_COVERAGE] == 1.0 and diverse[m.CLASS_ENTROPY] > 0.95
    assert collapsed[m.CLASS_COVERAGE] == pytest.approx(0.1)  # one class of ten
    assert collapsed[m.CLASS_ENTROPY] < 0.15
    assert collapsed["recall_lenet"] < diverse["recall_lenet"]


def test_conditional_generators_get_class_accuracy(mnist5k_full_prepared: Path, mnist, lenet_classifier: dict,
                                                   eval_config) -> None:
    cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"], **{"eval.num_samples": 200})
    right = evaluate(cfg, ReplayGenerator(mnist.images, mnist.labels, conditional=True))
    wrong = evaluate(cfg, ReplayGenerator(mnist.images, mnist.labels, conditional=True, label_shift=1))
    assert right[m.CLASS_ACCURACY] >= 0.95
    assert wrong[m.CLASS_ACCURACY] <= 0.1  # right digits, wrong requested class
    assert wrong[m.CLASS_COVERAGE] == 1.0  # coverage alone would not notice


# ----------------------------------------------------------------------------- errors and clamps
def test_untrusted_classifier_stops_evaluation(mnist5k_full_prepared: Path, mnist, lenet_classifier: dict,
                                               eval_config) -> None:
    cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"], **{"eval.classifier.min_accuracy": 0.999})
    with pytest.raises(UserError, match="min_accuracy"):
        evaluate(cfg, ReplayGenerator(mnist.images[:10]))
    assert not (Path(cfg.eval.out_dir) / METRICS_FILE).exists()


def test_kid_subset_clamped_and_recorded(mnist5k_full_prepared: Path, mnist, lenet_classifier: dict,
                                         eval_config) -> None:
    cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"], **{"eval.num_samples": 60})
    result = evaluate(cfg, ReplayGenerator(mnist.images))
    assert result[m.INFO_KEY]["kid_subset_size"] == 60
    assert math.isfinite(result["kid_lenet"])


def test_wrong_image_shape_and_missing_generator_are_user_errors(
    mnist5k_full_prepared: Path, lenet_classifier: dict, eval_config
) -> None:
    cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"])
    small = ReplayGenerator(torch.zeros(4, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(UserError, match=r"\[1, 16, 16\].*\[1, 32, 32\]"):
        evaluate(cfg, small)
    with pytest.raises(UserError, match="no trained generator"):
        evaluate(cfg)


# ----------------------------------------------------------------------------- the CLI (the DVC stage's command)
def test_cli_evaluates_a_generator_package(
    mnist5k_full_prepared: Path, lenet_classifier: dict, eval_config, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from gan_core.models import build_generator
    from gan_core.package import save_generator

    kwargs = {"latent_dim": 8, "channels": 1, "resolution": 32, "width": 8, "num_classes": 0}
    torch.manual_seed(0)
    package = save_generator(
        build_generator("dcgan", **kwargs),
        {"arch": "dcgan", "kwargs": kwargs, "latent_dim": 8, "image_shape": [1, 32, 32], "num_classes": 0},
        tmp_path / "train" / "generator",  # {train.out_dir}/generator: the default the DVC stage evaluates
    )
    params = tmp_path / "params.yaml"
    cfg = eval_config(mnist5k_full_prepared, lenet_classifier["out_dir"], **{"eval.num_samples": 100})
    params.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    assert package.is_dir()

    assert run_app(app, ["evaluate", "--params", str(params)]) == 0
    printed = json.loads(capsys.readouterr().out)
    on_disk = json.loads((Path(cfg.eval.out_dir) / METRICS_FILE).read_text())
    assert printed == on_disk and np.isfinite(on_disk["fid_lenet"])

    assert run_app(app, ["evaluate", "--params", str(params), "--generator", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
