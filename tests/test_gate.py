"""The gate policy, pure (flows.gate): thresholds, beat-the-champion, the decision with one flag per check."""

from __future__ import annotations

import math

import pytest

from flows.gate import champion_check, decide, threshold_checks
from gan_core.config import GateConfig, Threshold, load_config
from gan_core.errors import UserError
from gan_core.metrics import METRICS, better, spec


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


def test_champion_check_follows_the_metric_direction_and_min_improvement() -> None:
    fid = GateConfig(primary_metric="fid_lenet", min_improvement=0.05)
    assert champion_check({"fid_lenet": 40.0}, None, {}, fid).passed  # no champion yet
    assert champion_check({"fid_lenet": 90.0}, "1", {"fid_lenet": 100.0}, fid).passed  # 10% lower
    assert not champion_check({"fid_lenet": 97.0}, "1", {"fid_lenet": 100.0}, fid).passed  # only 3%
    assert not champion_check({"fid_lenet": 110.0}, "1", {"fid_lenet": 100.0}, fid).passed  # worse
    coverage = GateConfig(primary_metric="class_coverage", min_improvement=0.0)
    assert champion_check({"class_coverage": 0.9}, "1", {"class_coverage": 0.8}, coverage).passed
    # min_improvement 0 still means strictly better: an equal model does not take the alias.
    assert not champion_check({"class_coverage": 0.8}, "1", {"class_coverage": 0.8}, coverage).passed
    assert not champion_check({"class_coverage": math.nan}, None, {}, coverage).passed


def test_decision_flags_each_check_and_fails_on_a_failed_run() -> None:
    gate = GateConfig(thresholds={"fid_lenet": Threshold(max=50.0)}, primary_metric="fid_lenet")
    good = decide(gate, "2", {"fid_lenet": 40.0}, ("r1", "FINISHED"), "1", {"fid_lenet": 45.0})
    assert good.passed and [c.name for c in good.checks] == ["run", "fid_lenet", "champion"]
    # A failed run fails the gate whatever its numbers; the other checks still say how they went.
    failed_run = decide(gate, "2", {"fid_lenet": 40.0}, ("r1", "FAILED"), None, {})
    assert not failed_run.passed and [c.passed for c in failed_run.checks] == [False, True, True]
    # Under a failed gate, each check's own flag says which one failed: the reasons are never parsed.
    worse = decide(gate, "2", {"fid_lenet": 48.0}, None, "1", {"fid_lenet": 45.0})
    assert not worse.passed and [(c.name, c.passed) for c in worse.checks] == [("fid_lenet", True), ("champion", False)]
    assert decide(gate, "1", {"fid_lenet": 45.0}, None, "1", {"fid_lenet": 45.0}).passed  # already the champion


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
