"""`ganops sweep`: a real Optuna study (SQLite beside the MLflow store), real trainings on the tiny digits config,
real MLflow parent/child runs, the real gate. Bad search spaces fail in one line before any trial runs.

The flow tests share one workspace in file order: the first sweep runs three enqueued points (one fails, one is
pruned or completes, one completes) and registers its best; the second joins the same study from two worker
processes and brings it to five trials.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gan_core.errors import UserError

SPACE = {
    "trials": 3,
    # Intermediate evaluation at step 20 of 40 on 50 samples; after one finished trial the median rule applies.
    "pruning": {"every_steps": 20, "num_samples": 50, "startup_trials": 1},
    "params": {
        "train.g_optimizer.lr": {"low": 1.0e-6, "high": 2.0e-3, "log": True},
        "train.batch_size": {"choices": [16, 4096]},
    },
}
# Enqueued, so the test does not depend on the sampler: a learning generator; a frozen one (lr 1e-6: it is still
# noise at step 20, worse than the first trial there, so the median rule prunes it); a batch larger than the data.
POINTS = [
    {"train.g_optimizer.lr": 2.0e-3, "train.batch_size": 16},
    {"train.g_optimizer.lr": 1.0e-6, "train.batch_size": 16},
    {"train.g_optimizer.lr": 5.0e-4, "train.batch_size": 4096},
]


# ----------------------------------------------------------------------------- the search space, checked up front
def _base(tmp_path: Path):
    from gan_core.config import load_config

    params = tmp_path / "params.yaml"
    params.write_text("train: {steps: 40}\n")
    return params, load_config(params)


@pytest.mark.parametrize(
    ("space", "named"),
    [
        ({"params": {"train.learning_rate": {"low": 0.1, "high": 0.2}}}, "params.train.learning_rate: unknown setting"),
        ({"params": {"data.max_images": {"choices": [100, 200]}}}, "params.data.max_images: only model.* and train.*"),
        ({"params": {"eval.num_samples": {"choices": [100, 200]}}}, "params.eval.num_samples: only model.*"),
        ({"params": {"train.device": {"choices": ["cpu"]}}}, "params.train.device: says how or where a trial runs"),
        ({"params": {"train.g_optimizer.lr": {"low": 0.01, "high": 0.001}}},
         "params.train.g_optimizer.lr: empty range: low 0.01 is not below high 0.001"),
        ({"params": {"train.g_optimizer.lr": {"low": 0.0, "high": 0.001, "log": True}}},
         "params.train.g_optimizer.lr: log scale needs low > 0"),
        ({"params": {"train.g_optimizer.lr": {"low": 0.0001, "high": 5.0}}},
         "params.train.g_optimizer.lr: 5.0 is not accepted: train.g_optimizer.lr: Input should be less than or equal"),
        ({"params": {"train.loss": {"choices": []}}}, "params.train.loss: choices is empty"),
        ({"params": {"train.loss": {"choices": ["hinge", "fancy"]}}}, "params.train.loss: 'fancy' is not accepted"),
        ({"params": {"train.loss": {"choices": ["hinge"], "low": 1}}}, "params.train.loss: give either choices"),
        ({"params": {"train.steps": {"low": 10}}}, "params.train.steps: a range needs both low and high"),
        ({"params": {}}, "params: no settings to search"),
        ({"params": {"train.steps": {"low": 10, "high": 20}}, "objective": "fid_magic"},
         "objective: unknown metric 'fid_magic'"),
        ({"params": {"train.steps": {"low": 10, "high": 20}}, "objective": "fid_inception"},
         "objective 'fid_inception' needs eval.extractors to include 'inception'"),
        ({"params": {"train.steps": {"low": 10, "high": 20}}, "objective": "fid_lenet_a2b"},
         "objective 'fid_lenet_a2b' is not computed for model.arch=dcgan"),
        ({"params": {"train.steps": {"low": 10, "high": 20}}, "trails": 3}, "trails: Extra inputs are not permitted"),
    ],
)
def test_a_bad_search_space_fails_in_one_line_naming_the_key(tmp_path: Path, space: dict, named: str) -> None:
    from flows.sweep import load_space

    params, cfg = _base(tmp_path)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    with pytest.raises(UserError) as caught:
        load_space(path, cfg, params)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"search space {path}: ")
    assert named in message, message


def test_a_good_space_reads_kinds_and_draws_points_inside_it(tmp_path: Path) -> None:
    import optuna

    from flows.sweep import load_space, suggest

    params, cfg = _base(tmp_path)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": {
        "train.g_optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "train.batch_size": {"low": 16, "high": 64, "step": 16},
        "train.g_optimizer.betas": {"choices": [[0.5, 0.999], [0.0, 0.99]]},
    }}))
    space = load_space(path, cfg, params)
    assert space.objective_for(cfg) == "fid_lenet" and space.trials == 10
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        point = suggest(study.ask(), space)
        assert 1e-4 <= point["train.g_optimizer.lr"] <= 1e-2
        assert point["train.batch_size"] in (16, 32, 48, 64) and isinstance(point["train.batch_size"], int)
        assert point["train.g_optimizer.betas"] in ([0.5, 0.999], [0.0, 0.99])  # a list again, not its JSON


def test_the_cli_refuses_a_bad_space_before_prefect_starts(
    retrain_workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import app
    from gan_core.cli import run_app

    ws = retrain_workspace(tmp_path)
    monkeypatch.chdir(ws.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
    space = ws.root / "bad.yaml"
    space.write_text(yaml.safe_dump({"params": {"train.no_such_knob": {"choices": [1, 2]}}}))
    assert run_app(app, ["sweep", "--space", str(space), "--params", str(ws.params)]) == 2
    err = capsys.readouterr().err
    assert "params.train.no_such_knob: unknown setting" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (ws.root / "mlruns" / "optuna.db").exists()  # nothing was created: no study, no trial
    assert run_app(app, ["sweep", "--space", str(space), "--workers", "0", "--params", str(ws.params)]) == 2
    assert "--workers 0" in capsys.readouterr().err
    space.write_text(yaml.safe_dump({"trials": None, "params": {"train.steps": {"low": 10, "high": 20}}}))
    assert run_app(app, ["sweep", "--space", str(space), "--params", str(ws.params)]) == 2
    assert "the sweep has no budget" in capsys.readouterr().err


def test_an_interrupted_trial_is_retried_once_and_the_budget_counts_finished_trials(tmp_path: Path) -> None:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from flows.sweep import ERROR_ATTR, RETRY_ATTR, counted, requeue_interrupted

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")
    lr = {"train.g_optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)}
    done = study.ask(lr)
    study.tell(done, 1.0)
    failed = study.ask(lr)  # a trial that failed for a reason (a diverged config): counted, never retried
    failed.set_user_attr(ERROR_ATTR, "training diverged")
    study.tell(failed, state=TrialState.FAIL)
    interrupted = study.ask(lr)  # Ctrl-C: failed without a reason
    study.tell(interrupted, state=TrialState.FAIL)
    assert counted(study) == 2
    requeue_interrupted(study)
    requeue_interrupted(study)  # a second sweep process starting: the point is not enqueued twice
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1
    assert waiting[0].system_attrs["fixed_params"] == interrupted.params  # Optuna's record of an enqueued point
    assert waiting[0].user_attrs[RETRY_ATTR] == interrupted.number


def test_the_default_study_storage_sits_beside_a_sqlite_store_and_a_server_needs_one(tmp_path: Path) -> None:
    from flows.sweep import shown_url, study_storage
    from gan_core.config import load_config

    cfg = load_config(None, {"registry.tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db"})
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert study_storage(cfg) == f"sqlite:///{tmp_path}/mlruns/optuna.db"
        server = load_config(None, {"registry.tracking_uri": "http://127.0.0.1:5000"})
        with pytest.raises(UserError, match="set registry.study_storage"):
            study_storage(server)
        url = "postgresql://ganops:s3cret@127.0.0.1:5432/optuna"
        assert study_storage(server, url) == url
        assert "s3cret" not in shown_url(url)


# ----------------------------------------------------------------------------- real sweeps
@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, retrain_workspace) -> Iterator[Any]:
    ws = retrain_workspace(tmp_path_factory.mktemp("sweep"))
    tree = yaml.safe_load(ws.params.read_text())
    tree["train"].update(steps=40, sample_every=20, checkpoint_every=40)
    ws.params.write_text(yaml.safe_dump(tree, sort_keys=False))
    space = ws.root / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    with ws.entered():
        yield ws


def _study(ws: Any):
    import optuna

    return optuna.load_study(study_name="space", storage=f"sqlite:///{ws.root / 'mlruns' / 'optuna.db'}")


@pytest.fixture(scope="module")
def first_sweep(prefect_harness: None, workspace: Any) -> dict[str, Any]:
    import optuna

    from flows.sweep import sweep

    study = optuna.create_study(study_name="space", storage=f"sqlite:///{workspace.root / 'mlruns' / 'optuna.db'}")
    for point in POINTS:
        study.enqueue_trial(point)
    state = sweep(space=str(workspace.root / "space.yaml"), params=str(workspace.params), return_state=True)
    return {**state.result(), "flow_run_id": state.state_details.flow_run_id}


def _children(client: Any, parent: str) -> list[Any]:
    runs = client.search_runs(
        [client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=100)
    return sorted(runs, key=lambda r: int(r.data.tags["sweep.trial"]))


@pytest.mark.slow
def test_a_sweep_runs_each_trial_in_a_child_run_and_gates_only_the_best(workspace: Any, first_sweep: dict) -> None:
    from mlflow import MlflowClient

    summary = first_sweep["sweep"]
    client = MlflowClient(workspace.db_uri)
    parent = summary["parent_run_id"]
    children = _children(client, parent)
    assert [r.data.tags["sweep.trial"] for r in children] == ["0", "1", "2"]

    trials = {t.number: t for t in _study(workspace).trials}
    # Trial 2's batch is larger than the data: recorded as failed, with the reason, and the sweep went on.
    assert trials[2].state.name == "FAIL" and "fewer than one batch" in trials[2].user_attrs["error"]
    assert children[2].info.status == "FAILED" and children[2].data.tags["sweep.state"] == "failed"
    # Trial 1 never learns (lr 1e-6): at step 20 it is worse than trial 0 was there, so the median rule stops it.
    assert trials[0].intermediate_values[20] < trials[1].intermediate_values[20]
    assert trials[1].state.name == "PRUNED"
    assert trials[1].user_attrs["pruned_because"].startswith("step 20: fid_lenet ")
    assert trials[1].user_attrs["pruned_because"].endswith(f"> median {trials[0].intermediate_values[20]:.4g}")
    assert children[1].info.status == "KILLED" and children[1].data.tags["sweep.state"] == "pruned"
    assert trials[0].state.name == "COMPLETE" and children[0].info.status == "FINISHED"
    # Each child run is a full training run: params, curves, sample grid, evaluation, model.
    run0 = children[0]
    assert run0.data.params["train.g_optimizer.lr"] == "0.002"
    assert "d_loss" in run0.data.metrics and math.isclose(run0.data.metrics["fid_lenet"], trials[0].value)
    assert "sweep_fid_lenet" in run0.data.metrics  # the intermediate evaluation, as a curve
    assert summary["counts"] == {"complete": 1, "pruned": 1, "fail": 1}

    # Only the best trial became a version, through the gate, and it is the champion.
    versions = client.search_model_versions("name = 'ganops-generator'")
    assert [v.run_id for v in versions] == [run0.info.run_id]
    assert first_sweep["status"] == "promoted" and first_sweep["version"] == "1"
    version = client.get_model_version("ganops-generator", "1")
    assert version.tags["gate.decision"] == "passed" and run0.data.tags["sweep.trial"] == "0"
    assert "sweep study `space`, trial `0`" in version.description  # the run's lineage, quoted
    assert f"training `{run0.data.tags['training_hash']}`" in version.description
    # The metrics' evaluation context travels with them, so a later gate compares like with like.
    assert version.tags["eval.context_hash"] == run0.data.tags["eval.context_hash"]
    assert str(client.get_model_version_by_alias("ganops-generator", "champion").version) == "1"

    # The parent run holds the results table and the plots; the study is in optuna.db beside the store.
    artifacts = {f.path for f in client.list_artifacts(parent, "sweep")}
    assert {"sweep/trials.csv", "sweep/trials.md", "sweep/optimization_history.png", "sweep/space.yaml"} <= artifacts
    assert client.get_run(parent).data.metrics["best_fid_lenet"] == trials[0].value
    assert client.get_run(parent).info.status == "FINISHED"
    # The flow run's markdown summary: counts, the best trial and its gate, the table.
    from test_retrain import _artifact

    summary_md = _artifact(first_sweep["flow_run_id"], "sweep-summary").data
    assert "1 complete, 1 pruned, 1 failed" in summary_md and "best: trial 0" in summary_md
    assert "registered as version 1: **promoted**" in summary_md and "fewer than one batch" in summary_md


@pytest.mark.slow
def test_a_second_sweep_joins_the_study_from_worker_processes(workspace: Any, first_sweep: dict) -> None:
    from mlflow import MlflowClient

    from flows.sweep import sweep

    result = sweep(space=str(workspace.root / "space.yaml"), params=str(workspace.params), trials=5, workers=2)
    study = _study(workspace)
    assert len(study.trials) == 5 and result["sweep"]["ran_here"] == 2
    # The two new trials ran in the spawned worker processes, not in this one; both joined the same parent run.
    workers = {t.user_attrs["worker"].split(":")[1] for t in study.trials[3:] if "worker" in t.user_attrs}
    assert workers and str(os.getpid()) not in workers
    client = MlflowClient(workspace.db_uri)
    assert result["sweep"]["parent_run_id"] == first_sweep["sweep"]["parent_run_id"]
    assert len(_children(client, result["sweep"]["parent_run_id"])) == 5
    # Whatever won, the registered best is the study's best completed trial.
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = min(complete, key=lambda t: t.value)
    assert result["run_id"] == best.user_attrs["mlflow_run_id"]
    assert result["metrics"]["fid_lenet"] == pytest.approx(best.value)


@pytest.mark.slow
def test_a_study_refuses_a_different_space(workspace: Any, first_sweep: dict) -> None:
    from flows.failures import RetrainFailed
    from flows.sweep import sweep

    other = workspace.root / "other.yaml"
    other.write_text(yaml.safe_dump({**SPACE, "params": {"train.g_optimizer.lr": {"low": 1e-4, "high": 1e-3}}}))
    with pytest.raises(RetrainFailed, match="study 'space' .* searched with other settings"):
        sweep(space=str(other), params=str(workspace.params), study="space")


@pytest.mark.slow
def test_a_sweep_trains_its_trials_with_torchrun_when_the_base_config_is_distributed(
    prefect_harness: None, retrain_workspace: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train.nproc_per_node=2: a trial trains as a retrain's candidate does (flows.candidate), with two processes
    under torchrun, rank 0 logging into the trial's run; out of the sweep process's reach, it is judged at its end
    only (no intermediate evaluation, so the median rule never stops it)."""
    import optuna
    from mlflow import MlflowClient

    from flows.sweep import sweep

    ws = retrain_workspace(tmp_path / "ws")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
    monkeypatch.chdir(ws.root)
    space = ws.root / "ddp.yaml"
    pruning = {"every_steps": 10, "num_samples": 50, "startup_trials": 0}  # would evaluate a single-process trial
    space.write_text(yaml.safe_dump({"trials": 1, "pruning": pruning,
                                     "params": {"train.g_optimizer.lr": {"low": 1.0e-4, "high": 2.0e-3, "log": True}}}))

    result = sweep(space=str(space), params=str(ws.params), overrides=["train.nproc_per_node=2"])

    client = MlflowClient(ws.db_uri)
    (run,) = _children(client, result["sweep"]["parent_run_id"])
    assert run.data.params["train.nproc_per_node"] == "2"
    assert run.data.tags["train.world_size"] == "2"  # what the training itself reported (rank 0, at its start)
    assert run.info.status == "FINISHED" and "fid_lenet" in run.data.metrics and "d_loss" in run.data.metrics
    assert "sweep_fid_lenet" not in run.data.metrics  # no intermediate evaluation of a distributed trial
    (trial,) = optuna.load_study(study_name="ddp", storage=f"sqlite:///{ws.root / 'mlruns' / 'optuna.db'}").trials
    assert trial.state.name == "COMPLETE" and not trial.intermediate_values
    assert result["run_id"] == run.info.run_id and result["status"] == "promoted"
