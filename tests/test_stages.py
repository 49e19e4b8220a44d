"""registry.stages: the opt-in alias ↔ stage mapping, on a real SQLite store. With it, models:/<name>/Production
and @champion name the same version through promotion, forced promotion and rollback; without it (the default),
no stage ever changes."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import pytest
import torch
from test_registry import GOOD, _aliases, _candidate, _client, model_dir  # noqa: F401  (model_dir: a fixture)

from flows import registry
from flows.cli import app
from gan_core.cli import run_app
from gan_core.config import Config, ConfigError, load_config
from gan_core.packaging.generator import load_generator, sample_images

STAGES = ["registry.stages={champion: Production, challenger: Staging}"]


def _config(mlflow_store, digits_prepared: Path, tmp_path: Path, extra: list[str]) -> Config:
    params = tmp_path / "params.yaml"
    params.write_text("gate:\n  thresholds: {fid_lenet: {max: 50}, class_coverage: {min: 0.8}}\n"
                      "  min_improvement: 0.05\n")
    return load_config(params, [*mlflow_store.overrides, f"data.prepared_dir={digits_prepared}", "data.source=digits",
                                *extra])


def _stages(cfg: Config) -> dict[str, str]:
    """version → stage, for versions in a stage other than None."""
    versions = _client(cfg).search_model_versions(f"name='{cfg.registry.model_name}'")
    return {str(v.version): v.current_stage for v in versions if v.current_stage != "None"}


def test_stages_follow_the_aliases_through_promotion_force_and_rollback(
    mlflow_store, digits_prepared: Path, tmp_path: Path, model_dir: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = _config(mlflow_store, digits_prepared, tmp_path, STAGES)
    name = cfg.registry.model_name
    v1 = _candidate(cfg, model_dir, GOOD)  # fid 40
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, "flows.registry"):
        warnings.simplefilter("always")
        assert registry.promote(cfg, v1)["promoted"]
        assert _stages(cfg) == {v1: "Production"}

        # A version short of beating the champion is rejected: nothing moves.
        v2 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 39.0})
        assert not registry.promote(cfg, v2)["promoted"]
        assert _stages(cfg) == {v1: "Production"} and _aliases(cfg)["champion"] == v1

        # A challenger (gate passed, not champion) is Staging; promoting it archives the old champion.
        v3 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 30.0})
        assert registry.gate(cfg, v3)["passed"]
        assert _stages(cfg) == {v1: "Production", v3: "Staging"}
        assert registry.promote(cfg, v3)["promoted"]
        assert _stages(cfg) == {v1: "Archived", v3: "Production"}

        # Both URIs load the same weights.
        by_stage = load_generator(f"models:/{name}/Production")
        by_alias = load_generator(f"models:/{name}@champion")
        assert torch.equal(sample_images(by_stage, 2, seed=1), sample_images(by_alias, 2, seed=1))

        # A forced promotion moves the stage too; rollback moves both back.
        v4 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 80.0})
        assert registry.promote(cfg, v4, force=True, reason="pinning a baseline")["promoted"]
        assert _stages(cfg)[v4] == "Production" and _stages(cfg)[v3] == "Archived"
        assert registry.rollback(cfg) == {"champion": v3, "replaced": v4}
        assert _stages(cfg)[v3] == "Production" and _stages(cfg)[v4] == "Archived"
        assert _aliases(cfg)["champion"] == v3

        # A failing candidate moves neither.
        v5 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": math.nan})
        assert not registry.promote(cfg, v5)["promoted"] and v5 not in _stages(cfg)
        assert _aliases(cfg)["champion"] == v3 and _stages(cfg)[v3] == "Production"
    # MLflow's deprecation warning is not repeated per call; ganops says it once.
    assert not [w for w in caught if issubclass(w.category, FutureWarning) and "stage" in str(w.message)]
    assert len([r for r in caplog.records if "registry.stages is set" in r.getMessage()]) <= 1

    # `ganops models` shows the stage column when stages are on.
    cli_params = tmp_path / "cli_params.yaml"
    cli_params.write_text(f"registry:\n  tracking_uri: {mlflow_store.uri}\n"
                          f"  artifact_location: {mlflow_store.artifacts}\n"
                          "  stages: {champion: Production, challenger: Staging}\n")
    assert run_app(app, ["models", "--params", str(cli_params)]) == 0
    table = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") > 3}
    assert "stage" in table and "Production" in rows[v3] and "Archived" in rows[v4]


def test_without_stages_no_stage_ever_changes(
    mlflow_store, digits_prepared: Path, tmp_path: Path, model_dir: Path,  # noqa: F811
) -> None:
    cfg = _config(mlflow_store, digits_prepared, tmp_path, [])
    assert cfg.registry.stages == {}
    v1 = _candidate(cfg, model_dir, GOOD)
    v2 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 30.0})
    assert registry.promote(cfg, v1)["promoted"] and registry.promote(cfg, v2)["promoted"]
    assert registry.rollback(cfg)["champion"] == v1
    assert _stages(cfg) == {}


def test_stage_mapping_is_validated(mlflow_store, digits_prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="different stages"):
        _config(mlflow_store, digits_prepared, tmp_path,
                ["registry.stages={champion: Production, challenger: Production}"])
    with pytest.raises(ConfigError, match="registry.stages"):
        _config(mlflow_store, digits_prepared, tmp_path, ["registry.stages={champion: Prod}"])
