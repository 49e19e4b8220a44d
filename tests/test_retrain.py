"""The retrain flow end to end on a tiny config: real Prefect (one session harness), real MLflow SQLite store,
real training/evaluation on scikit-learn's digits at 16 px.

Every flow test is marked slow: the first run (harness start, migrations, training) takes tens of seconds on
2 cores. One module-scoped store is shared in file order: the first run promotes version 1, the next checks the skip
path against it, then failures must leave @champion on version 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, retrain_workspace) -> Iterator[Any]:
    ws = retrain_workspace(tmp_path_factory.mktemp("retrain"))
    with ws.entered():
        yield ws


@pytest.fixture(scope="module")
def first_run(prefect_harness: None, workspace: Any) -> dict[str, Any]:
    """The first retrain in the store, with its flow run id: everything after builds on it."""
    from flows.retrain import retrain

    state = retrain(params=str(workspace.params), return_state=True)
    return {"result": state.result(), "flow_run_id": state.state_details.flow_run_id, "state": state}


def _artifact(flow_run_id: Any, key: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[key])
            )
        )
    assert len(found) == 1, f"expected one {key!r} artifact on flow run {flow_run_id}, got {len(found)}"
    return found[0]


@pytest.mark.slow
def test_first_run_registers_and_promotes_champion_with_lineage(workspace: Any, first_run: dict) -> None:
    from gan_core.data.version import data_version
    from gan_core.packaging.generator import load_generator, sample_images
    from gan_core.tracking.runs import training_key
    from gan_core.training.identity import code_hash, evaluation_key
    from gan_core.training.lineage import git_info

    result = first_run["result"]
    cfg = workspace.config()
    assert result["status"] == "promoted"
    assert result["version"] == "1"
    client = workspace.client()
    name = cfg.registry.model_name
    champion = client.get_model_version_by_alias(name, cfg.registry.champion_alias)
    assert str(champion.version) == "1"
    # Lineage: the version names the data and the commit; its run, the config and training key that produced it.
    tags = champion.tags
    assert len(tags) <= 12, sorted(tags)  # the versions table shows every tag in every row
    assert tags["data_version"] == data_version(cfg.data.prepared_dir) == result["data_version"]
    assert tags["git_commit"] == git_info()["git_commit"]
    assert tags["gate.decision"] == "passed" and tags["promotion.decision"] == "promoted"
    run = client.get_run(result["run_id"])
    run_tags = run.data.tags
    assert run_tags["data_source"] == "digits" and run_tags["config_hash"] == cfg.hash()
    assert run_tags["training_hash"] == training_key(cfg, tags["data_version"])["training_hash"]
    assert run_tags["eval_hash"] == evaluation_key(cfg.model_dump(mode="json"))
    assert run_tags["code_hash"] == code_hash() and len(run_tags["code_hash"]) == 16
    assert f"config `{cfg.hash()}`" in champion.description and "data source `digits`" in champion.description
    # The MLflow run holds the evaluation the gate read.
    assert run.info.status == "FINISHED"
    assert run.data.metrics["fid_lenet"] == pytest.approx(result["metrics"]["fid_lenet"])
    assert json.loads(tags["metrics"])["fid_lenet"] == result["metrics"]["fid_lenet"]
    # The champion is usable downstream by alias.
    generator = load_generator(f"models:/{name}@champion")
    images = sample_images(generator, 4, seed=0)
    assert images.shape == (4, 1, 16, 16) and images.dtype == torch.uint8


@pytest.mark.slow
def test_report_artifacts_summarise_the_run(workspace: Any, first_run: dict) -> None:
    result = first_run["result"]
    summary = _artifact(first_run["flow_run_id"], "retrain-summary")
    text = summary.data
    assert "promoted" in text and f"version {result['version']}" in text
    assert result["data_version"] in text
    # A SQLite store has no UI of its own: the run by name, id and store, not a link to a guessed address.
    assert f"- MLflow run: {result['run_name']} (run {result['run_id']} in sqlite:///" in text
    assert result["run_name"].startswith("mlp-nonsaturating-") and "http://127.0.0.1:5000" not in text
    assert "fid_lenet (primary)" in text and "≤ 1e+09" in text
    assert "data:image/png;base64," in text  # the evaluation's sample grid, inlined
    table = _artifact(first_run["flow_run_id"], "model-versions")
    assert '"version": "1"' in table.data and "champion" in table.data


@pytest.mark.slow
def test_the_flow_run_is_named_after_what_ran_and_the_mlflow_run_links_back_to_it(
    workspace: Any, first_run: dict
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_UI_URL

    cfg = workspace.config()
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(first_run["flow_run_id"])
    assert flow_run.name == f"retrain-mlp-nonsaturating-{cfg.train.steps}steps"
    run = workspace.client().get_run(first_run["result"]["run_id"])
    tags = run.data.tags
    assert tags["prefect.flow_run_id"] == str(first_run["flow_run_id"])
    assert tags["prefect.flow_run_name"] == flow_run.name
    # The harness's API has a UI address (derived from PREFECT_API_URL); a URL is tagged only when one is known.
    assert PREFECT_UI_URL.value()
    # The page Prefect itself prints and links to (url_for), not prefect.runtime's /flow-runs/flow-run/ form.
    url = f"{PREFECT_UI_URL.value()}/runs/flow-run/{first_run['flow_run_id']}"
    assert tags["prefect.flow_run_url"] == url
    assert run.info.run_name.startswith(f"mlp-nonsaturating-{cfg.train.steps}steps-")
    # The run's description (markdown in the MLflow UI): what was trained, the outcome, a link to the flow run.
    note = tags["mlflow.note.content"].split("\n\n")
    assert note[0].startswith(f"Generator `mlp` (nonsaturating loss, {cfg.train.steps} steps, batch 16) trained on "
                              f"digits at 16 px, data version {first_run['result']['data_version'][:8]}.")
    assert note[1] == f"**Outcome: promoted to `@champion`** as version 1 of `{cfg.registry.model_name}`."
    assert note[2] == f"Prefect flow run: [{flow_run.name}]({url})"


@pytest.mark.slow
def test_the_flow_run_ends_in_a_state_named_after_its_outcome_and_logs_the_training(
    workspace: Any, first_run: dict
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    state = first_run["state"]
    assert state.is_completed() and state.name == "Completed"
    assert state.message == f"promoted: version 1 of {workspace.config().registry.model_name}"
    # Prefect ships log records in batches from a background worker: wait for those still queued in this process
    # (an earlier flow run in the session can leave it behind when the run ends).
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[first_run["flow_run_id"]])))
    # gan_core's progress lines reach the flow-run log (Prefect's UI), not only the terminal.
    progress = [log.message for log in logs if log.name == "gan_core.training.loop"]
    steps = workspace.config().train.steps
    assert any(m.startswith(f"step {steps}/{steps} (100%)") for m in progress), progress


def test_flow_run_names_read_the_runs_own_parameters_and_fall_back_on_a_bad_config(
    prefect_harness: None, workspace: Any
) -> None:
    from prefect import flow

    from flows.monitor import monitor_run_name
    from flows.retrain import retrain_run_name

    def named(name_fn: Any) -> Any:
        # A flow with the retrain/monitor signature, named by the same callable: returns the name it ran under.
        @flow(flow_run_name=name_fn, validate_parameters=False)
        def probe(params: str, overrides: list[str] | None = None) -> str:
            from prefect.runtime import flow_run

            return flow_run.name

        return probe

    params = str(workspace.params)
    assert named(monitor_run_name)(params, ["registry.model_name=other-gen"]) == "monitor-other-gen"
    assert named(retrain_run_name)(params, ["model.conditional=true", "train.steps=7"]) == (
        "retrain-mlp-cond-nonsaturating-7steps")
    assert named(retrain_run_name)(params, ["train.steps=-3"]) == "retrain"  # the flow's config step says why


@pytest.mark.slow
def test_unchanged_inputs_skip_training(workspace: Any, first_run: dict) -> None:
    from flows.retrain import retrain

    client = workspace.client()
    cfg = workspace.config()
    runs_before = client.search_runs([client.get_experiment_by_name(cfg.registry.experiment_name).experiment_id])
    package = Path(cfg.train.out_dir) / "generator" / "weights.safetensors"
    mtime = package.stat().st_mtime_ns

    state = retrain(params=str(workspace.params), return_state=True)
    result = state.result()

    assert state.is_completed() and state.name == "Skipped"  # the runs list tells a skip from a promotion
    assert result["status"] == "skipped"
    assert result["version"] == first_run["result"]["version"]
    assert "unchanged since version 1" in result["reason"]
    versions = client.search_model_versions(f"name = '{cfg.registry.model_name}'")
    assert [str(v.version) for v in versions] == ["1"]
    runs_after = client.search_runs([client.get_experiment_by_name(cfg.registry.experiment_name).experiment_id])
    assert len(runs_after) == len(runs_before)
    assert package.stat().st_mtime_ns == mtime  # nothing was retrained

    # Logging, sampling and checkpoint cadence are not part of the training identity: still nothing to train.
    cadence = ["train.log_every=5", "train.sample_every=7", "train.checkpoint_every=9"]
    assert retrain(params=str(workspace.params), overrides=cadence)["status"] == "skipped"

    # A commit that changes no code (docs, dvc.lock) is not a reason to train again either.
    import subprocess

    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q", "--allow-empty",
                    "-m", "docs"], cwd=workspace.root, check=True)
    assert retrain(params=str(workspace.params))["status"] == "skipped"


@pytest.mark.slow
def test_the_conditional_recipe_is_its_own_registered_model_gated_on_class_accuracy(
    workspace: Any, first_run: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    client = workspace.client()
    generator = workspace.config().registry.model_name
    # The recipe's gate adds class_accuracy ≥ 0.95 to the workspace's loose thresholds; 20 tiny MLP steps miss it.
    # `ganops retrain` says so and exits 3: the flow ran to its end, the gate rejected the candidate, nothing moved.
    overrides = ["recipe=conditional", "model.arch=mlp"]
    with pytest.raises(SystemExit) as exit_:
        main(["retrain", "--params", str(workspace.params), *overrides])
    assert exit_.value.code == 3
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "status: rejected (version 1)" and out[1].startswith("gate: failed (1 of ")
    assert out[2].startswith("  class_accuracy = ") and out[2].endswith(" < min 0.95: fail")
    # Its runs have an experiment of their own, named after the model.
    (version,) = client.search_model_versions("name = 'ganops-conditional'")
    assert client.get_run(version.run_id).info.experiment_id == client.get_experiment_by_name(
        "ganops-conditional").experiment_id
    assert [str(v.version) for v in client.search_model_versions("name = 'ganops-conditional'")] == ["1"]
    # The unconditional champion was never compared with it, nor moved.
    assert str(client.get_model_version_by_alias(generator, "champion").version) == "1"

    # `ganops demo` on the same settings trains nothing (skipped) and still has no champion to show: it says why
    # and what to do, and exits 3 as well.
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--params", str(workspace.params), *overrides])
    assert exit_.value.code == 3
    out = capsys.readouterr().out
    assert "status: skipped (version 1)" in out and "\nchampion: models:/" not in out
    assert ("models:/ganops-conditional@champion: no version of 'ganops-conditional' is @champion: the only version, "
            "v1, was rejected by the gate (class_accuracy = ") in out
    assert ("--model models:/ganops-conditional/1, or make it @champion with `ganops promote 1 --force --reason "
            '"why" --recipe conditional`') in out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "step", "cause"),
    [
        # A data source that is not there: fails before anything is trained or registered.
        (["data.source=folder:/nonexistent/ganops-images"], "version_data", "/nonexistent/ganops-images"),
        # An impossible bar for the domain classifier: training runs, evaluation refuses to trust its metrics.
        (["eval.classifier.min_accuracy=1.0"], "evaluate", "min_accuracy"),
    ],
    ids=["missing-data", "untrusted-classifier"],
)
def test_failing_step_is_named_and_moves_no_alias(
    workspace: Any, first_run: dict, overrides: list[str], step: str, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from flows.failures import RetrainFailed
    from flows.retrain import retrain

    caplog.set_level(logging.INFO)

    client = workspace.client()
    cfg = workspace.config(overrides)
    name = cfg.registry.model_name
    versions_before = {str(v.version) for v in client.search_model_versions(f"name = '{name}'")}

    state = retrain(params=str(workspace.params), overrides=overrides, return_state=True)

    assert state.is_failed()
    with pytest.raises(RetrainFailed) as failure:
        state.result()

    assert failure.value.step == step
    assert str(failure.value).startswith(f"step {step!r} failed:") and cause in str(failure.value)
    # Both causes are user errors: Prefect's log says which step failed, on one line, with no traceback.
    assert f"retrain step {step!r} failed" in caplog.text and "Traceback" not in caplog.text
    report = _artifact(state.state_details.flow_run_id, "retrain-summary").data
    assert f"failed at step `{step}`" in report and "no alias was moved" in report
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert {str(v.version) for v in client.search_model_versions(f"name = '{name}'")} == versions_before
    if step == "evaluate":
        # The MLflow run that trained the rejected attempt is marked failed, not left running.
        exp = client.get_experiment_by_name(cfg.registry.experiment_name).experiment_id
        latest = client.search_runs([exp], order_by=["attributes.start_time DESC"], max_results=1)[0]
        assert latest.info.status == "FAILED"


@pytest.mark.slow
def test_cli_retrain_and_demo_report_skip_and_name_a_failed_step_on_one_line(
    workspace: Any, first_run: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main, runnable

    with pytest.raises(SystemExit) as exit_:
        main(["retrain", "--params", str(workspace.params)])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "status: skipped (version 1)" in out and "unchanged since version 1" in out

    # `ganops demo` (what `make demo` runs) on unchanged inputs: skips, then says how to use the champion.
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--params", str(workspace.params)])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "status: skipped (version 1)" in out
    assert "champion: models:/ganops-generator@champion = version 1" in out
    ganops = runnable("ganops")  # `.venv/bin/ganops` after `make demo`, which does not activate the venv
    assert f"\n  {ganops} ui " in out
    assert f"\n  {ganops} generate --model models:/ganops-generator@champion -n 64" in out

    with pytest.raises(SystemExit) as exit_:
        main(["retrain", "--params", str(workspace.params), "train.steps=-3"])
    assert exit_.value.code == 2  # a user error
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "step 'config' failed" in errors[0] and "train.steps" in errors[0] and "no alias was moved" in errors[0]


def test_summary_of_a_rejected_candidate_shows_reasons_thresholds_and_champion() -> None:
    from flows.report import summary_markdown
    from gan_core.config import Config, GateConfig, Threshold

    # The policy spelled out here, not taken from the defaults: the table must show these exact bounds.
    gate = GateConfig(primary_metric="fid_lenet",
                      thresholds={"fid_lenet": Threshold(max=60.0), "class_coverage": Threshold(min=0.9)})
    cfg = Config(gate=gate)
    result = {
        "status": "rejected", "version": "4", "data_version": "abc.dir", "run_id": "r1", "experiment_id": "7",
        "metrics": {"fid_lenet": 75.5, "class_coverage": 1.0, "info": {"num_samples": 2000}},
        "gate": {
            "passed": False, "reasons": ["fid_lenet = 75.5 > max 60: fail", "no champion yet: pass"],
            "checks": [{"name": "fid_lenet", "passed": False, "reason": "fid_lenet = 75.5 > max 60: fail"},
                       {"name": "champion", "passed": True, "reason": "no champion yet: pass"}],
            "champion_metrics": {"fid_lenet": 40.0},
        },
    }
    text = summary_markdown(cfg, result)
    assert "version 4" in text and "rejected by the gate" in text
    assert "- ❌ fid_lenet = 75.5 > max 60: fail" in text and "- ✅ no champion yet: pass" in text
    assert "| fid_lenet (primary) | 75.5 | ≤ 60 | 40 | lower |" in text
    assert "| class_coverage | 1 | ≥ 0.9 | — | higher |" in text
    assert "- MLflow run: r1 (run r1 in " in text and "http://" not in text  # no UI known: no guessed link


@pytest.mark.slow
def test_data_step_runs_the_dvc_stage_and_pushes_to_the_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a DVC project (a temp copy: dvc.yaml + gan_core), the data step is `dvc repro prepare` + `dvc push`."""
    import shutil
    import subprocess
    import sys

    import yaml

    from flows.dvc_pipeline import dvc_stage_applies, has_default_remote
    from flows.tasks import push_data, version_data
    from gan_core.config import load_config

    repo_root = Path(__file__).resolve().parents[1]
    project = tmp_path / "project"
    shutil.copytree(repo_root / "gan_core", project / "gan_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo_root / "configs" / "recipes", project / "configs" / "recipes")  # the train stage's dependency
    shutil.copy(repo_root / "dvc.yaml", project / "dvc.yaml")
    (project / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "digits", "resolution": 8}}))
    monkeypatch.chdir(project)
    dvc = str(Path(sys.executable).parent / "dvc")
    for args in (["init", "--no-scm", "-q"], ["remote", "add", "-d", "local", str(tmp_path / "remote")]):
        subprocess.run([dvc, *args], check=True, capture_output=True)
    cfg = load_config("params.yaml")
    assert dvc_stage_applies(cfg, "params.yaml", {})
    assert not dvc_stage_applies(cfg, "params.yaml", {"data.max_images": 100})  # overrides: not the stage

    data = version_data.fn(cfg, use_dvc=True)

    # dvc.lock now records the prepared directory, and the data version is that record.
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    locked = next(o["md5"] for o in lock["stages"]["prepare"]["outs"] if o["path"] == "data/prepared")
    assert data["data_version"] == locked and data["data_version_source"] == "dvc.lock"
    assert data["count"] == 1797 and data["shape"] == [1, 8, 8]
    assert has_default_remote()
    assert push_data.fn()
    # The remote holds the directory manifest under its md5 (DVC 3 layout: files/md5/<2>/<rest>).
    manifest = tmp_path / "remote" / "files" / "md5" / locked[:2] / locked[2:]
    assert manifest.is_file()


@pytest.mark.slow
def test_a_run_of_the_whole_dvc_pipeline_leaves_dvc_status_clean(
    prefect_harness: None, retrain_workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the repo's params.yaml and no overrides, the flow is the DVC pipeline: prepare runs as `dvc repro`, the
    stages it runs itself are `dvc commit`ted, so afterwards dvc.lock records every stage and nothing is changed; and
    every output is pushed to the default remote, so `dvc pull` in another copy of the project gets them all."""
    import shutil
    import subprocess
    import sys

    import yaml

    from flows.retrain import retrain

    ws = retrain_workspace(tmp_path / "project")
    repo_root = Path(__file__).resolve().parents[1]
    shutil.copytree(repo_root / "gan_core", ws.root / "gan_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo_root / "configs" / "recipes", ws.root / "configs" / "recipes")  # the train stage's dependency
    shutil.copy(repo_root / "dvc.yaml", ws.root / "dvc.yaml")
    # The stages' paths as dvc.yaml names them; a complete params.yaml, as the repo's is (stages list eval.seed, ...).
    relocated = {"data.prepared_dir": "data/prepared", "train.out_dir": "outputs/train", "eval.out_dir": "outputs/eval",
                 "eval.cache_dir": "outputs/cache", "eval.classifier.out_dir": "outputs/classifier",
                 "eval.encoder.out_dir": "outputs/encoder"}
    ws.params.write_text(yaml.safe_dump(ws.config(relocated).model_dump(mode="json"), sort_keys=False))
    monkeypatch.chdir(ws.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "init", "-q"], check=True)
    subprocess.run([dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], check=True)

    result = retrain(params="params.yaml")

    assert result["status"] == "promoted"
    lock = yaml.safe_load((ws.root / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"prepare", "classifier", "encoder", "train", "evaluate"}
    generator_md5 = next(o["md5"] for o in lock["train"]["outs"] if o["path"] == "outputs/train/generator")
    assert generator_md5.endswith(".dir")
    status = subprocess.run([dvc, "status"], check=True, capture_output=True, text=True).stdout
    assert "up to date" in status, status

    # Another copy of the project (what a clone holds: code, dvc.yaml, dvc.lock, params, DVC's config) pulls every
    # output dvc.lock names: the data, the classifier, the generator.
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    for name in ("gan_core", "configs", ".dvc"):
        shutil.copytree(ws.root / name, other / name, ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp"))
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        shutil.copy(ws.root / name, other / name)
    pulled = subprocess.run([dvc, "pull"], cwd=other, capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    for path in ("data/prepared/meta.json", "outputs/classifier/model", "outputs/train/generator/weights.safetensors"):
        assert (other / path).exists(), path


@pytest.mark.slow
def test_a_retrain_hashes_its_data_once_and_opens_its_store_once(
    prefect_harness: None, retrain_workspace: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided once, handed forward: the version_data step hashes the prepared data and the run's registry handle
    opens the store; the classifier, the trainer, the lineage tags, the evaluation, the registration and the gate
    (which re-measures the champion in the second run's evaluation context) are handed both."""
    import flows.registry.handle
    import gan_core.data.version
    import gan_core.tracking.store
    from flows.retrain import retrain

    ws = retrain_workspace(tmp_path / "ws")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
    monkeypatch.chdir(ws.root)
    hashed: list[str] = []
    opened: list[str] = []
    md5, open_uri = gan_core.data.version.dvc_dir_md5, gan_core.tracking.store.open_uri

    def counted_md5(directory: Any) -> str:
        hashed.append(str(directory))
        return md5(directory)

    def counted_open(uri: str, create: bool = False) -> Any:
        opened.append(uri)
        return open_uri(uri, create)

    monkeypatch.setattr(gan_core.data.version, "dvc_dir_md5", counted_md5)
    for module in (gan_core.tracking.store, flows.registry.handle):
        monkeypatch.setattr(module, "open_uri", counted_open)

    first = retrain(params=str(ws.params))
    assert first["status"] == "promoted"
    assert (len(hashed), len(opened)) == (1, 1), (hashed, opened)

    hashed.clear()
    opened.clear()
    # Another sample count: a new candidate (its checkpoint resumes, no step trains) in another context, so the gate
    # re-evaluates the champion in it: that evaluation is handed the data version too.
    second = retrain(params=str(ws.params), overrides=["eval.num_samples=150"])
    assert second["gate"]["champion_comparison"]["remeasured"]
    assert (len(hashed), len(opened)) == (1, 1), (hashed, opened)
