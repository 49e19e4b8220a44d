"""One training identity (gan_core.training.identity) for resume, the flow's skip key and dvc.yaml's train stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gan_core.config import load_config
from gan_core.training.identity import (
    evaluation_key,
    evaluation_settings,
    identity_key,
    resumable,
    training_identity,
    training_params,
)

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _config(**overrides: object) -> dict:
    return load_config(REPO / "params.yaml", overrides).model_dump(mode="json")


def _identity(**overrides: object) -> dict:
    return training_identity(_config(**overrides), "d" * 32 + ".dir", "c" * 16)


@pytest.mark.parametrize("override", [
    {"train.log_every": 7}, {"train.sample_every": 3}, {"train.checkpoint_every": 5}, {"train.out_dir": "elsewhere"},
    {"train.device": "cpu"}, {"train.precision": "fp32"}, {"train.channels_last": False}, {"train.compile": True},
    {"eval.num_samples": 500}, {"eval.out_dir": "elsewhere"}, {"registry.experiment": "other"},
])
def test_runtime_reporting_and_evaluation_settings_never_change_the_training(override: dict) -> None:
    assert identity_key(_identity(**override)) == identity_key(_identity())


@pytest.mark.parametrize("override", [
    {"train.loss": "hinge"}, {"train.seed": 1}, {"train.batch_size": 32}, {"train.g_optimizer.lr": 0.001},
    {"train.ema_decay": 0.99}, {"model.g_width": 16}, {"model.arch": "mlp"}, {"train.steps": 10},
])
def test_weight_shaping_settings_always_change_it(override: dict) -> None:
    assert identity_key(_identity(**override)) != identity_key(_identity())


def test_data_and_code_are_part_of_it_and_only_more_steps_continue_a_checkpoint() -> None:
    base = _identity()
    assert identity_key(training_identity(_config(), "e" * 32 + ".dir", "c" * 16)) != identity_key(base)
    assert identity_key(training_identity(_config(), "d" * 32 + ".dir", "0" * 16)) != identity_key(base)
    assert resumable(_identity(**{"train.steps": 5000}), base)
    assert not resumable(_identity(**{"train.loss": "hinge"}), base)
    assert not resumable(training_identity(_config(), "d" * 32 + ".dir", "0" * 16), base)


def test_dvc_train_stage_lists_exactly_the_identity_params_and_depends_on_all_code() -> None:
    assert STAGES["train"]["params"] == training_params(_config())
    # The code hash covers gan_core's .py files; DVC hashes the gan_core directory (minus .dvcignore'd bytecode):
    # the same files, as long as gan_core holds nothing else.
    for stage in STAGES.values():
        assert "gan_core" in stage["deps"]
    others = [p for p in (REPO / "gan_core").rglob("*")
              if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert not others, f"files in gan_core that the code hash does not cover: {others}"


def test_dvc_evaluate_stage_lists_every_setting_of_the_evaluation_key() -> None:
    config = _config()
    # The classifier's and encoder's settings reach the evaluate stage through its dependency on their models.
    assert {f"eval.{k}" for k in evaluation_settings(config)} - {"eval.classifier", "eval.encoder"} <= set(
        STAGES["evaluate"]["params"])
    assert STAGES["classifier"]["params"] == ["eval.classifier"]
    # The encoder stage trains only when eval.extractors measures simclr, so it reads that setting too.
    assert STAGES["encoder"]["params"] == ["eval.extractors", "eval.encoder"]
    assert {"outputs/classifier/model", "outputs/encoder/model"} <= set(STAGES["evaluate"]["deps"])
    assert evaluation_key(_config(**{"eval.seed": 1})) != evaluation_key(config)
    assert evaluation_key(_config(**{"eval.classifier.min_accuracy": 0.5})) != evaluation_key(config)
    assert evaluation_key(_config(**{"eval.classifier.out_dir": "x"})) == evaluation_key(config)
    assert evaluation_key(_config(**{"eval.encoder.epochs": 2})) != evaluation_key(config)
    assert evaluation_key(_config(**{"eval.encoder.out_dir": "x"})) == evaluation_key(config)
    assert evaluation_key(_config(**{"eval.device": "cpu", "eval.out_dir": "x"})) == evaluation_key(config)


def _translation(**overrides: object) -> dict:
    """The translation demo's settings as JSON (cyclegan; its semantic-consistency term on, as by default)."""
    return load_config(REPO / "configs" / "cyclegan-digits.yaml", overrides).model_dump(mode="json")


def test_the_judges_are_part_of_a_semantic_training_and_only_of_it() -> None:
    from gan_core.packaging.classifier import domain_version, judge_settings, training_key

    version = "d" * 32 + ".dir"
    semantic = training_identity(_translation(), version, "c" * 16)
    # Each judge's own training key, as its classifier.json records it: its domain's data and its settings.
    settings = judge_settings(_translation()["eval"]["classifier"])
    assert semantic["judges"] == {d: training_key(settings, domain_version(version, d)) for d in ("a", "b")}
    assert semantic["judges"]["a"] != semantic["judges"]["b"]
    # A judge trained otherwise is another training (and a checkpoint of the old one is not resumed) ...
    other_judges = training_identity(_translation(**{"eval.classifier.epochs": 3}), version, "c" * 16)
    assert identity_key(other_judges) != identity_key(semantic) and not resumable(other_judges, semantic)
    # ... but what does not shape the judges' weights changes nothing.
    for override in ({"eval.classifier.min_accuracy": 0.5}, {"eval.classifier.out_dir": "elsewhere"}):
        assert identity_key(training_identity(_translation(**override), version, "c" * 16)) == identity_key(semantic)
    # With the term off (or for a family without one) the classifiers are not part of it.
    off = _translation(**{"train.semantic_weight": 0.0})
    assert "judges" not in training_identity(off, version, "c" * 16)
    assert identity_key(training_identity({**off, "eval": _translation(**{"eval.classifier.epochs": 3})["eval"]},
                                          version, "c" * 16)) == identity_key(training_identity(off, version, "c" * 16))
    assert "judges" not in _identity(**{"train.semantic_weight": 2.0})  # dcgan owns no such term
    # dvc.yaml's train stage would then depend on eval.classifier as well.
    assert training_params(_translation())[-1] == "eval.classifier"
    assert "eval.classifier" not in training_params(off) and "eval.classifier" not in training_params(_config())
