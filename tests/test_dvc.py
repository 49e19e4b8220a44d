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
from gan_core.lineage import data_version, data_version_info, dvc_dir_md5, git_info, lineage

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: dvc and the python the stage's `python -m gan_core` needs
GIT_ID = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def _run(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ID, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    env.pop("PYTHONPATH", None)  # the stage must import the clone's own gan_core
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _dvc(cwd: Path, *args: str) -> str:
    return _run(cwd, str(BIN / "dvc"), *args)


def _locked(repo: Path) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (out,) = [o for o in lock["stages"]["prepare"]["outs"] if o["path"] == "data/prepared"]
    return out["md5"]


def _status(repo: Path) -> dict:
    return json.loads(_dvc(repo, "status", "--json", "prepare"))


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """What a fresh clone holds for the prepare stage: code, dvc.yaml, params.yaml, .dvc/config, ignores."""
    repo = tmp_path / "clone"
    repo.mkdir()
    shutil.copytree(REPO / "gan_core", repo / "gan_core", ignore=shutil.ignore_patterns("__pycache__"))
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
    files_before = {p.name: p.read_bytes() for p in prepared.iterdir()}

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
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == files_before

    # The default remote is a local directory inside the clone (git-ignored): push, lose everything, pull.
    _dvc(clone, "push", "prepare")
    assert any((clone / "dvc-storage").rglob("*")), "dvc push wrote nothing to the default remote"
    assert "dvc-storage" not in _run(clone, "git", "status", "--porcelain")
    shutil.rmtree(prepared)
    shutil.rmtree(clone / ".dvc" / "cache")
    _dvc(clone, "pull", "prepare")
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == files_before
    assert _status(clone) == {}


# ----------------------------------------------------------------------------- git and lineage (fast)
def test_git_info_reports_commit_and_dirty_flag(clone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    head = _run(clone, "git", "rev-parse", "HEAD").strip()
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
    (other / "images.npy").write_bytes((other / "images.npy").read_bytes()[:-1] + b"\x01")
    assert data_version(other) != tags["data_version"]
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert data_version_info(other)["data_version_source"] == "computed"


def test_data_version_of_a_missing_dataset_is_a_user_error(tmp_path: Path) -> None:
    from gan_core.errors import UserError

    with pytest.raises(UserError, match="no prepared dataset"):
        data_version(tmp_path / "nothing")
