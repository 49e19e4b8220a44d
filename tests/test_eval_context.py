"""Beat the champion on equal terms (issue 18): every recorded metric carries its evaluation context, and the gate
compares candidate and champion only in one context, re-evaluating the champion in the candidate's when they
differ. Real Prefect (session harness), real MLflow store, real tiny trainings on digits (tests/conftest.py's
tiny_retrain_params); one module-scoped workspace, in file order: v1 is the champion the later tests face.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, retrain_workspace) -> Iterator[Any]:
    ws = retrain_workspace(tmp_path_factory.mktemp("eval_context"))
    with ws.entered():
        yield ws


@pytest.fixture(scope="module")
def first(prefect_harness: None, workspace: Any) -> dict[str, Any]:
    """v1, promoted: the champion on the first data with 200 evaluation samples."""
    from flows.retrain import retrain

    result = retrain(params=str(workspace.params))
    assert result["status"] == "promoted" and result["version"] == "1"
    return result


def _independent(workspace: Any, root: Path, overrides: list[str], model_uri: str) -> dict[str, float]:
    """`python -m gan_core evaluate --generator <model_uri>` as a function, with its own output and real-feature
    cache directories: nothing shared with the gate's evaluation but the data, the classifier and the settings."""
    from gan_core.evaluation.evaluate import evaluate

    cfg = workspace.config([*overrides, f"eval.out_dir={root / 'eval'}", f"eval.cache_dir={root / 'cache'}"])
    return evaluate(cfg, model_uri).metrics


def test_the_context_is_recorded_on_the_run_and_the_version(workspace: Any, first: dict[str, Any]) -> None:
    from gan_core.data.version import data_version
    from gan_core.evaluation.context import context_hash, recorded_context
    from gan_core.packaging.classifier import model_dir

    cfg = workspace.config()
    client = workspace.client()
    version = client.get_model_version(cfg.registry.model_name, "1")
    context = recorded_context(version.tags)
    assert context is not None and version.tags["eval.context_hash"] == context_hash(context)
    assert context["data_version"] == data_version(cfg.data.prepared_dir) == version.tags["data_version"]
    assert (context["num_samples"], context["seed"]) == (cfg.eval.num_samples, cfg.eval.seed)
    classifier = json.loads((model_dir(cfg) / "classifier.json").read_text())
    assert context["extractors"]["lenet"]["training_key"] == classifier["training_key"]
    assert len(context["extractors"]["lenet"]["weights_sha256"]) == 64
    run_tags = client.get_run(first["run_id"]).data.tags
    assert run_tags["eval.context"] == version.tags["eval.context"]
    assert run_tags["eval.context_hash"] == version.tags["eval.context_hash"]
    assert run_tags["eval.data_version"] == context["data_version"]  # the run keeps the readable fields too


def test_a_new_sample_count_alone_re_measures_the_champion_and_the_decision_follows_it(
    workspace: Any, first: dict[str, Any], tmp_path: Path
) -> None:
    from flows.monitor import monitor
    from flows.retrain import retrain
    from gan_core.evaluation.context import CACHE_SUBDIR, context_hash, read_measurement

    cfg = workspace.config()
    client = workspace.client()
    name = cfg.registry.model_name
    kept = client.get_model_version(name, "1").tags["metrics"]
    recorded = json.loads(kept)["fid_lenet"]
    # Make the stale number say "the candidate wins by far": only a like-with-like comparison can reject it.
    client.set_model_version_tag(name, "1", "metrics", json.dumps({**json.loads(kept), "fid_lenet": recorded * 10}))
    try:
        result = retrain(params=str(workspace.params), overrides=["eval.num_samples=300"])
    finally:
        client.set_model_version_tag(name, "1", "metrics", kept)

    # Only the evaluation changed: the training resumed its checkpoint, so v2 has v1's weights, measured anew.
    assert result["version"] == "2"
    gate = result["gate"]
    comparison = gate["champion_comparison"]
    assert comparison["version"] == "1" and comparison["remeasured"]
    assert comparison["context_hash"] == gate["context_hash"] == context_hash(result["eval_context"])
    assert comparison["recorded_context_hash"] == first["gate"]["context_hash"] != gate["context_hash"]
    remeasured = gate["champion_metrics"]["fid_lenet"]
    # Equal to an independent evaluation of the champion with the candidate's settings.
    independent = _independent(workspace, tmp_path, ["eval.num_samples=300"], f"models:/{name}@champion")
    assert remeasured == independent["fid_lenet"]
    # The same weights in the same context score the same: not strictly better, rejected. The stale 10x number
    # would have promoted it.
    assert result["metrics"]["fid_lenet"] == remeasured
    assert result["status"] == "rejected" and not gate["passed"]
    reason = gate["reasons"][-1]
    assert reason.startswith(f"fid_lenet {remeasured:.6g} is not better than champion v1's {remeasured:.6g} "
                             f"(re-measured in the candidate's context {gate['context_hash'][:8]}; "
                             f"recorded {recorded * 10:.6g}")
    assert reason.endswith(": fail")
    # The re-measurement is cached as JSON, keyed by the champion version, its run and the context.
    cached = list((Path(cfg.eval.cache_dir) / CACHE_SUBDIR).glob(f"*-v1-*-{gate['context_hash']}.json"))
    assert len(cached) == 1 and read_measurement(cached[0], gate["context_hash"])["fid_lenet"] == remeasured

    # The monitor follows the same rule: the champion's recorded numbers (200 samples) say nothing about drift
    # at 300 samples, so no drift is computed and the changed context is the reason to retrain.
    watched = monitor(params=str(workspace.params), overrides=["eval.num_samples=300"])
    assert watched["drift"] is None and watched["current"] == remeasured and watched["action"] == "retrain"
    assert any(r.startswith("evaluation context changed (num_samples: 200 → now 300)") for r in watched["reasons"])
    assert watched["retrain"]["status"] == "skipped"  # v2 is that candidate already


def test_new_data_re_measures_the_champion_on_it_equal_to_an_independent_evaluation(
    workspace: Any, first: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import app
    from flows.retrain import retrain
    from flows.tasks import train_extractors, version_data
    from gan_core.cli import run_app
    from gan_core.evaluation.context import context_hash

    overrides = ["data.max_images=300"]
    cfg = workspace.config(overrides)
    name = cfg.registry.model_name
    # The new data and its extractors (what the retrain would do first), then the champion evaluated on it
    # independently, before the gate: @champion is v1 here.
    new_data = version_data.fn(cfg, use_dvc=False)
    assert new_data["data_version"] != first["data_version"]
    train_extractors.fn(cfg)
    assert str(workspace.client().get_model_version_by_alias(name, "champion").version) == "1"
    independent = _independent(workspace, tmp_path, overrides, f"models:/{name}@champion")

    result = retrain(params=str(workspace.params), overrides=overrides)

    gate = result["gate"]
    comparison = gate["champion_comparison"]
    assert result["data_version"] == new_data["data_version"] and result["eval_context"]["data_version"] == (
        new_data["data_version"])
    assert comparison["version"] == "1" and comparison["remeasured"] and comparison["unavailable"] is None
    assert comparison["context_hash"] == context_hash(result["eval_context"]) != comparison["recorded_context_hash"]
    # The lenet extractor was retrained on the new data: a new feature space, named by the context.
    assert result["eval_context"]["extractors"]["lenet"] != first["eval_context"]["extractors"]["lenet"]
    remeasured = gate["champion_metrics"]["fid_lenet"]
    assert remeasured == independent["fid_lenet"]
    assert remeasured != first["metrics"]["fid_lenet"]  # the recorded value, on the old data, is another number
    # The decision follows the re-measured value.
    candidate = result["metrics"]["fid_lenet"]
    assert (result["status"] == "promoted") == (candidate < remeasured)
    reason = gate["reasons"][-1]
    assert f"champion v1's {remeasured:.6g} (re-measured in the candidate's context " \
        f"{gate['context_hash'][:8]}; recorded {first['metrics']['fid_lenet']:.6g} in context " \
        f"{comparison['recorded_context_hash'][:8]}, not comparable)" in reason

    # `ganops models`: each version's value with its context; those not comparable with the champion's marked †.
    params = ["--params", str(workspace.params)]
    assert run_app(app, ["models", *params]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    champion = str(workspace.client().get_model_version_by_alias(name, "champion").version)
    assert comparison["context_hash"][:8] in rows[result["version"]]
    assert set(rows) == {"1", "2", "3"}
    for version, row in rows.items():
        assert ("†" in row) == (_context(workspace, version) != _context(workspace, champion)), (version, row)
    assert "† measured in another evaluation context" in out

    # The run report says the same: the champion's number re-measured in the candidate's context.
    from flows.report import summary_markdown

    report = summary_markdown(cfg, result)
    assert f"- champion v1: re-measured fid_lenet {remeasured:.4g} in context {gate['context_hash'][:8]}" in report
    assert "| metric | candidate | threshold | champion (re-measured) | better |" in report


def _context(workspace: Any, version: str) -> str | None:
    from gan_core.evaluation.context import recorded_hash

    name = workspace.config().registry.model_name
    return recorded_hash(workspace.client().get_model_version(name, version).tags)
