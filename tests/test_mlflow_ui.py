"""What the MLflow UI shows of ganops: the experiment's view and description, run names, the dataset input, where
the links ganops writes point, and the pages themselves rendered by headless Chromium from `ganops ui` (run,
version, registered model, the image chart). Real SQLite store (the session's migrated copy), real data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from gan_core.config import Config
from gan_core.data.version import data_version
from gan_core.tracking.runs import start_training_run
from gan_core.tracking.store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    artifact_location,
    configure,
    experiment_id,
)


@pytest.fixture()
def cfg(tiny_train_config, digits_prepared: Path, mlflow_store) -> Config:
    return tiny_train_config(
        digits_prepared,
        **{"data.source": "digits", "registry.tracking_uri": mlflow_store.uri,
           "registry.artifact_location": str(mlflow_store.artifacts)},
    )


def test_the_experiment_opens_in_the_model_training_view_with_a_description(cfg: Config, mlflow_store) -> None:
    client = MlflowClient(mlflow_store.uri)
    exp = client.get_experiment(experiment_id(cfg.registry, configure(cfg.registry)))
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    assert cfg.registry.model_name in exp.tags[NOTE_TAG] and "Datasets" in exp.tags[NOTE_TAG]

    # An experiment made before these tags existed gets them on next use; a description a person wrote stays.
    old = client.create_experiment("older", artifact_location=artifact_location(cfg.registry),
                                   tags={NOTE_TAG: "written by hand"})
    older = cfg.registry.model_copy(update={"experiment": "older"})
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert experiment_id(older, configure(older)) == old
    tags = client.get_experiment(old).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND and tags[NOTE_TAG] == "written by hand"


def test_a_training_run_is_named_after_what_ran_and_logs_the_data_as_its_dataset(cfg: Config, mlflow_store) -> None:
    version = data_version(cfg.data.prepared_dir)
    with start_training_run(cfg) as run:
        run_id = run.info.run_id
    logged = MlflowClient(mlflow_store.uri).get_run(run_id)
    assert logged.info.run_name == f"dcgan-nonsaturating-4steps-{version[:8]}"
    (dataset_input,) = logged.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.digest == version and dataset.name == "digits"
    assert '"source": "digits"' in dataset.source
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"

    conditional = cfg.model_copy(deep=True)
    conditional.model.conditional = True
    conditional.train.loss = "hinge"
    with start_training_run(conditional) as run:
        assert run.info.run_name == f"dcgan-cond-hinge-4steps-{version[:8]}"
    with start_training_run(cfg, run_name="by hand") as run:
        assert run.info.run_name == "by hand"


def test_links_go_to_the_ui_setting_or_a_tracking_server_and_never_to_a_guessed_address(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.report import failure_markdown, summary_markdown
    from gan_core.tracking.store import MLFLOW_UI_ENV, run_url

    # The query opens MLflow 3.17's UI in its model-training mode (it would start in GenAI mode).
    page = "#/experiments/3/runs/abc?workflowType=machine_learning"
    monkeypatch.delenv(MLFLOW_UI_ENV, raising=False)
    assert run_url(cfg.registry, "3", "abc") is None  # a SQLite store: its UI is wherever `ganops ui` was started
    result = {"status": "promoted", "version": "1", "experiment_id": "3", "run_id": "abc", "run_name": "tiny"}
    summary = summary_markdown(cfg, result)
    assert "- MLflow run: tiny (run abc in sqlite:///" in summary and "`ganops ui` serves it" in summary
    assert "http://" not in summary and "127.0.0.1:5000" not in summary

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cret@mlflow.example.org/")
    assert run_url(cfg.registry, "3", "abc") == f"https://mlflow.example.org/{page}"  # its own UI, no credentials
    assert f"[tiny](https://mlflow.example.org/{page})" in summary_markdown(cfg, result)
    assert "s3cret" not in failure_markdown(cfg, result, RuntimeError("no answer from https://alice:s3cret@x/"))
    monkeypatch.setenv(MLFLOW_UI_ENV, "http://127.0.0.1:8080/mlflow/")
    assert run_url(cfg.registry, "3", "abc") == f"http://127.0.0.1:8080/mlflow/{page}"
    assert run_url(cfg.registry, None, "abc") is None


# ----------------------------------------------------------------------------- the pages, in a real browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _rendered(url: str, tmp_path: Path, height: int = 1400, budget_ms: int = 30000) -> str:
    """The DOM of `url` after headless Chromium ran its scripts for `budget_ms` of virtual time (MLflow's UI is a
    React app that fetches everything it shows)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp_path) as profile:
        done = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size=1600,{height}", f"--virtual-time-budget={budget_ms}",
             "--dump-dom", url], capture_output=True, text=True, timeout=180, check=True)
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (Debian package `chromium`)")
def test_the_mlflow_pages_show_the_description_the_outcome_and_the_step_0_grid(
    prefect_harness: None, retrain_workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retrain's run, version and model pages and the image chart, rendered by Chromium from `ganops ui`."""
    import subprocess
    import sys

    from processes import free_port, stop_process_group, wait_until_ready

    from flows.retrain import retrain

    ws = retrain_workspace(tmp_path / "ws")
    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("GANOPS_MLFLOW_UI", ui)  # where `ganops ui` serves it: the links ganops writes go there
    with ws.entered():
        result = retrain(params=str(ws.params), overrides=["train.steps=40", "train.sample_every=20"])
        assert result["status"] == "promoted"
        log = tmp_path / "ui.log"
        with log.open("w") as out:
            proc = subprocess.Popen([str(Path(sys.executable).parent / "ganops"), "ui", "--params", str(ws.params),
                                     "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    name, view = ws.config().registry.model_name, "workflowType=machine_learning"
    try:
        wait_until_ready(proc, f"{ui}/health", 120, log)
        run = _rendered(f"{ui}/#/experiments/{result['experiment_id']}/runs/{result['run_id']}?{view}", tmp_path)
        # The description, rendered: what was trained, the outcome linking the version's page, no GitHub mention.
        assert "Generator <code>mlp</code> (nonsaturating loss, 40 steps, batch 16) trained on digits" in run
        assert f'href="{ui}/#/models/{name}/versions/1"' in run and "github.com" not in run
        version = _rendered(f"{ui}/#/models/{name}/versions/1?{view}", tmp_path)
        assert "Promoted to champion; fid_lenet" in version and "feature space" in version
        model = _rendered(f"{ui}/#/models/{name}?{view}", tmp_path)
        # The versions table shows a description's first 30 characters as raw text: a sentence, not markdown.
        assert "Promoted to champion" in model and "**Gate" not in model
        charts = _rendered(f"{ui}/#/experiments/{result['experiment_id']}/runs?compareRunsMode=CHART&{view}",
                           tmp_path, height=5000, budget_ms=40000)
        # The image chart opens at step 0, and there is a grid there (the untrained generator's).
        assert "get-artifact?path=images%2Fsamples%2Bstep%2B00000000%2B" in charts
    finally:
        stop_process_group(proc)
