"""Registration, the gate, promotion, rollback and concurrent promotions against a real SQLite MLflow store."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows import registry
from flows.cli import app, ui_command_line
from gan_core.cli import run_app
from gan_core.config import Config, load_config
from gan_core.data.version import data_version
from gan_core.errors import UserError
from gan_core.tracking.runs import training_tags
from gan_core.tracking.store import configure, experiment_id

GATE_YAML = """
gate:
  thresholds:
    fid_lenet: {max: 50.0}
    class_coverage: {min: 0.8}
  primary_metric: fid_lenet
  min_improvement: 0.05
"""


@pytest.fixture(scope="module")
def model_dir(generator_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator package saved once as a real pyfunc model directory; each candidate run gets a copy."""
    from pyfunc import save_pyfunc

    return save_pyfunc(generator_package, tmp_path_factory.mktemp("pyfunc") / "generator")


@pytest.fixture()
def cfg(mlflow_store, digits_prepared: Path, tmp_path: Path) -> Config:
    params = tmp_path / "params.yaml"
    params.write_text(GATE_YAML)
    return load_config(params, [*mlflow_store.overrides, f"data.prepared_dir={digits_prepared}", "data.source=digits",
                                f"eval.cache_dir={tmp_path / 'cache'}", f"eval.out_dir={tmp_path / 'eval'}"])


def _client(cfg: Config) -> MlflowClient:
    return configure(cfg.registry)


CONTEXT = {"format": "ganops-eval-context/1", "task": "generation", "data_version": "synthetic.dir",
           "num_samples": 200, "seed": 1, "extractors": {"lenet": {"weights_sha256": "ab" * 32}}}
"""The evaluation context of the synthetic metrics below: one for all, so the gate compares them as recorded."""


def _candidate(
    cfg: Config, model: Path, metrics: dict[str, float], status: str = "FINISHED", tags: dict[str, str] | None = None,
    context: dict | None = CONTEXT,
) -> str:
    """A real run holding the pyfunc generator model and its lineage tags (as a training run does), ended with
    `status`, registered as a new version."""
    client = _client(cfg)
    run = client.create_run(experiment_id(cfg.registry, client), tags=training_tags(cfg))
    run_id = run.info.run_id
    client.log_artifacts(run_id, str(model), "generator")
    client.set_terminated(run_id, status)
    result = registry.register_candidate(
        cfg, f"runs:/{run_id}/generator", run_id=run_id, metrics=metrics, tags=tags or training_tags(cfg),
        context=context,
    )
    return result["version"]


def _aliases(cfg: Config) -> dict[str, str]:
    return {k: str(v) for k, v in _client(cfg).get_registered_model(cfg.registry.model_name).aliases.items()}


def _champion(cfg: Config) -> str | None:
    return _aliases(cfg).get(cfg.registry.champion_alias)


def _tags(cfg: Config, version: str) -> dict[str, str]:
    return dict(_client(cfg).get_model_version(cfg.registry.model_name, version).tags)


GOOD = {"fid_lenet": 40.0, "class_coverage": 1.0, "kid_lenet": 0.02}


# ----------------------------------------------------------------------------- registration
def test_register_candidate_tags_lineage_metrics_and_extractors(
    cfg: Config, model_dir: Path, digits_prepared: Path
) -> None:
    v1 = _candidate(cfg, model_dir, GOOD)
    v2 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 30.0})
    assert (v1, v2) == ("1", "2")
    tags = _tags(cfg, v1)
    # Few tags (the versions table shows all of them in every row): what code reads and people filter by.
    assert set(tags) == {*registry.VERSION_TAGS, registry.METRICS_TAG, "eval.context", "eval.context_hash"}
    assert tags["data_version"] == data_version(digits_prepared)
    assert len(tags["git_commit"]) in (40, len("unknown")) and tags["git_dirty"] in ("true", "false", "unknown")
    assert json.loads(tags[registry.METRICS_TAG]) == GOOD  # every digit: the gate compares these
    # The rest of the lineage is the run's tags, quoted in the description with the metrics rounded, their spaces.
    text = _client(cfg).get_model_version(cfg.registry.model_name, v1).description
    assert "data source `digits`" in text and f"config `{cfg.hash()}`" in text and "torch `" in text
    assert "| fid_lenet | 40 | lenet |" in text and "| class_coverage | 1 | lenet |" in text  # the domain classifier
    latest = registry.latest_version(cfg)
    assert latest is not None and latest["version"] == "2" and latest["metrics"]["fid_lenet"] == 30.0


def test_a_retried_registration_of_the_same_run_returns_its_version(cfg: Config, model_dir: Path) -> None:
    v1 = _candidate(cfg, model_dir, GOOD)
    run_id = registry.latest_version(cfg)["run_id"]
    # The register task retries after a transient error; its first attempt may already have reached the store.
    again = registry.register_candidate(cfg, f"runs:/{run_id}/generator", run_id=run_id, metrics=GOOD)
    assert again["version"] == v1
    assert [v["version"] for v in registry.list_versions(cfg)] == [v1]


# ----------------------------------------------------------------------------- gate + promotion
def test_gate_tags_decision_and_gives_passing_versions_the_challenger_alias(
    cfg: Config, model_dir: Path
) -> None:
    good = _candidate(cfg, model_dir, GOOD)
    decision = registry.gate(cfg, good)
    assert decision["passed"] and decision["champion"] is None
    tags = _tags(cfg, good)
    assert tags["gate.decision"] == "passed"
    assert any(line.startswith("fid_lenet = 40 <= max 50") for line in tags["gate.reasons"].splitlines())
    assert _aliases(cfg) == {cfg.registry.challenger_alias: good}  # the gate moves no champion

    bad = _candidate(cfg, model_dir, {**GOOD, "class_coverage": 0.5})
    nan = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": math.nan})
    for version, failing in ((bad, "class_coverage = 0.5 < min 0.8"), (nan, "fid_lenet = nan")):
        decision = registry.gate(cfg, version)
        assert not decision["passed"]
        assert any(failing in r and r.endswith("fail") for r in decision["reasons"])
        assert _tags(cfg, version)["gate.decision"] == "failed"
    # Failing versions never take an alias.
    assert _aliases(cfg) == {cfg.registry.challenger_alias: good}


def test_promote_needs_to_beat_the_champion_and_rollback_restores_it(cfg: Config, model_dir: Path) -> None:
    v1 = _candidate(cfg, model_dir, GOOD)  # fid 40
    first = registry.promote(cfg, v1)
    assert first["promoted"] and first["previous_champion"] is None and _champion(cfg) == v1

    v2 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 36.0})  # 10% better than 40: ≥ 5%
    second = registry.promote(cfg, v2)
    assert second == {**second, "promoted": True, "decision": "promoted", "champion": v2, "previous_champion": v1}
    assert _tags(cfg, v2)["promotion.previous_champion"] == v1

    v3 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 35.0})  # 2.8% better than 36: short of 5%
    third = registry.promote(cfg, v3)
    assert not third["promoted"] and third["decision"] == "rejected" and _champion(cfg) == v2
    assert "is 2.78% better than champion" in _tags(cfg, v3)["gate.reasons"]
    assert "short of the 5% gate.min_improvement: fail" in _tags(cfg, v3)["gate.reasons"]

    v4 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": math.nan})
    assert not registry.promote(cfg, v4)["promoted"] and _champion(cfg) == v2

    assert registry.rollback(cfg) == {"champion": v1, "replaced": v2}
    assert _champion(cfg) == v1
    assert _tags(cfg, v2)["rollback.replaced_by"] == v1
    with pytest.raises(UserError, match="nothing to roll back"):
        registry.rollback(cfg)
    assert _champion(cfg) == v1


def test_across_contexts_the_gate_uses_a_cached_re_measurement_or_else_only_the_thresholds(
    cfg: Config, model_dir: Path
) -> None:
    from gan_core.evaluation.context import champion_cache_path, context_hash, write_measurement

    old = {**CONTEXT, "data_version": "old.dir"}
    v1 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 20.0}, context=old)
    assert registry.promote(cfg, v1)["promoted"]
    tags = _tags(cfg, v1)
    assert tags["eval.context_hash"] == context_hash(old) and json.loads(tags["eval.context"]) == old
    assert f"Evaluation: context {context_hash(old)[:8]} (data old.dir" in _client(cfg).get_model_version(
        cfg.registry.model_name, v1).description

    # v2 was measured on other data, which is not the prepared data here: v1 cannot be re-measured in its context.
    # Its recorded 20 would beat v2's 40; across contexts it is not compared, and the thresholds alone decide.
    v2 = _candidate(cfg, model_dir, GOOD, context=CONTEXT)
    result = registry.promote(cfg, v2)
    champion_check = result["checks"][-1]
    assert result["promoted"] and champion_check["passed"] and champion_check["skipped"]
    assert champion_check["reason"].startswith(f"champion comparison skipped: champion v{v1}'s fid_lenet (20) was "
                                               f"measured in context {context_hash(old)[:8]}")
    assert "the prepared data" in champion_check["reason"] and "the thresholds alone decide: pass" in champion_check[
        "reason"]
    assert result["champion_metrics"] == {}

    # A measurement of v2 in v3's context, cached (as a gate or monitor evaluation leaves it), is what v3 faces.
    new = {**CONTEXT, "num_samples": 300}
    run_id = _client(cfg).get_model_version(cfg.registry.model_name, v2).run_id
    cache = champion_cache_path(cfg.eval.cache_dir, cfg.registry.model_name, v2, run_id, context_hash(new))
    write_measurement(cache, new, {**GOOD, "fid_lenet": 30.0}, source="test")
    v3 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 35.0}, context=new)  # beats the stale 40, not the 30
    rejected = registry.promote(cfg, v3)
    assert not rejected["promoted"] and _champion(cfg) == v2
    reason = rejected["reasons"][-1]
    assert reason.startswith(f"fid_lenet 35 is 16.7% worse than champion v{v2}'s 30 (re-measured in the candidate's "
                             f"context {context_hash(new)[:8]}; recorded 40 in context {context_hash(CONTEXT)[:8]}")
    assert reason.endswith(": fail") and rejected["champion_metrics"]["fid_lenet"] == 30.0
    assert rejected["champion_comparison"]["remeasured"]


def test_force_needs_a_reason_is_recorded_and_never_promotes_a_failed_run(
    cfg: Config, model_dir: Path
) -> None:
    bad = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 80.0})
    with pytest.raises(UserError, match="--reason"):
        registry.promote(cfg, bad, force=True)
    assert not registry.promote(cfg, bad)["promoted"]
    forced = registry.promote(cfg, bad, force=True, reason="pinning a known-good baseline")
    assert forced["promoted"] and forced["decision"] == "forced" and _champion(cfg) == bad
    tags = _tags(cfg, bad)
    assert tags["promotion.decision"] == "forced" and tags["promotion.force_reason"] == "pinning a known-good baseline"
    assert tags["gate.decision"] == "failed"  # the gate's verdict stays on record

    crashed = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 10.0}, status="FAILED")
    decision = registry.gate(cfg, crashed)
    assert not decision["passed"] and any("status FAILED: fail" in r for r in decision["reasons"])
    assert not registry.promote(cfg, crashed)["promoted"]
    with pytest.raises(UserError, match="failed"):
        registry.promote(cfg, crashed, force=True, reason="no")
    assert _champion(cfg) == bad


def test_descriptions_say_what_the_model_is_and_carry_each_versions_gate_decision(
    cfg: Config, model_dir: Path
) -> None:
    client = _client(cfg)
    name = cfg.registry.model_name
    v1 = _candidate(cfg, model_dir, GOOD)
    model = client.get_registered_model(name).description
    assert f"load_generator('models:/{name}@champion'" in model and f"models serve -m models:/{name}@champion" in model
    registered = client.get_model_version(name, v1).description
    # A plain first line: the versions table shows a description as raw text.
    assert registered.startswith("Registered; the gate has not been applied yet; fid_lenet 40.\n")
    assert "**Gate: not applied yet**" in registered and "| fid_lenet | 40 | lenet |" in registered
    assert f"data version `{data_version(cfg.data.prepared_dir)}`" in registered

    assert registry.promote(cfg, v1)["promoted"]
    text = client.get_model_version(name, v1).description
    assert text.startswith("Promoted to champion; fid_lenet 40.\n")
    assert "**Gate: passed**" in text and "- fid_lenet = 40 <= max 50: pass" in text
    assert "**Promotion: promoted**" in text

    v2 = _candidate(cfg, model_dir, {**GOOD, "class_coverage": 0.5, "fid_lenet": 41.23456789})
    assert not registry.gate(cfg, v2)["passed"]
    text = client.get_model_version(name, v2).description
    assert text.startswith("Rejected by the gate (class_coverage = 0.5 < min 0.8); fid_lenet 41.23.\n")
    assert "- class_coverage = 0.5 < min 0.8: fail" in text and "| fid_lenet | 41.23 | lenet |" in text
    assert "Promotion" not in text and "41.2345" not in text  # rounded
    # The training run's description gets the outcome, after what was trained.
    run = client.get_run(client.get_model_version(name, v2).run_id)
    assert f"**Outcome: rejected by the gate** as version {v2} of `{name}`." in run.data.tags["mlflow.note.content"]
    # The registered model's description is written once: an edit made in the UI survives later registrations.
    client.update_registered_model(name, description="edited by a person")
    _candidate(cfg, model_dir, GOOD)
    assert client.get_registered_model(name).description == "edited by a person"


def test_the_champions_metrics_are_charted_on_one_run_step_by_version(cfg: Config, model_dir: Path) -> None:
    client = _client(cfg)
    fids = (40.0, 36.0, 45.0, 30.0)  # v3 is rejected (worse than v2): not a champion, not on the chart
    versions = [_candidate(cfg, model_dir, {**GOOD, "fid_lenet": fid}) for fid in fids]
    promoted = [v for v in versions if registry.promote(cfg, v)["promoted"]]
    assert promoted == [versions[0], versions[1], versions[3]]
    run_id = client.get_registered_model(cfg.registry.model_name).tags[registry.CHAMPIONS_RUN_TAG]
    run = client.get_run(run_id)
    assert run.info.run_name == f"{cfg.registry.model_name} champions"
    versions_exp = client.get_experiment_by_name(f"{cfg.registry.experiment_name}{registry.VERSIONS_EXPERIMENT_SUFFIX}")
    assert run.info.experiment_id == versions_exp.experiment_id  # not among the training runs
    assert versions_exp.tags["mlflow.experimentKind"] == "custom_model_development"
    history = client.get_metric_history(run_id, "fid_lenet")
    assert [(m.step, m.value) for m in history] == [(1, 40.0), (2, 36.0), (4, 30.0)]
    assert {m.step for m in client.get_metric_history(run_id, "class_coverage")} == {1, 2, 4}


def test_bad_versions_and_unknown_models_are_one_line_user_errors(cfg: Config, model_dir: Path) -> None:
    with pytest.raises(UserError, match="no registered model 'ganops-generator'"):
        registry.promote(cfg, "1")
    with pytest.raises(UserError, match="no registered model"):
        registry.rollback(cfg)
    assert registry.latest_version(cfg) is None
    v1 = _candidate(cfg, model_dir, GOOD)
    with pytest.raises(UserError, match="has no version 7"):
        registry.promote(cfg, "7")
    with pytest.raises(UserError, match="'v1' is not a version number"):
        registry.promote(cfg, "v1")
    with pytest.raises(UserError, match="has no @champion"):
        registry.rollback(cfg)
    assert registry.promote(cfg, v1)["promoted"]


# ----------------------------------------------------------------------------- CLI
def test_cli_models_promote_rollback(
    cfg: Config, mlflow_store, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The store in the params file: models/promote/rollback take no key=value overrides.
    cli_params = tmp_path / "cli_params.yaml"
    cli_params.write_text(GATE_YAML + f"registry:\n  tracking_uri: {mlflow_store.uri}\n"
                          f"  artifact_location: {mlflow_store.artifacts}\n")
    params = ["--params", str(cli_params)]
    assert run_app(app, ["models", *params]) == 2
    assert "no registered model 'ganops-generator'" in capsys.readouterr().err

    v1 = _candidate(cfg, model_dir, GOOD)
    v2 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 30.0})
    v3 = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 99.0})
    assert run_app(app, ["promote", v1, *params]) == 0
    assert f"promoted: v{v1} is now @champion" in capsys.readouterr().out
    assert run_app(app, ["promote", v2, *params]) == 0
    assert run_app(app, ["promote", v3, *params]) == 3  # rejected: the command ran, no alias moved (exit status 3)
    out = capsys.readouterr().out
    assert f"rejected: v{v3} stays off @champion" in out and "fid_lenet = 99 > max 50: fail" in out
    assert run_app(app, ["promote", v3, "--force", *params]) == 2
    err = capsys.readouterr().err
    assert "--force needs --reason" in err and len(err.strip().splitlines()) == 1
    assert run_app(app, ["promote", "42", *params]) == 2
    assert "has no version 42" in capsys.readouterr().err

    assert run_app(app, ["models", *params]) == 0
    table = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") > 3}
    assert "@champion" in rows[v2] and "@challenger" in rows[v2] and "passed" in rows[v2] and "30" in rows[v2]
    assert "failed" in rows[v3] and "rejected" in rows[v3] and "@" not in rows[v3]

    assert run_app(app, ["rollback", *params]) == 0
    assert f"@champion is v{v1} again (was v{v2})" in capsys.readouterr().out
    assert _champion(cfg) == v1


def test_ui_command_serves_the_configured_store_on_loopback(cfg: Config, mlflow_store) -> None:
    from flows.cli import ui_workers

    argv = ui_command_line(cfg, port=5123)
    assert argv[1:4] == ["-m", "mlflow", "ui"]
    assert argv[argv.index("--backend-store-uri") + 1] == mlflow_store.uri
    assert argv[argv.index("--default-artifact-root") + 1] == mlflow_store.artifacts.as_uri()
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "5123"
    # One web worker per two cores (MLflow's default is 4, whatever the machine): 1 on a 2-core machine.
    assert argv[argv.index("--workers") + 1] == str(ui_workers())
    assert [ui_workers(n) for n in (1, 2, 3, 8, 64)] == [1, 1, 1, 4, 4]
    assert ui_command_line(cfg, port=5123, workers=2)[-1] == "2"
    with pytest.raises(UserError, match="--workers 0"):
        ui_command_line(cfg, workers=0)


@pytest.mark.slow
def test_ganops_ui_is_the_server_process_so_killing_its_pid_stops_it(
    cfg: Config, mlflow_store, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from processes import free_port, stop_process_group, wait_until_ready

    params = tmp_path / "ui_params.yaml"
    params.write_text(f"registry:\n  tracking_uri: {mlflow_store.uri}\n  artifact_location: {mlflow_store.artifacts}\n")
    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "ganops"), "ui", "--params", str(params), "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(proc, f"http://127.0.0.1:{port}/health", 120, log)
        os.kill(proc.pid, signal.SIGTERM)  # what `kill <pid>` sends; the PID is the one the user started
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)  # anything left of what it started: the web server, its workers
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("`ganops ui`'s web server outlived its PID")
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        stop_process_group(proc)
        try:  # what a failing run left behind (the group outlives its leader then)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ----------------------------------------------------------------------------- concurrency
def _promote_worker(params: str, overrides: list[str], barrier, jobs, results) -> None:  # noqa: ANN001
    """A separate process: for each job, wait for the other promoter, then promote at the same moment."""
    cfg = load_config(params, overrides)
    registry.promote(cfg, "1")  # warm up imports and the store connection before the first round
    while (version := jobs.get()) is not None:
        barrier.wait(timeout=60)
        results.put(registry.promote(cfg, version)["promoted"])


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_concurrent_promotions_end_with_the_better_model_as_champion(
    cfg: Config, mlflow_store, model_dir: Path, tmp_path: Path
) -> None:
    overrides = [*mlflow_store.overrides, f"data.prepared_dir={cfg.data.prepared_dir}", "data.source=digits"]
    base = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": 49.0})
    assert registry.promote(cfg, base)["promoted"]
    ctx = mp.get_context("spawn")  # fresh interpreters: no inherited MLflow/SQLite state
    barrier, results = ctx.Barrier(2), ctx.Queue()
    queues = [ctx.Queue(), ctx.Queue()]
    workers = [
        ctx.Process(target=_promote_worker, args=(str(tmp_path / "params.yaml"), overrides, barrier, q, results))
        for q in queues
    ]
    for w in workers:
        w.start()
    try:
        champion, fid, expected_history, tags = base, 49.0, [], training_tags(cfg)
        for round_ in range(6):
            # Both beat the champion by > 5%; `better` beats `worse` by > 5% too.
            better = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": fid * 0.80}, tags=tags)
            worse = _candidate(cfg, model_dir, {**GOOD, "fid_lenet": fid * 0.90}, tags=tags)
            pair = (better, worse) if round_ % 2 == 0 else (worse, better)
            for q, version in zip(queues, pair, strict=True):
                q.put(version)
            outcomes = sorted(results.get(timeout=120) for _ in range(2))
            history = json.loads(
                _client(cfg).get_registered_model(cfg.registry.model_name).tags[registry.HISTORY_TAG]
            )
            assert _champion(cfg) == better, f"round {round_}: the worse version {worse} ended as champion"
            # Either `better` went first (worse rejected) or `worse` went first and was then replaced.
            if outcomes == [False, True]:
                expected_history.append(champion)
            else:
                assert outcomes == [True, True]
                expected_history += [champion, worse]
            assert history == expected_history, f"round {round_}: champion history {history}"
            champion, fid = better, fid * 0.80
    finally:
        for q in queues:
            q.put(None)
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()
    assert all(w.exitcode == 0 for w in workers)
