"""The gate policy, pure (flows.gate): thresholds, beat-the-champion, the decision with one flag per check."""

from __future__ import annotations

import math

import pytest

from flows.gate import ChampionMetrics, champion_check, comparable, decide, threshold_checks
from gan_core.config import GateConfig, Threshold, load_config
from gan_core.config.metrics import METRICS, better, spec
from gan_core.errors import UserError


def test_thresholds_pass_fail_and_never_skip_missing_or_nan() -> None:
    gate = GateConfig(thresholds={"fid_lenet": Threshold(max=50.0), "class_coverage": Threshold(min=0.8)})
    ok = threshold_checks({"fid_lenet": 49.9, "class_coverage": 0.8}, gate)
    assert [c.passed for c in ok] == [True, True]
    high_fid = threshold_checks({"fid_lenet": 50.1, "class_coverage": 0.9}, gate)
    assert [c.passed for c in high_fid] == [True, False]  # sorted by name: class_coverage, fid_lenet
    assert high_fid[1].name == "fid_lenet" and "fid_lenet = 50.1 > max 50" in high_fid[1].reason
    nan = threshold_checks({"fid_lenet": math.nan, "class_coverage": 0.9}, gate)
    assert not nan[1].passed and "not finite" in nan[1].reason
    missing = threshold_checks({"fid_lenet": 10.0}, gate)
    assert not missing[0].passed and "class_coverage = None" in missing[0].reason


CTX = "1a2b3c4d5e6f7a8b"  # the candidate's evaluation context (gan_core.evaluation.context.context_hash)
OLD = "9f8e7d6c5b4a3928"  # another context: other data, extractor weights, sample count or seed


def _champion(metrics: dict[str, float], version: str = "1", context: str | None = CTX, **kw) -> ChampionMetrics:
    return ChampionMetrics(version, metrics, context, **kw)


def test_champion_check_follows_the_metric_direction_and_min_improvement() -> None:
    fid = GateConfig(primary_metric="fid_lenet", min_improvement=0.05)
    assert champion_check({"fid_lenet": 40.0}, None, fid, CTX).passed  # no champion yet
    assert champion_check({"fid_lenet": 90.0}, _champion({"fid_lenet": 100.0}), fid, CTX).passed  # 10% lower
    assert not champion_check({"fid_lenet": 97.0}, _champion({"fid_lenet": 100.0}), fid, CTX).passed  # only 3%
    assert not champion_check({"fid_lenet": 110.0}, _champion({"fid_lenet": 100.0}), fid, CTX).passed  # worse
    coverage = GateConfig(primary_metric="class_coverage", min_improvement=0.0)
    assert champion_check({"class_coverage": 0.9}, _champion({"class_coverage": 0.8}), coverage, CTX).passed
    # min_improvement 0 still means strictly better: an equal model does not take the alias.
    assert not champion_check({"class_coverage": 0.8}, _champion({"class_coverage": 0.8}), coverage, CTX).passed
    assert not champion_check({"class_coverage": math.nan}, None, coverage, CTX).passed


def test_decision_flags_each_check_and_fails_on_a_failed_run() -> None:
    gate = GateConfig(thresholds={"fid_lenet": Threshold(max=50.0)}, primary_metric="fid_lenet")
    good = decide(gate, "2", {"fid_lenet": 40.0}, ("r1", "FINISHED"), _champion({"fid_lenet": 45.0}), CTX)
    assert good.passed and [c.name for c in good.checks] == ["run", "fid_lenet", "champion"]
    # A failed run fails the gate whatever its numbers; the other checks still say how they went.
    failed_run = decide(gate, "2", {"fid_lenet": 40.0}, ("r1", "FAILED"), None, CTX)
    assert not failed_run.passed and [c.passed for c in failed_run.checks] == [False, True, True]
    # Under a failed gate, each check's own flag says which one failed: the reasons are never parsed.
    worse = decide(gate, "2", {"fid_lenet": 48.0}, None, _champion({"fid_lenet": 45.0}), CTX)
    assert not worse.passed and [(c.name, c.passed) for c in worse.checks] == [("fid_lenet", True), ("champion", False)]
    assert decide(gate, "1", {"fid_lenet": 45.0}, None, _champion({"fid_lenet": 45.0}), CTX).passed  # already it


# ----------------------------------------------------------------------------- like with like (issue 18)
def test_the_same_context_compares_the_recorded_numbers_and_says_so() -> None:
    gate = GateConfig(primary_metric="fid_lenet")
    check = champion_check({"fid_lenet": 57.93}, _champion({"fid_lenet": 60.39}), gate, CTX, version="2")
    assert check.passed and not check.skipped
    assert check.reason.startswith("fid_lenet 57.93 is 4.07% better than champion v1's 60.39 (recorded; both in "
                                   "context 1a2b3c4d)")


@pytest.mark.parametrize(("candidate", "minimum", "passed", "said"), [
    (20.26, 0.0, False, "fid_lenet 20.26 is not better than champion v1's 20.26"),
    (590.4, 0.0, False, "fid_lenet 590.4 is 29× worse than champion v1's 20.26"),
    (45.0, 0.0, False, "fid_lenet 45 is 2.2× worse than champion v1's 20.26"),
    (21.0, 0.0, False, "fid_lenet 21 is 3.65% worse than champion v1's 20.26"),
    (19.5, 0.0, True, "fid_lenet 19.5 is 3.75% better than champion v1's 20.26"),
    (19.5, 0.05, False, "fid_lenet 19.5 is 3.75% better than champion v1's 20.26 {where}, short of the 5% "
                        "gate.min_improvement"),
    (17.0, 0.05, True, "fid_lenet 17 is 16.1% better than champion v1's 20.26 {where}, at least the 5% "
                       "gate.min_improvement"),
])
def test_the_champion_check_says_how_the_candidate_compares_as_a_person_would(
    candidate: float, minimum: float, passed: bool, said: str
) -> None:
    """'29× worse than champion v1's 20.26', not 'improvement -2817.08% short of 0.00%'; the decision is unchanged."""
    where = "(recorded; both in context 1a2b3c4d)"
    gate = GateConfig(primary_metric="fid_lenet", min_improvement=minimum)
    check = champion_check({"fid_lenet": candidate}, _champion({"fid_lenet": 20.26}), gate, CTX)
    expected = said.format(where=where) if "{where}" in said else f"{said} {where}"
    assert check.passed is passed and check.reason == f"{expected}: {'pass' if passed else 'fail'}"
    # A higher-is-better metric reads in its own direction.
    coverage = GateConfig(primary_metric="class_coverage", min_improvement=0.0)
    worse = champion_check({"class_coverage": 0.3}, _champion({"class_coverage": 1.0}), coverage, CTX)
    assert not worse.passed and worse.reason.startswith("class_coverage 0.3 is 70% worse than champion v1's 1 ")


def test_a_champion_re_measured_in_the_candidates_context_decides_with_its_new_number() -> None:
    gate = GateConfig(thresholds={"fid_lenet": Threshold(max=100.0)}, primary_metric="fid_lenet", min_improvement=0.0)
    # The v1/v2 story of the issue: recorded 60.39 on the old data (context OLD), 57.93 for the candidate on the new
    # data; re-measured on the new data the champion scores 55.0, so the candidate does NOT beat it.
    remeasured = _champion({"fid_lenet": 55.0}, recorded={"fid_lenet": 60.39}, recorded_context_hash=OLD)
    decision = decide(gate, "2", {"fid_lenet": 57.93}, None, remeasured, CTX)
    check = decision.checks[-1]
    assert not decision.passed and not check.passed
    assert "fid_lenet 57.93 is 5.33% worse than champion v1's 55 (re-measured in the candidate's context 1a2b3c4d; " \
        "recorded 60.39 in context 9f8e7d6c" \
        in check.reason and check.reason.endswith(": fail")
    assert decision.champion_metrics == {"fid_lenet": 55.0} and decision.context_hash == CTX
    report = decision.as_dict()["champion_comparison"]
    assert report["remeasured"] and report["recorded"] == {"fid_lenet": 60.39}
    assert report["recorded_context_hash"] == OLD
    # The stale recorded number would have said the opposite.
    stale = decide(gate, "2", {"fid_lenet": 57.93}, None, _champion({"fid_lenet": 60.39}), CTX)
    assert stale.passed


def test_no_same_context_number_means_thresholds_only_with_a_note_never_a_cross_context_comparison() -> None:
    gate = GateConfig(thresholds={"fid_lenet": Threshold(max=100.0)}, primary_metric="fid_lenet")
    # The champion could not be re-evaluated in the candidate's context: its old number (far better) is not used.
    gone = _champion({"fid_lenet": 10.0}, context=OLD, unavailable="cannot fetch 'models:/g/1' from MLflow")
    decision = decide(gate, "2", {"fid_lenet": 57.93}, None, gone, CTX)
    check = decision.checks[-1]
    assert decision.passed and check.passed and check.skipped
    assert check.reason.startswith("champion comparison skipped: champion v1's fid_lenet (10) was measured in context "
                                   "9f8e7d6c, the candidate's (57.93) in 1a2b3c4d, and v1 could not be re-evaluated")
    assert "cannot fetch 'models:/g/1'" in check.reason and "thresholds alone decide: pass" in check.reason
    assert decision.champion_metrics == {}  # nothing comparable to report beside the candidate's numbers
    # The thresholds still decide: a candidate over the bound fails whatever the champion.
    assert not decide(gate, "2", {"fid_lenet": 150.0}, None, gone, CTX).passed
    # Different contexts handed in without a re-measurement are not compared either.
    other = champion_check({"fid_lenet": 57.93}, _champion({"fid_lenet": 10.0}, context=OLD), gate, CTX)
    assert other.passed and other.skipped and "measured in context 9f8e7d6c" in other.reason
    # A candidate that records no context (registered before contexts were) cannot be compared on equal terms.
    legacy = champion_check({"fid_lenet": 57.93}, _champion({"fid_lenet": 10.0}, context=None), gate, None, "7")
    assert legacy.passed and legacy.skipped and "v7 records no evaluation context" in legacy.reason
    # Two unknown contexts are not one context.
    assert not comparable(_champion({"fid_lenet": 10.0}, context=None), None)


def test_evaluation_context_names_what_the_numbers_depend_on_and_nothing_else() -> None:
    from gan_core.evaluation.context import (
        context_difference,
        context_hash,
        context_tags,
        evaluation_context,
        recorded_context,
    )

    info = {"data_version": "755336f0.dir", "data_version_source": "computed", "data_source": "mnist5k",
            "num_samples": 2000, "num_real": 5000, "seed": 1234, "batch_size": 200, "coverage_min_share": 0.2,
            "kid_subset_size": 1000, "generator": "models:/g/1", "device": "cpu",
            "extractors": {"lenet": {"weights_sha256": "ab" * 32, "training_key": "k1", "real_pass": "cached",
                                     "real_cache_file": "x.safetensors", "model_dir": "/somewhere"}}}
    ctx = evaluation_context(info)
    assert ctx["extractors"] == {"lenet": {"weights_sha256": "ab" * 32, "training_key": "k1"}}
    assert "device" not in ctx and "generator" not in ctx and "num_real" not in ctx
    # How a run went (device, cache use, paths, which generator) does not change the context...
    moved = {**info, "device": "cuda:0", "generator": "models:/g/2",
             "extractors": {"lenet": {**info["extractors"]["lenet"], "real_pass": "computed", "model_dir": "/else"}}}
    assert context_hash(evaluation_context(moved)) == context_hash(ctx)
    # ...what was measured does.
    for change in ({"num_samples": 300}, {"seed": 1}, {"data_version": "0ther.dir"}, {"batch_size": 100},
                   {"extractors": {"lenet": {**info["extractors"]["lenet"], "weights_sha256": "cd" * 32}}}):
        assert context_hash(evaluation_context({**info, **change})) != context_hash(ctx), change
    assert context_difference(ctx, evaluation_context({**info, "num_samples": 300})) == "num_samples: 2000 → now 300"
    tags = context_tags(ctx)
    assert tags["eval.context_hash"] == context_hash(ctx) and tags["eval.num_samples"] == "2000"
    assert recorded_context(tags) == ctx and recorded_context({}) is None
    assert recorded_context({"eval.context": "{not json"}) is None


def test_measurements_are_cached_as_json_and_a_foreign_or_damaged_entry_is_never_trusted(tmp_path) -> None:
    from gan_core.evaluation.context import champion_cache_path, context_hash, read_measurement, write_measurement

    ctx = {"format": "ganops-eval-context/1", "task": "generation", "data_version": "d.dir", "num_samples": 200,
           "seed": 1, "extractors": {}}
    hash_ = context_hash(ctx)
    path = champion_cache_path(tmp_path, "ganops/generator", "3", "0123456789abcdef", hash_)
    assert path.parent == tmp_path / "champions" and path.name == f"ganops_generator-v3-0123456789ab-{hash_}.json"
    assert read_measurement(path, hash_) is None  # nothing yet
    write_measurement(path, ctx, {"fid_lenet": 12.5}, source="test")
    assert read_measurement(path, hash_) == {"fid_lenet": 12.5}
    assert read_measurement(path, "ffffffffffffffff") is None  # measured in another context
    path.write_text(path.read_text()[:-10])  # cut short
    assert read_measurement(path, hash_) is None
    assert not list(path.parent.glob(".*.tmp"))  # written atomically: no temp files left


def test_every_metric_has_a_declared_direction_and_unknown_names_are_errors_not_guesses() -> None:
    assert better("fid_lenet") == "lower" and better("kid_inception_std") == "lower"
    assert better("precision_lenet") == "higher" and better("class_coverage") == "higher"
    assert spec("isc_inception").space == "inception" and spec("class_coverage").space == "lenet"
    assert all(s.better in ("lower", "higher") and s.description for s in METRICS.values())
    with pytest.raises(UserError, match="unknown metric 'fid_clip'.*fid_lenet"):
        better("fid_clip")


@pytest.mark.parametrize("override", [{"gate.primary_metric": "fid_lenett"},
                                      {"gate.thresholds": {"fid_lennet": {"max": 50}}}])
def test_an_unknown_metric_in_the_gate_settings_is_a_config_error(tmp_path, override: dict) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    bad = next(iter(override.values()))
    name = bad if isinstance(bad, str) else next(iter(bad))
    with pytest.raises(UserError, match=f"{name}.*known metrics: .*fid_lenet"):
        load_config(params, override)
