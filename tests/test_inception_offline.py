"""The inception-v3-compat extractor offline: a clear error with no weights, real metrics from a local file.

The weights file is built here (torch-fidelity's architecture, random init, saved as the state dict it loads),
so nothing is downloaded; the numbers are meaningless but must be finite and carry the `_inception` names.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from gan_core import metrics as m
from gan_core.config import DataConfig
from gan_core.data import load_prepared, prepare
from gan_core.errors import UserError
from gan_core.evaluate import evaluate
from gan_core.fidelity import INCEPTION_WEIGHTS_ENV, OFFLINE_ENV, inception_weights

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


def test_bad_weights_files_are_user_errors(offline: None, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.pth"):
        inception_weights(str(tmp_path / "nope.pth"))
    not_weights = tmp_path / "object.pth"
    torch.save({"layer": torch.nn.Linear(2, 2)}, not_weights)  # a pickled module, not a state dict of tensors
    with pytest.raises(UserError, match="not a PyTorch state dict|not a state dict"):
        inception_weights(str(not_weights))


def test_env_var_names_the_weights(offline: None, inception_weights_file: Path, monkeypatch) -> None:
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(inception_weights_file))
    assert inception_weights(None) == str(inception_weights_file)


def test_inception_metrics_from_a_local_weights_file(
    offline: None, inception_weights_file: Path, tmp_path: Path, eval_config
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
    result = evaluate(cfg, Replay())
    assert INCEPTION_METRICS <= set(result)
    assert all(math.isfinite(result[k]) for k in INCEPTION_METRICS)
    assert not any(k.endswith("_lenet") for k in result) and m.CLASS_COVERAGE not in result
    info = result[m.INFO_KEY]["extractors"]["inception"]
    assert info["weights"] == str(inception_weights_file) and info["torch_fidelity_name"] == "inception-v3-compat"
    assert result[m.INFO_KEY]["kid_subset_size"] == 10
