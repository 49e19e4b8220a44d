"""The Inception extractor offline: a clear error with no weights, real metrics from a local file read once with
weights_only=True, the same numbers as torch-fidelity's own inception-v3-compat, and no code run from caches.

The weights file is built here (torch-fidelity's architecture, random init, saved as the state dict it loads),
so nothing is downloaded; the numbers are meaningless but must be finite and carry the `_inception` names.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch_fidelity
from hostile import CodeRunningPickle
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from gan_core.config import DataConfig
from gan_core.config import metrics as m
from gan_core.data import load_prepared, prepare
from gan_core.data.version import data_version
from gan_core.errors import UserError
from gan_core.evaluation.evaluate import evaluate
from gan_core.evaluation.fidelity import (
    INCEPTION_WEIGHTS_ENV,
    OFFLINE_ENV,
    ImagesDataset,
    extract_features,
    fidelity_metrics,
    inception_weights,
    load_extractor,
)

INCEPTION_METRICS = {"fid_inception", "kid_inception", "kid_inception_std", "precision_inception",
                     "recall_inception", "isc_inception", "isc_inception_std"}


class _Skeleton(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception with the weight loading skipped (its __init__ always loads a state dict)."""

    def load_state_dict(self, state_dict, *args, **kwargs):  # type: ignore[override]
        if state_dict is None:  # the placeholder file below: keep the random init
            return None
        return super().load_state_dict(state_dict, *args, **kwargs)


@pytest.fixture(scope="module")
def inception_weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inception")
    placeholder = folder / "none.pt"
    torch.save(None, placeholder)
    torch.manual_seed(0)
    net = _Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(placeholder))
    path = folder / "weights-inception-random.pth"
    torch.save(net.state_dict(), path)  # the format torch-fidelity's download has: a plain state dict
    return path


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Inception weights anywhere: an empty torch hub cache, no env var, downloads forbidden."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv(OFFLINE_ENV, "1")


def test_offline_without_weights_says_how_to_provide_them(offline: None) -> None:
    with pytest.raises(UserError) as err:
        inception_weights(None)
    message = str(err.value)
    assert "eval.inception_weights" in message and INCEPTION_WEIGHTS_ENV in message
    assert "weights-inception-2015-12-05" in message  # what to download, on a machine with internet


def test_bad_weights_files_are_one_line_user_errors(offline: None, inception_weights_file: Path,
                                                    tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.pth"):
        inception_weights(str(tmp_path / "nope.pth"))

    marker = tmp_path / "pwned"
    bad = {
        "module.pth": lambda p: torch.save({"layer": torch.nn.Linear(2, 2)}, p),  # a pickled module, not tensors
        "code.pth": lambda p: torch.save({"fc.weight": CodeRunningPickle(marker)}, p),  # a pickle that runs code
        "list.pth": lambda p: torch.save([torch.zeros(2)], p),
        "wrong_keys.pth": lambda p: torch.save(torch.nn.Linear(2, 2).state_dict(), p),
        "truncated.pth": lambda p: p.write_bytes(inception_weights_file.read_bytes()[:100_000]),
        "text.pth": lambda p: p.write_text("not weights"),
    }
    for name, write in bad.items():
        path = tmp_path / name
        write(path)
        assert inception_weights(str(path)) == str(path)  # located here, read (once) by the extractor
        with pytest.raises(UserError, match=name) as err:
            load_extractor("inception", path)
        assert "\n" not in str(err.value), name
    assert not marker.exists()


def test_env_var_names_the_weights(offline: None, inception_weights_file: Path, monkeypatch) -> None:
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(inception_weights_file))
    assert inception_weights(None) == str(inception_weights_file)


@pytest.fixture
def torch_load_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, object]]:
    """Every torch.load call as (what it read, weights_only); the real torch.load still does the work."""
    calls: list[tuple[object, object]] = []
    real_load = torch.load

    def recording_load(f, *args, **kwargs):
        calls.append((f, kwargs.get("weights_only")))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    return calls


def test_inception_metrics_from_a_local_weights_file(
    offline: None, inception_weights_file: Path, tmp_path: Path, eval_config, torch_load_calls
) -> None:
    prepared = tmp_path / "digits"
    prepare(DataConfig(source="digits", resolution=16, max_images=10, prepared_dir=str(prepared)))
    images = load_prepared(prepared).images

    class Replay(torch.nn.Module):
        latent_dim, num_classes = 4, 0

        def __init__(self) -> None:
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))

        def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            return images[(z[:, 0].abs() * 1e6).long() % len(images)].float() / 127.5 - 1

    cfg = eval_config(prepared, **{"eval.extractors": ["inception"], "eval.num_samples": 10, "eval.batch_size": 10,
                                   "eval.inception_weights": str(inception_weights_file)})
    # Every file the previous code let torch-fidelity unpickle (weights_only=False) from eval.cache_dir.
    marker = tmp_path / "pwned"
    old_name = f"real-{data_version(prepared).removesuffix('.dir')}-inception-tf2015-16px-inception-v3-compat"
    for name in ("features-2048", "features-logits_unbiased", "stat-fid-2048"):
        path = Path(cfg.eval.cache_dir) / f"{old_name}-{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x": CodeRunningPickle(marker)}, path)

    result = evaluate(cfg, Replay())
    assert not marker.exists()
    assert INCEPTION_METRICS <= set(result.metrics)
    assert all(math.isfinite(result.metrics[k]) for k in INCEPTION_METRICS)
    assert not any(k.endswith("_lenet") for k in result.metrics) and m.CLASS_COVERAGE not in result.metrics
    info = result.info["extractors"]["inception"]
    assert info["weights"] == str(inception_weights_file) and info["torch_fidelity_name"] == "ganops-inception-v3"
    assert info["feature_layer_fid"] == "2048" and info["real_pass"] == "computed"
    assert result.info["kid_subset_size"] == 10
    # The weights file was read once, with weights_only=True; whatever torch-fidelity unpickled came from memory.
    from_disk = [(f, weights_only) for f, weights_only in torch_load_calls if isinstance(f, str | os.PathLike)]
    assert from_disk == [(inception_weights_file, True)]


def test_inception_numbers_match_torch_fidelity(inception_weights_file: Path, digits_prepared: Path) -> None:
    """ganops-inception-v3 + our metric path = torch-fidelity's inception-v3-compat + calculate_metrics."""
    images = load_prepared(digits_prepared).images
    fake, real = ImagesDataset(images[:12]), images[12:24]
    direct = torch_fidelity.calculate_metrics(
        input1=fake, input2=ImagesDataset(real), feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(inception_weights_file),  # a file this test made: safe to unpickle
        fid=True, kid=True, prc=True, isc=True, kid_subset_size=12, batch_size=12, rng_seed=3, save_cpu_ram=True,
        prc_batch_size=1000, cache=False, cuda=False, verbose=False)
    inception = load_extractor("inception", inception_weights_file)
    ours = fidelity_metrics(fake, extract_features(ImagesDataset(real), inception, 12), inception, batch_size=12,
                            kid_subset_size=12, seed=3)
    keys = {"fid_inception": torch_fidelity.KEY_METRIC_FID, "kid_inception": torch_fidelity.KEY_METRIC_KID_MEAN,
            "kid_inception_std": torch_fidelity.KEY_METRIC_KID_STD,
            "precision_inception": torch_fidelity.KEY_METRIC_PRECISION,
            "recall_inception": torch_fidelity.KEY_METRIC_RECALL, "isc_inception": torch_fidelity.KEY_METRIC_ISC_MEAN,
            "isc_inception_std": torch_fidelity.KEY_METRIC_ISC_STD}
    # Same network, weights and metric code: equal but for float summation order (1e-6 relative allows it).
    assert ours == {ours_key: pytest.approx(direct[key], rel=1e-6, abs=1e-9) for ours_key, key in keys.items()}


def test_translation_inception_metrics_from_a_local_weights_file(
    offline: None, inception_weights_file: Path, tmp_path: Path, torch_load_calls
) -> None:
    """The translation evaluator's Inception path: a real translator package between two small domains, scored in
    Inception's space only (no domain classifier needed), the weights file read once with weights_only=True."""
    from translation import TRANSLATION_SETTINGS

    from gan_core.config import load_config
    from gan_core.evaluation.fidelity import PRC_NEIGHBORHOOD
    from gan_core.training.loop import train

    prepared = tmp_path / "pair"
    prepare(DataConfig(source="digits", target="mnist5k", resolution=16, max_images=40, prepared_dir=str(prepared)))
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    cfg = load_config(empty, {
        **TRANSLATION_SETTINGS, "data.prepared_dir": str(prepared), "train.steps": 2, "train.device": "cpu",
        "train.out_dir": str(tmp_path / "train"), "eval.out_dir": str(tmp_path / "eval"),
        "eval.cache_dir": str(tmp_path / "cache"), "eval.device": "cpu", "eval.batch_size": 40,
        "eval.extractors": ["inception"], "eval.inception_weights": str(inception_weights_file),
        "eval.classifier.out_dir": str(tmp_path / "no-classifier"),  # never written: no lenet metric is asked for
        "gate.thresholds": {"fid_inception_a2b": {"max": 1e9}}, "gate.primary_metric": "fid_inception_a2b"})
    package = train(cfg).package_dir
    torch_load_calls.clear()  # only evaluation's reads count

    result = evaluate(cfg, package)
    held_out = 4  # 10% of 40 per domain: PRC's neighbourhood + 1, the fewest evaluation accepts
    assert held_out == PRC_NEIGHBORHOOD + 1
    for d in ("a2b", "b2a"):
        names = {f"{k}_{d}" for k in ("fid_inception", "kid_inception", "kid_inception_std", "precision_inception",
                                      "recall_inception")}
        assert names <= set(result.metrics), (d, sorted(result.metrics))
        names |= {f"isc_inception_{d}", f"isc_inception_std_{d}"}  # 4 translations: one per split, no empty one
        assert all(math.isfinite(result.metrics[k]) for k in names), {k: result.metrics[k] for k in names}
    assert not any("lenet" in k for k in result.metrics)  # no classifier: no lenet numbers, no content check
    assert not (tmp_path / "no-classifier").exists()
    # Each target domain's real features in Inception's space, from the one shared network.
    extractors = result.info["extractors"]
    assert set(extractors) == {"inception_a", "inception_b"}
    assert extractors["inception_a"]["weights_sha256"] == extractors["inception_b"]["weights_sha256"]
    assert {e["torch_fidelity_name"] for e in extractors.values()} == {"ganops-inception-v3"}
    assert all(e["real_pass"] == "computed" and e["kid_subset_size"] == held_out for e in extractors.values())
    from_disk = [(f, weights_only) for f, weights_only in torch_load_calls if isinstance(f, str | os.PathLike)]
    assert from_disk == [(inception_weights_file, True)]
    # A second evaluation reads both domains' real features from the cache: the same numbers.
    again = evaluate(cfg, package)
    assert again.metrics == result.metrics
    assert all(e["real_pass"] == "cached" for e in again.info["extractors"].values())
