"""The retrain flow end to end on a tiny config: real Prefect (one session harness), real MLflow SQLite store,
real training/evaluation on scikit-learn's digits at 16 px.

One module-scoped store is shared in file order: the first run promotes version 1, the next checks the skip
path against it, then failures must leave @champion on version 1.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")


def tiny_params(root: Path, db_uri: str) -> dict[str, Any]:
    """A params.yaml tree for a seconds-long retrain under `root`: digits 16 px, MLP, 20 steps, 200 samples."""
    return {
        "data": {"source": "digits", "resolution": 16, "max_images": 400,
                 "prepared_dir": str(root / "data" / "prepared"), "raw_dir": str(root / "data" / "raw")},
        "model": {"arch": "mlp", "latent_dim": 16, "g_width": 32, "d_width": 32},
        "train": {"steps": 20, "batch_size": 16, "log_every": 10, "sample_every": 20, "checkpoint_every": 20,
                  "device": "cpu", "out_dir": str(root / "train")},
        "eval": {"num_samples": 200, "batch_size": 100, "kid_subset_size": 50, "device": "cpu",
                 "cache_dir": str(root / "cache"), "out_dir": str(root / "eval"),
                 # One epoch on 360 digits reaches ~0.5-0.9; the production 0.97 bar needs the full recipe.
                 "classifier": {"epochs": 1, "min_accuracy": 0.3, "resolution": 16,
                                "out_dir": str(root / "classifier")}},
        # 20 MLP steps draw blobs: thresholds loose enough that the first candidate becomes champion.
        "gate": {"thresholds": {"fid_lenet": {"max": 1.0e9}, "class_coverage": {"min": 0.0}}},
        "registry": {"tracking_uri": db_uri, "artifact_location": str(root / "mlruns" / "artifacts")},
    }


@dataclass
class Workspace:
    root: Path
    params: Path
    db_uri: str

    def config(self, overrides: list[str] | None = None):
        from gan_core.config import load_config

        return load_config(self.params, overrides or [])


def make_workspace(root: Path, template_db: Path) -> Workspace:
    """A tmp dir with a params file and a copy of the session's migrated MLflow store."""
    db = root / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True)
    shutil.copyfile(template_db, db)
    uri = f"sqlite:///{db}"
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(root, uri), sort_keys=False))
    return Workspace(root, params, uri)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, _mlflow_template_db: Path) -> Iterator[Workspace]:
    ws = make_workspace(tmp_path_factory.mktemp("retrain"), _mlflow_template_db)
    with pytest.MonkeyPatch.context() as mp:
        # tracking.tracking_uri prefers the env var: point it at this store too, whatever the caller exported.
        mp.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
        yield ws


@pytest.fixture(scope="module")
def first_run(workspace: Workspace) -> dict[str, Any]:
    """The first retrain in the store, with its flow run id: everything after builds on it."""
    from flows.retrain import retrain

    state = retrain(params=str(workspace.params), return_state=True)
    return {"result": state.result(), "flow_run_id": state.state_details.flow_run_id}


def _client(ws: Workspace):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=ws.db_uri, registry_uri=ws.db_uri)


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


def test_first_run_registers_and_promotes_champion_with_lineage(workspace: Workspace, first_run: dict) -> None:
    from gan_core.lineage import data_version, git_info
    from gan_core.package import load_generator, sample_images

    result = first_run["result"]
    cfg = workspace.config()
    assert result["status"] == "promoted"
    assert result["version"] == "1"
    client = _client(workspace)
    name = cfg.registry.model_name
    champion = client.get_model_version_by_alias(name, cfg.registry.champion_alias)
    assert str(champion.version) == "1"
    # Lineage: the version names the data, the code and the config that produced it.
    tags = champion.tags
    assert tags["data_version"] == data_version(cfg.data.prepared_dir) == result["data_version"]
    assert tags["data_source"] == "digits"
    assert tags["git_commit"] == git_info()["git_commit"]
    assert tags["config_hash"] == cfg.hash()
    assert tags["training_hash"] == cfg.hash("data", "model", "train", "eval")
    assert tags["gate.decision"] == "passed"
    # The MLflow run holds the evaluation the gate read.
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["fid_lenet"] == pytest.approx(result["metrics"]["fid_lenet"])
    assert float(tags["metric.fid_lenet"]) == pytest.approx(result["metrics"]["fid_lenet"])
    # The champion is usable downstream by alias.
    generator = load_generator(f"models:/{name}@champion")
    images = sample_images(generator, 4, seed=0)
    assert images.shape == (4, 1, 16, 16) and images.dtype == torch.uint8


def test_report_artifacts_summarise_the_run(workspace: Workspace, first_run: dict) -> None:
    result = first_run["result"]
    summary = _artifact(first_run["flow_run_id"], "retrain-summary")
    text = summary.data
    assert "promoted" in text and f"version {result['version']}" in text
    assert result["data_version"] in text
    assert f"/#/experiments/{result['experiment_id']}/runs/{result['run_id']}" in text
    assert "fid_lenet (primary)" in text and "≤ 1e+09" in text
    assert "data:image/png;base64," in text  # the evaluation's sample grid, inlined
    table = _artifact(first_run["flow_run_id"], "model-versions")
    assert '"version": "1"' in table.data and "champion" in table.data


def test_unchanged_inputs_skip_training(workspace: Workspace, first_run: dict) -> None:
    from flows.retrain import retrain

    client = _client(workspace)
    cfg = workspace.config()
    runs_before = client.search_runs([client.get_experiment_by_name(cfg.registry.experiment).experiment_id])
    package = Path(cfg.train.out_dir) / "generator" / "weights.safetensors"
    mtime = package.stat().st_mtime_ns

    result = retrain(params=str(workspace.params))

    assert result["status"] == "skipped"
    assert result["version"] == first_run["result"]["version"]
    assert "unchanged since version 1" in result["reason"]
    versions = client.search_model_versions(f"name = '{cfg.registry.model_name}'")
    assert [str(v.version) for v in versions] == ["1"]
    runs_after = client.search_runs([client.get_experiment_by_name(cfg.registry.experiment).experiment_id])
    assert len(runs_after) == len(runs_before)
    assert package.stat().st_mtime_ns == mtime  # nothing was retrained


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
    workspace: Workspace, first_run: dict, overrides: list[str], step: str, cause: str
) -> None:
    from flows.retrain import RetrainFailed, retrain

    client = _client(workspace)
    cfg = workspace.config(overrides)
    name = cfg.registry.model_name
    versions_before = {str(v.version) for v in client.search_model_versions(f"name = '{name}'")}

    state = retrain(params=str(workspace.params), overrides=overrides, return_state=True)

    assert state.is_failed()
    with pytest.raises(RetrainFailed) as failure:
        state.result()

    assert failure.value.step == step
    assert str(failure.value).startswith(f"step {step!r} failed:") and cause in str(failure.value)
    report = _artifact(state.state_details.flow_run_id, "retrain-summary").data
    assert f"failed at step `{step}`" in report and "no alias was moved" in report
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert {str(v.version) for v in client.search_model_versions(f"name = '{name}'")} == versions_before
    if step == "evaluate":
        # The MLflow run that trained the rejected attempt is marked failed, not left running.
        exp = client.get_experiment_by_name(cfg.registry.experiment).experiment_id
        latest = client.search_runs([exp], order_by=["attributes.start_time DESC"], max_results=1)[0]
        assert latest.info.status == "FAILED"
