"""Lineage: which data, code and settings produced a result — in every package's metadata and on every MLflow run
and model version (gan_core.tracking stamps these as tags).

    git_info()                        # {'git_commit': '1f87743...', 'git_dirty': False}
    lineage(cfg)                      # all strings: data_version, data_source, git_commit, git_dirty, ...
    lineage(cfg, data_version_info=data, device="cpu")   # the same, from a data version a flow computed once

The data version and the device are decided once, by whoever has them (a flow, or the trainer: the data it loaded
and the device it runs on), and handed in; left out, they are computed here as the trainer would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gan_core.config import Config
from gan_core.data.version import LOCK_FILE
from gan_core.data.version import data_version_info as read_data_version


def git_info(repo: str | Path | None = None) -> dict[str, Any]:
    """{"git_commit": sha or "unknown", "git_dirty": bool or None (None when not a git work tree)}.

    Dirty means a *tracked* file differs from the commit (git describe --dirty's rule): untracked files do not
    count (a grid or a test image someone saved in the repo root is not the code; new code under gan_core/ is
    caught by the training identity's code hash, which reads every file there), and neither do the files the DVC
    pipeline writes (dvc.lock and the outputs dvc.yaml declares, such as the git-tracked metrics JSONs), since
    every training rewrites them: a run on a clean checkout must not be labelled dirty by its own outputs."""
    cwd = str(repo) if repo is not None else None
    try:
        commit = _git(["rev-parse", "HEAD"], cwd)
        top = Path(_git(["rev-parse", "--show-toplevel"], cwd).strip())
        excluded = [f":(top,exclude){path}" for path in pipeline_outputs(top)]
        status = _git(["status", "--porcelain", "--untracked-files=no", "--", ":(top)", *excluded], cwd)
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": None}
    return {"git_commit": commit.strip(), "git_dirty": bool(status.strip())}


def pipeline_outputs(root: str | Path) -> list[str]:
    """dvc.lock and every path dvc.yaml (in `root`) declares as a stage's outs, metrics or plots."""
    paths = [LOCK_FILE]
    try:
        stages = (yaml.safe_load((Path(root) / "dvc.yaml").read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return paths
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []) or []:
                # An entry is a path, or {path: {cache: false, ...}}.
                paths.extend([entry] if isinstance(entry, str) else list(entry))
    return paths


def _git(args: list[str], cwd: str | None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30).stdout


def lineage(
    cfg: Config, *, data_version_info: Mapping[str, str] | None = None, device: str | None = None
) -> dict[str, str]:
    """Everything needed to say what produced a result, as strings (MLflow tags).

    `data_version_info` ({"data_version", "data_version_source"}, as gan_core.data.version.data_version_info
    returns it) and `device` (the type train.device resolves to: cuda | mps | cpu): passed by a caller that knows
    them already, so a run hashes its data and picks its device once; by default read here."""
    import torch

    version_info = data_version_info if data_version_info is not None else read_data_version(cfg.data.prepared_dir)
    if device is None:
        from gan_core.device import pick_device  # imports torch: only lineage() needs it

        device = pick_device(cfg.train.device).type
    git = git_info()
    dirty = git["git_dirty"]
    return {
        "data_version": version_info["data_version"],
        "data_version_source": version_info["data_version_source"],
        "data_source": cfg.data.source,
        "git_commit": git["git_commit"],
        "git_dirty": "unknown" if dirty is None else str(dirty).lower(),
        "config_hash": cfg.hash(),
        "torch_version": torch.__version__,
        "device": device,  # cuda | mps | cpu
    }
