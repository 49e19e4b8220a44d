"""The monitor flow: re-evaluate the champion on the latest data; retrain on drift or on a data change.
Real Prefect (session harness), real MLflow store, real tiny training on digits."""

from __future__ import annotations

import json
import math

import pytest

from flows.monitor import relative_drift


def test_drift_is_measured_only_in_the_recorded_context() -> None:
    from flows.monitor import drift_check
    from gan_core.config import GateConfig

    gate = GateConfig(primary_metric="fid_lenet", max_drift=0.1)
    ctx = {"format": "ganops-eval-context/1", "data_version": "a.dir", "num_samples": 200, "seed": 1, "extractors": {}}
    assert drift_check(gate, "1", {"fid_lenet": 10.0}, ctx, {"fid_lenet": 10.5}, ctx) == (pytest.approx(0.05), None)
    drift, why = drift_check(gate, "1", {"fid_lenet": 10.0}, ctx, {"fid_lenet": 12.0}, ctx)
    assert drift == pytest.approx(0.2) and why.startswith("fid_lenet drifted +20.0% (recorded 10, now 12, both in")
    # 30% "better" at 2000 samples says nothing: FID's bias depends on the sample count. No drift, and the reason.
    more = {**ctx, "num_samples": 2000}
    drift, why = drift_check(gate, "1", {"fid_lenet": 10.0}, ctx, {"fid_lenet": 7.0}, more)
    assert drift is None and why.startswith("evaluation context changed (num_samples: 200 → now 2000): champion v1's "
                                            "recorded fid_lenet 10 (context ")
    drift, why = drift_check(gate, "1", {"fid_lenet": 10.0}, None, {"fid_lenet": 10.0}, ctx)
    assert drift is None and why.startswith("evaluation context unknown: champion v1 records none")


def test_relative_drift_follows_the_metric_direction() -> None:
    # FID: lower is better, so a rise is drift.
    assert relative_drift("fid_lenet", 10.0, 12.0) == pytest.approx(0.2)
    assert relative_drift("fid_lenet", 10.0, 8.0) == pytest.approx(-0.2)
    # Coverage: higher is better, so a fall is drift.
    assert relative_drift("class_coverage", 0.8, 0.6) == pytest.approx(0.25)
    # A metric that cannot be measured any more is infinitely drifted, never silently fine.
    assert relative_drift("fid_lenet", 10.0, math.nan) == math.inf


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_monitor_holds_steady_then_retrains_on_drift_and_on_new_data(
    tmp_path, retrain_workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.monitor import monitor
    from flows.retrain import retrain
    from gan_core.data.version import data_version

    ws = retrain_workspace(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
    monkeypatch.chdir(ws.root)
    cfg = ws.config()
    name = cfg.registry.model_name
    client = ws.client()
    first = retrain(params=str(ws.params))
    assert first["status"] == "promoted"
    old_version = first["data_version"]

    # Same data, same champion: the re-measured primary metric matches the recorded one → nothing to do.
    steady = monitor(params=str(ws.params))
    assert steady["action"] == "none" and steady["retrain"] is None
    assert steady["champion"] == "1" and steady["data_version"] == old_version
    assert abs(steady["drift"]) < cfg.gate.max_drift / 10
    assert steady["current"] == pytest.approx(first["metrics"]["fid_lenet"], rel=1e-3)

    # The recorded value says the champion used to be twice as good: that is drift past gate.max_drift.
    kept = client.get_model_version(name, "1").tags["metrics"]
    recorded = json.loads(kept)["fid_lenet"]
    client.set_model_version_tag(name, "1", "metrics", json.dumps({**json.loads(kept), "fid_lenet": recorded / 2}))
    drifted = monitor(params=str(ws.params))
    client.set_model_version_tag(name, "1", "metrics", kept)
    assert drifted["action"] == "retrain"
    assert any("drifted" in r and "gate.max_drift" in r for r in drifted["reasons"])
    assert drifted["drift"] == pytest.approx(1.0, rel=1e-2)
    # Data, config and code are unchanged, so the retrain it triggers honestly has nothing new to train.
    assert drifted["retrain"]["status"] == "skipped"

    # New data (a different subset): the data version differs from the champion's → retrain on it.
    changed = monitor(params=str(ws.params), overrides=["data.max_images=300"])
    new_version = data_version(ws.config(["data.max_images=300"]).data.prepared_dir)
    assert new_version != old_version
    assert changed["action"] == "retrain" and changed["data_version"] == new_version
    assert any("data version changed" in r and old_version in r for r in changed["reasons"])
    # Re-measured on other data with a retrained lenet extractor, the champion's number is in another context than
    # the recorded one: no drift is computed across contexts (flows.gate's rule), the changed context is said.
    assert changed["drift"] is None
    assert any(r.startswith(f"evaluation context changed (data_version: '{old_version}' → now '{new_version}')")
               for r in changed["reasons"])
    retrained = changed["retrain"]
    assert retrained["status"] in ("promoted", "rejected") and retrained["version"] == "2"
    v2 = client.get_model_version(name, "2")
    assert v2.tags["data_version"] == new_version
    # Whatever the gate said, the champion is a registered version and the alias names exactly one of them.
    champion = str(client.get_model_version_by_alias(name, "champion").version)
    assert champion == ("2" if retrained["status"] == "promoted" else "1")
