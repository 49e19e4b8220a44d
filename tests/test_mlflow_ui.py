"""What the MLflow UI shows of ganops: the experiment's view and description, run names, the dataset input, and
where the retrain report's MLflow links point. Real SQLite store (the session's migrated copy), real data."""

from __future__ import annotations

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
