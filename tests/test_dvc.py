"""DVC and lineage against a real git + DVC repo in a temp dir (a fresh clone of this repo's pipeline files)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gan_core.config import load_config
from gan_core.data.version import data_version, data_version_info, dvc_dir_md5
from gan_core.training.lineage import git_info, lineage

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: dvc and the python the stage's `python -m gan_core` needs
GIT_ID = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def _run(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ID, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           # The default DVC remote is ~/.local/share/ganops/dvc-storage: every clone in a temp dir shares a temp ~.
           "HOME": str(cwd.parent / "home")}
    env.pop("PYTHONPATH", None)  # the stage must import the clone's own gan_core
    env.pop("MLFLOW_TRACKING_URI", None)  # the stages use the repo's default store, ./mlflow.db
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _dvc(cwd: Path, *args: str) -> str:
    return _run(cwd, str(BIN / "dvc"), *args)


def _locked(repo: Path) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (out,) = [o for o in lock["stages"]["prepare"]["outs"] if o["path"] == "data/prepared"]
    return out["md5"]


def _files(directory: Path) -> dict[str, bytes]:
    """Every file of a prepared dataset (meta.json and its shards) by relative path."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def _status(repo: Path) -> dict:
    return json.loads(_dvc(repo, "status", "--json", "prepare"))


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    return make_clone(tmp_path)


def make_clone(tmp_path: Path) -> Path:
    """What a fresh clone holds for the prepare stage: code, dvc.yaml, params.yaml, .dvc/config, ignores."""
    repo = tmp_path / "clone"
    repo.mkdir()
    shutil.copytree(REPO / "gan_core", repo / "gan_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "configs" / "recipes", repo / "configs" / "recipes")  # a dependency of the train stage
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    (repo / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(REPO / ".dvc" / name, repo / ".dvc" / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="mnist5k", resolution=16, channels=1, max_images=50)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(repo, "git", "init", "-q")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-q", "-m", "clone")
    return repo


@pytest.mark.slow
def test_dvc_repro_versions_the_data_reproducibly_tracks_params_and_uses_the_default_remote(clone: Path) -> None:
    prepared = clone / "data" / "prepared"
    printed = _dvc(clone, "repro", "prepare")
    md5 = _locked(clone)
    assert re.fullmatch(r"[0-9a-f]{32}\.dir", md5)
    # Our md5 is DVC's: the version `prepare` printed, the lineage function, and DVC's lock agree.
    assert md5 in printed
    assert dvc_dir_md5(prepared) == md5
    assert data_version_info(prepared) == {"data_version": md5, "data_version_source": "dvc.lock"}
    assert _status(clone) == {}
    files_before = _files(prepared)

    # A changed param makes the stage dirty.
    original_params = (clone / "params.yaml").read_text()
    params = yaml.safe_load(original_params)
    params["data"]["resolution"] = 8
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _status(clone)["prepare"][0]["changed deps"] == {"params.yaml": {"data": "modified"}}

    # prepare run outside `dvc repro`: the lock is stale, so the version is computed from the files.
    _run(clone, "python", "-m", "gan_core", "prepare")
    info = data_version_info(prepared)
    assert info["data_version_source"] == "computed" and info["data_version"] != md5
    # ...and `dvc commit` records exactly the version lineage computed.
    _dvc(clone, "commit", "--force", "prepare")
    assert _locked(clone) == info["data_version"]
    assert data_version_info(prepared) == {"data_version": info["data_version"], "data_version_source": "dvc.lock"}
    assert _status(clone) == {}

    # Back to the first params, from scratch (no outputs, no lock, no cache, no run-cache): the same md5.
    (clone / "params.yaml").write_text(original_params)
    shutil.rmtree(prepared)
    shutil.rmtree(clone / ".dvc" / "cache")
    (clone / "dvc.lock").unlink()
    _dvc(clone, "repro", "prepare")
    assert _locked(clone) == md5
    assert _files(prepared) == files_before

    # The default remote is one directory per user (~/.local/share/ganops/dvc-storage), outside every clone: push
    # here, then a second clone of the same repo pulls the same files with no setup.
    _dvc(clone, "push", "prepare")
    assert any((clone.parent / "home" / ".local/share/ganops/dvc-storage").rglob("*")), "dvc push wrote nothing"
    _run(clone, "git", "add", "-A")
    _run(clone, "git", "commit", "-q", "-m", "data version")
    other = clone.parent / "other-clone"
    _run(clone.parent, "git", "clone", "-q", str(clone), str(other))
    _dvc(other, "pull", "prepare")
    assert _files(other / "data" / "prepared") == files_before
    assert _status(other) == {}


@pytest.mark.slow
def test_dvc_pull_in_a_fresh_clone_names_what_nobody_pushed(clone: Path) -> None:
    """The README's account of a fresh clone whose remote holds nothing yet (DVC's behaviour, not ganops'): `dvc
    pull` exits 1 naming the outputs dvc.lock records, `dvc pull --allow-missing` exits 0, `dvc repro prepare`
    rebuilds the data with the md5 the committed dvc.lock records."""
    shutil.copy(REPO / "dvc.lock", clone / "dvc.lock")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))  # the committed data settings
    env = {**os.environ, **GIT_ID, "HOME": str(clone.parent / "home"), "DVC_NO_ANALYTICS": "1"}
    pulled = subprocess.run([str(BIN / "dvc"), "pull"], cwd=clone, env=env, capture_output=True, text=True)
    assert pulled.returncode == 1
    assert "data/prepared" in pulled.stderr and "outputs/train/generator" in pulled.stderr
    _dvc(clone, "pull", "--allow-missing")
    locked = _locked(clone)
    _dvc(clone, "repro", "prepare")
    assert _locked(clone) == locked and _status(clone) == {}


# ----------------------------------------------------------------------------- the whole pipeline under DVC
@pytest.fixture
def pipeline_clone(tmp_path: Path, _mlflow_template_db: Path) -> Path:
    """A fresh clone's pipeline (code, dvc.yaml, ignores, DVC config) with a seconds-long params.yaml and the repo's
    default MLflow store, ./mlflow.db (a copy of the session's migrated one, to skip the migrations)."""
    repo = tmp_path / "pipeline"
    repo.mkdir()
    shutil.copytree(REPO / "gan_core", repo / "gan_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "configs" / "recipes", repo / "configs" / "recipes")  # a dependency of the train stage
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    shutil.copytree(REPO / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="digits", resolution=16, max_images=400)
    params["model"].update(arch="mlp", latent_dim=16, g_width=32, d_width=32)
    params["train"].update(steps=20, batch_size=16, log_every=10, sample_every=20, checkpoint_every=20, device="cpu")
    params["eval"].update(num_samples=200, batch_size=100, kid_subset_size=50, device="cpu")
    params["eval"]["classifier"].update(epochs=1, min_accuracy=0.3, resolution=16)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert params["registry"]["tracking_uri"] == "sqlite:///mlflow.db"
    shutil.copyfile(_mlflow_template_db, repo / "mlflow.db")
    _run(repo, "git", "init", "-q")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-q", "-m", "clone")
    return repo


def _exp_show(repo: Path) -> dict[str, dict]:
    """`dvc exp show --json` as {rev name: {metrics file: {metric: value}}} for the workspace, commits, experiments."""
    rows = {}
    for commit in json.loads(_dvc(repo, "exp", "show", "--json")):
        revs = [commit] + [rev for exp in commit.get("experiments") or [] for rev in exp["revs"]]
        for rev in revs:
            metrics = (rev.get("data") or {}).get("metrics") or {}
            rows[rev.get("name") or rev["rev"]] = {path: entry.get("data", {}) for path, entry in metrics.items()}
    return rows


@pytest.mark.slow
def test_dvc_trainings_are_mlflow_runs_and_dvc_compares_numeric_metrics(pipeline_clone: Path) -> None:
    from mlflow import MlflowClient

    repo = pipeline_clone
    _dvc(repo, "repro")
    # git keeps the metrics JSONs (DVC keeps the rest), so the commit records what main measured.
    metrics_files = {"outputs/classifier/metrics.json", "outputs/train/metrics.json", "outputs/eval/metrics.json"}
    assert set(_run(repo, "git", "status", "--porcelain", "--untracked-files=all").split()[1::2]) == {
        "dvc.lock", *metrics_files}
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-q", "-m", "baseline")
    assert json.loads(_dvc(repo, "status", "--json")) == {}  # bytecode the stages left in gan_core/ is ignored

    # One training identity: a logging change reruns nothing; a change to any module training imports reruns train.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["log_every"] = 5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert json.loads(_dvc(repo, "status", "--json")) == {}
    checkpoint_py = repo / "gan_core" / "training" / "checkpoint.py"
    checkpoint_py.write_text(checkpoint_py.read_text() + "\n# a fix\n")
    status = json.loads(_dvc(repo, "status", "--json"))
    assert {"changed deps": {"gan_core": "modified"}} in status["train"]
    _run(repo, "git", "checkout", "--", "params.yaml", "gan_core/training/checkpoint.py")
    assert json.loads(_dvc(repo, "status", "--json")) == {}

    printed = _dvc(repo, "exp", "run", "-S", "train.steps=30", "-n", "longer").splitlines()
    # One line per stage result (issue 29: the evaluation's JSON was 46 of 79 lines); the numbers are in the files.
    results = [line for line in printed
               if line.startswith(("prepared ", "classifier ", "encoder ", "trained ", "evaluated "))]
    # prepare, classifier, encoder: cached
    assert [line.split()[0] for line in results] == ["trained", "evaluated"], printed
    assert results[0].startswith("trained to step 30 (10 steps in ") and "fid_lenet=" in results[1]
    assert len(printed) < 20 and not [line for line in printed if line.lstrip().startswith(("{", "}", '"'))]

    # `dvc exp show`: numbers for main, the experiment and the workspace, in every metrics file, and no strings.
    rows = _exp_show(repo)
    assert {"workspace", "longer"} <= set(rows) and len(rows) == 3
    for name, files in rows.items():
        assert set(files) == metrics_files, name
        values = [v for data in files.values() for v in data.values()]
        assert values and all(isinstance(v, int | float) for v in values), f"{name}: {files}"
    main = next(files for name, files in rows.items() if name not in ("workspace", "longer"))
    assert rows["longer"]["outputs/train/metrics.json"]["steps"] == 30
    assert main["outputs/train/metrics.json"]["steps"] == 20
    diff = json.loads(_dvc(repo, "metrics", "diff", "--json"))  # HEAD (main) → workspace (the experiment)
    assert diff["outputs/train/metrics.json"]["steps"] == {"old": 20, "new": 30, "diff": 10}
    assert isinstance(diff["outputs/eval/metrics.json"]["fid_lenet"]["old"], float)

    # Each training DVC ran is an MLflow run in the repo's default store: params, lineage and identity tags, the
    # dataset, step metrics, sample grids, and the evaluate stage's metrics and model in the same run.
    client = MlflowClient(tracking_uri="sqlite:///" + str(repo / "mlflow.db"))
    experiment = client.get_experiment_by_name("ganops-generator")  # the registered model's experiment
    runs = {r.data.params["train.steps"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"20", "30"}
    for steps, run in runs.items():
        assert run.info.status == "FINISHED" and run.info.run_name.startswith(f"mlp-nonsaturating-{steps}steps-")
        tags = run.data.tags
        assert tags["dvc.stage"] == "train" and tags["mlflow.loggedImages"] == "True"
        assert {"data_version", "git_commit", "training_hash", "code_hash"} <= set(tags)
        assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["digits"]
        assert {"d_loss", "g_loss", "fid_lenet", "class_coverage"} <= set(run.data.metrics)
        assert len(run.outputs.model_outputs) == 1  # the evaluate stage logged the generator as the run's model
        eval_files = {a.path for a in client.list_artifacts(run.info.run_id, "eval/files")}
        assert eval_files == {"eval/files/metrics.json", "eval/files/info.json"}
    assert runs["30"].data.tags["dvc.experiment"] == "longer" and "dvc.experiment" not in runs["20"].data.tags
    # The baseline ran on a clean checkout: its own outputs (dvc.lock, metrics JSONs) do not make it dirty.
    assert runs["20"].data.tags["git_dirty"] == "false"
    assert runs["30"].data.metrics["fid_lenet"] == rows["longer"]["outputs/eval/metrics.json"]["fid_lenet"]

    # Fewer steps than the workspace's checkpoint holds: a 10-step model, trained from scratch, not the 30-step one.
    _dvc(repo, "exp", "run", "-S", "train.steps=10", "-n", "shorter")
    trained = json.loads((repo / "outputs" / "train" / "metrics.json").read_text())
    assert (trained["steps"], trained["trained_steps"], trained["resumed_from"]) == (10, 10, 0)


@pytest.mark.slow
def test_dvc_repro_runs_a_translation_pipeline(pipeline_clone: Path) -> None:
    """The same four stages train and evaluate a translator when params.yaml describes one (default paths)."""
    from mlflow import MlflowClient

    repo = pipeline_clone
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(source="digits", target="mnist5k", max_images=300)
    params["model"] = {"arch": "cyclegan", "g_width": 4, "d_width": 4, "res_blocks": 1}
    params["train"].update(loss="lsgan", steps=6, batch_size=4, log_every=3, sample_every=6, checkpoint_every=6)
    params["eval"]["classifier"].update(min_accuracy=0.0)
    params["gate"] = {"thresholds": {"content_lenet_a2b": {"min": 0.0}}, "primary_metric": "fid_lenet_a2b"}
    params["registry"]["model_name"] = "test-translator"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _dvc(repo, "repro")
    assert json.loads(_dvc(repo, "status", "--json")) == {}
    assert (repo / "data" / "prepared" / "a" / "shards" / "000000.images.npy").is_file()
    assert (repo / "outputs" / "train" / "generator" / "translator.json").is_file()
    classifier = json.loads((repo / "outputs" / "classifier" / "metrics.json").read_text())
    assert {"holdout_accuracy_a", "holdout_accuracy_b"} <= set(classifier)
    metrics = json.loads((repo / "outputs" / "eval" / "metrics.json").read_text())
    assert {"fid_lenet_a2b", "fid_lenet_b2a", "content_lenet_a2b", "cycle_l1_a"} <= set(metrics)
    client = MlflowClient(tracking_uri="sqlite:///" + str(repo / "mlflow.db"))
    (run,) = client.search_runs([client.get_experiment_by_name("test-translator").experiment_id])
    assert run.info.run_name.startswith("cyclegan-lsgan-6steps-") and run.data.tags["dvc.stage"] == "train"
    assert run.data.metrics["content_lenet_a2b"] == metrics["content_lenet_a2b"]
    assert len(run.outputs.model_outputs) == 1  # the translator, logged by the evaluate stage


# ----------------------------------------------------------------------------- git and lineage (fast)
def test_git_info_reports_commit_and_dirty_flag(clone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    head = _run(clone, "git", "rev-parse", "HEAD").strip()
    assert git_info(clone) == {"git_commit": head, "git_dirty": False}
    # What the pipeline writes (dvc.lock, declared outputs such as a metrics JSON, new or changed) is not a change
    # of the sources; the check also works from a subdirectory.
    (clone / "dvc.lock").write_text("schema: '2.0'\n")
    (clone / "outputs" / "eval").mkdir(parents=True)
    (clone / "outputs" / "eval" / "metrics.json").write_text('{"fid_lenet": 1.0}')
    assert git_info(clone / "gan_core") == {"git_commit": head, "git_dirty": False}
    # Untracked files are not the sources either: a grid or an image someone saved in the repo root (issue 29).
    (clone / "grid.png").write_bytes(b"png")
    (clone / "translated").mkdir()
    (clone / "translated" / "my_digit.png").write_bytes(b"png")
    assert git_info(clone) == {"git_commit": head, "git_dirty": False}
    (clone / "params.yaml").write_text((clone / "params.yaml").read_text() + "\n# edited\n")
    assert git_info(clone) == {"git_commit": head, "git_dirty": True}
    _run(clone, "git", "commit", "-q", "-am", "edit")
    after = git_info(clone)
    assert (
        after["git_dirty"] is False
        and after["git_commit"] != head
        and re.fullmatch(r"[0-9a-f]{40}", after["git_commit"])
    )

    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repo above the temp dir
    assert git_info(not_a_repo) == {"git_commit": "unknown", "git_dirty": None}


def test_what_ganops_and_the_readme_commands_write_is_git_ignored(tmp_path: Path) -> None:
    """`ganops generate`'s default --out, every --out and saved file of the README's commands, and every path the
    shipped configs prepare, train or evaluate into land where the repo's .gitignore keeps them out of git."""
    import inspect

    from flows.cli import generate_command
    from gan_core.config.catalogue import TASKS

    readme = (REPO / "README.md").read_text()
    commands = readme + "\n".join(kind.command_example for kind in TASKS.values())
    written = [str(inspect.signature(generate_command).parameters["out"].default)]
    # --out paths and saved files (a Prefect block's .save('name') writes no file)
    written += re.findall(r"--out ([^\s`,)]+)", commands) + re.findall(r"\.save\('([^']+\.\w+)'\)", readme)
    for params in [REPO / "params.yaml", *sorted((REPO / "configs").glob("*.yaml"))]:
        cfg = load_config(params)
        written += [cfg.data.prepared_dir, cfg.data.raw_dir, cfg.train.out_dir, cfg.eval.out_dir]
    assert len(written) > 10 and "outputs/grid.png" in written
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    _run(repo, "git", "init", "-q")
    # A directory is ignored when a file inside it is (`git check-ignore` on the folder alone may not say so).
    files = [f"{path.rstrip('/')}/x.png" if path.endswith("/") or not Path(path).suffix else path for path in written]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *files], cwd=repo, capture_output=True, text=True)
    assert sorted(set(ignored.stdout.split())) == sorted(set(files))


def test_lineage_is_all_strings_and_tracks_data_and_config(mnist_prepared: Path, tmp_path: Path) -> None:
    import torch

    cfg = load_config(None, [f"data.prepared_dir={mnist_prepared}", "train.device=cpu"])
    tags = lineage(cfg)
    assert set(tags) >= {
        "data_version",
        "data_source",
        "git_commit",
        "git_dirty",
        "config_hash",
        "torch_version",
        "device",
    }
    assert all(isinstance(v, str) for v in tags.values())
    assert tags["data_version"] == dvc_dir_md5(mnist_prepared) == data_version(mnist_prepared)
    assert tags["data_version_source"] == "computed"  # no dvc.lock above a pytest temp dir
    assert tags["data_source"] == "mnist5k" and tags["device"] == "cpu"
    assert tags["config_hash"] == cfg.hash()
    assert tags["torch_version"] == torch.__version__
    assert tags["git_dirty"] in ("true", "false", "unknown")
    assert (
        lineage(load_config(None, [f"data.prepared_dir={mnist_prepared}", "train.steps=3"]))["config_hash"]
        != (tags["config_hash"])
    )

    # Different data → a different version; a lock elsewhere that does not list this dir is not used.
    other = tmp_path / "other"
    shutil.copytree(mnist_prepared, other)
    shard = other / "shards" / "000000.images.npy"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x01")
    assert data_version(other) != tags["data_version"]
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert data_version_info(other)["data_version_source"] == "computed"


def test_data_version_of_a_missing_dataset_is_a_user_error(tmp_path: Path) -> None:
    from gan_core.errors import UserError

    with pytest.raises(UserError, match="no prepared dataset"):
        data_version(tmp_path / "nothing")
