"""One MLflow run per training: params, lineage tags, step metrics, per-step sample grids, artifacts, evaluation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image

from gan_core.config import Config, RegistryConfig
from gan_core.errors import UserError
from gan_core.tracking.runs import SAMPLES_KEY, MLflowCallback, log_evaluation, log_step_image, start_training_run
from gan_core.tracking.store import configure, tracking_uri
from gan_core.training.lineage import lineage
from gan_core.training.loop import train


def _artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    """Every file under `path` in the run's artifacts, recursively."""
    out = []
    for info in client.list_artifacts(run_id, path):
        out.extend(_artifact_paths(client, run_id, info.path) if info.is_dir else [info.path])
    return out


def _wait_for_system_metrics(client: MlflowClient, run_id: str, timeout_s: float = 30.0) -> list[str]:
    """MLflow's monitor thread logs on its own clock: poll (bounded) until its first sample lands."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("system/")]
        if keys:
            return keys
        time.sleep(0.2)
    return []


@pytest.fixture()
def cfg(tiny_train_config, digits_prepared: Path, mlflow_store) -> Config:
    return tiny_train_config(
        digits_prepared,
        **{
            "data.source": "digits",
            "train.steps": 4,
            "train.log_every": 2,
            "train.sample_every": 2,
            "registry.tracking_uri": mlflow_store.uri,
            "registry.artifact_location": str(mlflow_store.artifacts),
        },
    )


def test_a_training_run_records_params_lineage_step_metrics_sample_grids_and_evaluation(
    cfg: Config, mlflow_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    client = MlflowClient(mlflow_store.uri)
    eval_json = tmp_path / "eval_metrics.json"
    eval_json.write_text(json.dumps({"fid_lenet": 12.5, "class_coverage": 0.9}))
    with start_training_run(cfg, run_name="tiny", client=client) as run:
        run_id = run.info.run_id
        result = train(cfg, callbacks=[MLflowCallback(run_id, client)])
        system_keys = _wait_for_system_metrics(client, run_id)
        log_evaluation(run_id, {"fid_lenet": 12.5, "class_coverage": 0.9, "extractor": "lenet"}, metrics_json=eval_json,
                       client=client)

    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.artifact_uri.startswith(mlflow_store.artifacts.as_uri())
    # Params: the settings runs are compared by, dotted, as params.yaml would spell them, and those set away from
    # their defaults; not paths, runtime, evaluation or registry settings (the whole config is config.yaml).
    params = logged.data.params
    assert params["train.steps"] == "4" and params["model.arch"] == "dcgan" and params["train.loss"] == "nonsaturating"
    assert params["model.g_width"] == "8" and params["train.g_optimizer.lr"] == "0.0002"  # core (g_width not default)
    assert params["model.latent_dim"] == "16"  # set away from its default by the fixture
    assert not {"data.max_images", "data.target", "recipe"} & params.keys()  # None: nothing to compare
    assert not [k for k in params if k.split(".")[0] in ("eval", "gate", "registry")]
    assert not {"data.prepared_dir", "train.out_dir", "train.device", "train.log_every"} & params.keys()
    assert len(params) <= 25, sorted(params)
    # Lineage tags: what produced the run.
    tags = logged.data.tags
    for key, value in lineage(cfg).items():
        assert tags[key] == value, key
    assert tags["config_hash"] == cfg.hash()
    assert tags["train.device"].startswith("cpu") and int(tags["train.g_params"]) > 0
    # Step metrics from the trainer's callback, at their steps.
    eval_keys = ("fid_lenet", "class_coverage")
    step_keys = [k for k in logged.data.metrics if not k.startswith("system/") and k not in eval_keys]
    assert step_keys, "the trainer logged no step metrics"
    for key in step_keys:
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == [2, 4], key
    # metrics.json repeats the last window's values (its images_per_s is the whole run's, so not compared).
    for key, value in json.loads(Path(result.metrics_path).read_text()).items():
        if key in step_keys and key != "images_per_s" and value is not None:
            assert client.get_metric_history(run_id, key)[-1].value == pytest.approx(value), key
    # Evaluation metrics (strings are not metrics), with the JSON files as artifacts.
    assert logged.data.metrics["fid_lenet"] == 12.5 and logged.data.metrics["class_coverage"] == 0.9
    assert "extractor" not in logged.data.metrics
    assert system_keys, "no system/ metrics within 30 s"

    files = _artifact_paths(client, run_id)
    assert {"config.yaml", "train_start.json", "train_result.json", "train/metrics.json",
            "eval/metrics.json", "eval/files/eval_metrics.json"} <= set(files)
    config_yaml = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path)))
    assert yaml.safe_load(config_yaml.read_text()) == cfg.model_dump(mode="json")
    # Sample grids as step images: one full-size PNG per step, identical to the trainer's grid.
    grids = sorted(f for f in files if f.startswith(f"images/{SAMPLES_KEY}+step+") and f.endswith(".png"))
    assert [int(g.split("+")[2]) for g in grids] == [0, 2, 4]  # step 0: where MLflow's image chart opens
    logged_grid = Path(client.download_artifacts(run_id, grids[-1], str(tmp_path)))
    trainer_grid = Path(cfg.train.out_dir) / "samples" / "step_000004.png"
    assert np.array_equal(np.asarray(Image.open(logged_grid)), np.asarray(Image.open(trainer_grid)))


def test_a_run_that_raises_ends_failed(cfg: Config, mlflow_store) -> None:
    with pytest.raises(RuntimeError, match="diverged"):
        with start_training_run(cfg) as run:
            raise RuntimeError("diverged")
    assert MlflowClient(mlflow_store.uri).get_run(run.info.run_id).info.status == "FAILED"


def test_tracking_uri_env_wins_relative_sqlite_resolves_and_file_stores_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry = RegistryConfig(tracking_uri="sqlite:///store/mlflow.db")
    assert tracking_uri(registry) == f"sqlite:///{tmp_path}/store/mlflow.db"
    assert list(tmp_path.iterdir()) == []  # resolving a URI creates nothing
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
    assert tracking_uri(registry) == f"sqlite:///{tmp_path}/other.db"
    # configure() must not leave its URI in the environment for the next configuration to mistake as the user's.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    try:
        # An http URI: the client connects lazily, so no store is created (a new SQLite file would be migrated).
        configure(RegistryConfig(tracking_uri="http://127.0.0.1:5999"))
        assert mlflow.get_tracking_uri() == "http://127.0.0.1:5999" and "MLFLOW_TRACKING_URI" not in os.environ
        assert tracking_uri(RegistryConfig(tracking_uri=f"sqlite:///{tmp_path}/third.db")).endswith("third.db")
    finally:
        mlflow.set_tracking_uri(None)  # MLflow's module global: leave no trace for later tests
    for bad in ("file:./mlruns", "mlruns"):
        with pytest.raises(UserError, match="plain-file store"):
            tracking_uri(RegistryConfig(tracking_uri=bad))


def test_only_write_paths_create_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry = RegistryConfig(tracking_uri="sqlite:///store/mlflow.db")
    try:
        with pytest.raises(UserError, match=f"no MLflow store at {tmp_path}/store/mlflow.db: run `ganops demo`"):
            configure(registry)
        assert list(tmp_path.iterdir()) == []
        # A training run or a registration: SQLite creates the file, ganops its folder (checked writable first).
        configure(registry, create=True).search_experiments()
        assert (tmp_path / "store" / "mlflow.db").is_file()
        configure(registry)  # now it exists, reads work
        # A store path below a file cannot be created: one line naming the setting, before any work.
        (tmp_path / "a-file").write_text("")
        below_a_file = RegistryConfig(tracking_uri=f"sqlite:///{tmp_path}/a-file/mlflow.db")
        with pytest.raises(UserError, match="registry.tracking_uri='.*a-file' is a file, not a directory"):
            configure(below_a_file, create=True)
    finally:
        mlflow.set_tracking_uri(None)


RACER = """
import sys, time
from pathlib import Path
from gan_core.tracking.store import open_uri

uri, name, barrier = sys.argv[1], sys.argv[2], Path(sys.argv[3])
(barrier / f"ready-{name}").touch()
while not (barrier / "go").exists():  # both processes have imported MLflow: open the store at the same moment
    time.sleep(0.001)
client = open_uri(uri, create=True)
print(client.create_experiment(f"race-{name}"))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_opening_a_fresh_store_at_once_both_succeed(tmp_path: Path) -> None:
    """Two first runs on a fresh machine (two people, or a schedule and a person) open a store that does not exist
    yet at the same moment. MLflow migrates a new SQLite store on first open, and two migrations of one file break
    each other ("table ... already exists", "Online migration expected to match one row"): the lock beside the
    store lets the first migrate and the second find it ready. Deliberately a fresh store, not the session's copy."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    racers = [subprocess.Popen([sys.executable, "-c", RACER, uri, name, str(tmp_path)], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("a", "b")]
    deadline = time.monotonic() + 200
    while not all((tmp_path / f"ready-{name}").exists() for name in ("a", "b")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in racers), "a racer never got ready"
        time.sleep(0.05)
    (tmp_path / "go").touch()
    results = [p.communicate(timeout=200) for p in racers]
    assert [p.returncode for p in racers] == [0, 0], [err[-2000:] for _, err in results]
    client = MlflowClient(tracking_uri=uri)
    ids = {e.name: e.experiment_id for e in client.search_experiments()}
    assert {"race-a", "race-b"} <= set(ids) and sorted(out.strip() for out, _ in results) == sorted(
        [ids["race-a"], ids["race-b"]])


def test_step_images_follow_mlflows_layout_and_sort_by_step_as_text(
    cfg: Config, mlflow_store, tmp_path: Path
) -> None:
    client = configure(cfg.registry)
    png = tmp_path / "grid.png"
    Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)).save(png)
    with start_training_run(cfg) as run:
        run_id = run.info.run_id
        for step in (2000, 250, 1000):
            log_step_image(client, run_id, png, "ours", step)
        with Image.open(png) as img:
            client.log_image(run_id, img.copy(), key="mlflows", step=250, synchronous=True)
    files = _artifact_paths(client, run_id, "images")
    ours = sorted(f for f in files if f.startswith("images/ours+"))
    mlflows = sorted(f for f in files if f.startswith("images/mlflows+"))

    def layout(path: str) -> list[str]:
        # The fields the UI's image chart parses: key, "step", step, "timestamp", ms, uuid[, "compressed"].ext
        fields = path.removeprefix("images/").split("+")
        return [fields[1], fields[3], str(len(fields)), path.rsplit(".", 1)[1]]

    # If MLflow changes its naming, our files would fall out of the UI's image chart: fail here first.
    assert sorted(map(layout, ours[:2])) == sorted(map(layout, mlflows))
    assert [int(f.split("+")[2]) for f in ours if f.endswith(".png")] == [250, 1000, 2000]  # text order = step order
    assert client.get_run(run_id).data.tags["mlflow.loggedImages"] == "True"
