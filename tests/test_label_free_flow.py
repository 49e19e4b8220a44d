"""An unlabelled RGB collection through the whole service, offline (issue 28): `ganops retrain` on a flat folder
measures and gates in the label-free simclr space by default; the champion is re-measured in a candidate's context
when the data changes (the fair gate); `ganops models`, the monitor and a sweep read the new space as they read
lenet. Real Prefect (session harness), real MLflow store, real tiny trainings on tests/shapes.py's RGB shapes at
16 px. One module-scoped workspace, in file order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

LOOSE_GATE = "gate.thresholds={fid_simclr: {max: 1.0e9}, cluster_coverage_simclr: {min: 0.0}}"
"""20 MLP steps draw blobs: a label-free gate loose enough to pass them (the default one decides the first run)."""
NEW_DATA = "data.max_images=200"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, retrain_workspace, shapes_folder: Path) -> Iterator[Any]:
    ws = retrain_workspace(tmp_path_factory.mktemp("label_free"))
    tree = yaml.safe_load(ws.params.read_text())
    tree["data"].update(source=f"folder:{shapes_folder}", channels=3, resolution=16, max_images=None)
    tree["eval"]["encoder"] = {"epochs": 2, "batch_size": 60, "resolution": 16, "clusters": 8,
                               "out_dir": str(ws.root / "encoder")}
    del tree["gate"]  # the defaults: on a flat folder, the label-free gate
    ws.params.write_text(yaml.safe_dump(tree, sort_keys=False))
    with ws.entered():
        yield ws


@pytest.fixture(scope="module")
def first(prefect_harness: None, workspace: Any) -> dict[str, Any]:
    """`ganops retrain` on the flat folder with the default gate, downloads forbidden (GANOPS_OFFLINE=1, as on an
    air-gapped machine): version 1 and its printed decision."""
    import contextlib
    import io

    from flows.cli import app
    from gan_core.cli import run_app
    from gan_core.preflight import OFFLINE_ENV

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv(OFFLINE_ENV, "1")
        code = run_app(app, ["retrain", "--params", str(workspace.params)])
    return {"code": code, "out": out.getvalue()}


def test_a_flat_rgb_folder_goes_through_retrain_offline_to_a_gate_decision_on_the_label_free_metric(
    workspace: Any, first: dict[str, Any]
) -> None:
    from gan_core.evaluation.context import recorded_context

    assert first["out"].startswith("status: "), first["out"]
    cfg = workspace.config()
    assert cfg.eval.extractors == ["simclr"] and cfg.gate.primary_metric == "fid_simclr"
    version = workspace.client().get_model_version(cfg.registry.model_name, "1")
    tags = version.tags
    assert tags["gate.decision"] in ("passed", "failed")
    # The exit status follows the decision: 0 promoted, 3 rejected by the gate (never 2, a user error, or 1).
    assert first["code"] == {"passed": 0, "failed": 3}[tags["gate.decision"]], first["out"]
    reasons = tags["gate.reasons"]
    assert "fid_simclr = " in reasons and "cluster_coverage_simclr = " in reasons
    assert "fid_lenet" not in reasons and "class_coverage" not in reasons
    assert f"gate: {tags['gate.decision']}" in first["out"]
    run = workspace.client().get_run(version.run_id)
    metrics = run.data.metrics
    assert {"fid_simclr", "kid_simclr", "precision_simclr", "recall_simclr", "cluster_coverage_simclr"} <= set(metrics)
    assert not any("lenet" in name or name.startswith("class_") for name in metrics)
    # The context names the encoder's weights and training: another encoder is another feature space.
    context = recorded_context(tags)
    encoder = json.loads((workspace.root / "encoder" / "model" / "encoder.json").read_text())
    assert set(context["extractors"]) == {"simclr"}
    assert context["extractors"]["simclr"]["training_key"] == encoder["training_key"]
    assert len(context["extractors"]["simclr"]["weights_sha256"]) == 64
    # No labels: the classifier's step recorded that it is not used, and trained nothing.
    assert json.loads((Path(cfg.eval.classifier.out_dir) / "model" / "unused.json").read_text())["extractor"] == "lenet"
    # The run's whole config (its config.yaml artifact; eval.* are not run params) records the routed space.
    logged = workspace.client().download_artifacts(run.info.run_id, "config.yaml", str(workspace.root))
    assert yaml.safe_load(Path(logged).read_text())["eval"]["extractors"] == ["simclr"]


def test_new_data_re_measures_the_champion_in_the_candidate_s_simclr_space(
    workspace: Any, first: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import app
    from flows.retrain import retrain
    from gan_core.cli import run_app
    from gan_core.evaluation.context import context_hash

    name = workspace.config().registry.model_name
    assert run_app(app, ["promote", "1", "--force", "--reason", "a champion to compare with",
                         "--params", str(workspace.params)]) == 0
    result = retrain(params=str(workspace.params), overrides=[NEW_DATA, LOOSE_GATE])

    assert result["status"] == "promoted" and result["version"] == "2"
    comparison = result["gate"]["champion_comparison"]
    assert comparison["version"] == "1" and comparison["remeasured"] and comparison["unavailable"] is None
    assert comparison["context_hash"] == context_hash(result["eval_context"]) != comparison["recorded_context_hash"]
    # New data, a new encoder: the simclr space moved with it, and the context says so.
    v1 = workspace.client().get_model_version(name, "1").tags
    assert json.loads(v1["eval.context"])["extractors"]["simclr"] != result["eval_context"]["extractors"]["simclr"]
    remeasured = result["gate"]["champion_metrics"]["fid_simclr"]
    assert f"champion v1's {remeasured:.6g} (re-measured in the candidate's context" in result["gate"]["reasons"][-1]

    # `ganops models` shows the label-free metrics, marking values from another context.
    capsys.readouterr()
    assert run_app(app, ["models", "--params", str(workspace.params)]) == 0
    out = capsys.readouterr().out
    assert "fid_simclr" in out and "cluster_coverage_simclr" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert set(rows) == {"1", "2"} and "†" in rows["1"] and "†" not in rows["2"]


def test_the_monitor_re_measures_the_champion_in_the_simclr_space(workspace: Any, first: dict[str, Any]) -> None:
    from flows.monitor import monitor

    watched = monitor(params=str(workspace.params), overrides=[NEW_DATA, LOOSE_GATE])
    assert watched["champion"] == "2" and watched["action"] == "none", watched["reasons"]
    assert watched["drift"] == 0.0  # the same version, data and context: the same number
    assert "fid_simclr" in watched["metrics"] and "cluster_coverage_simclr" in watched["metrics"]


def test_a_sweep_searches_toward_fid_simclr_and_gates_its_best(workspace: Any, first: dict[str, Any]) -> None:
    import optuna

    from flows.registry.handle import version_metrics
    from flows.sweep import sweep

    space = workspace.root / "space.yaml"
    space.write_text(yaml.safe_dump({"trials": 2, "pruning": {"every_steps": 1000, "num_samples": 50},
                                     "params": {"train.g_optimizer.lr": {"choices": [0.0005, 0.002]}}}))
    result = sweep(space=str(space), params=str(workspace.params), overrides=[NEW_DATA, LOOSE_GATE])

    study = optuna.load_study(study_name="space", storage=f"sqlite:///{workspace.root / 'mlruns' / 'optuna.db'}")
    assert study.direction.name == "MINIMIZE" and [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    best = min(study.trials, key=lambda t: t.value)
    assert result["sweep"]["objective"] == "fid_simclr" and result["sweep"]["best_value"] == best.value
    version = workspace.client().get_model_version(workspace.config().registry.model_name, result["version"])
    assert version_metrics(version)["fid_simclr"] == best.value and version.tags["gate.decision"] in (
        "passed", "failed")
