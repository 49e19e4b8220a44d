"""Lineage: which data, code and settings produced a result — stamped on every MLflow run and model version.

    data_version("data/prepared")     # '5d1c...e3.dir', the md5 DVC records for the prepared dataset
    git_info()                        # {'git_commit': '1f87743...', 'git_dirty': False}
    lineage(cfg)                      # all strings: data_version, data_source, git_commit, git_dirty, ...

The data version is the directory md5 in DVC's own format (md5 of the sorted JSON list of
{"md5": <file md5>, "relpath": ...}, suffixed ".dir"). It is taken from dvc.lock when the lock
describes the directory as it is now; otherwise (no DVC, or a prepare run outside `dvc repro`) it is
computed the same way from the files, so the same data always gets the same version. No dvc import.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from gan_core.config import Config
from gan_core.errors import UserError

LOCK_FILE = "dvc.lock"


def dvc_dir_md5(directory: str | Path) -> str:
    """The md5 DVC 3 records for a directory output (`<hex>.dir`), computed from the files themselves."""
    root = Path(directory)
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest = hashlib.md5()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        entries.append({"md5": digest.hexdigest(), "relpath": path.relative_to(root).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    # Same bytes as dvc_data.hashfile.tree.Tree.as_bytes(): json.dumps(list, sort_keys=True).
    manifest = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(manifest).hexdigest() + ".dir"


def locked_md5(directory: str | Path) -> str | None:
    """The md5 that the nearest dvc.lock (in `directory`'s ancestors) records for it, or None."""
    target = Path(directory).resolve()
    for folder in target.parents:
        lock = folder / LOCK_FILE
        if not lock.is_file():
            continue
        try:
            stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        except yaml.YAMLError:
            return None
        for stage in stages.values():
            for out in stage.get("outs", []) or []:
                if (folder / out.get("path", "")).resolve() == target and out.get("md5"):
                    return str(out["md5"])
        return None
    return None


def data_version_info(prepared_dir: str | Path) -> dict[str, str]:
    """{"data_version": md5, "data_version_source": "dvc.lock" | "computed"} for a prepared dataset directory."""
    root = Path(prepared_dir)
    if not (root / "meta.json").is_file():
        raise UserError(f"no prepared dataset at {str(root)!r}; run `python -m gan_core prepare` first")
    current = dvc_dir_md5(root)
    locked = locked_md5(root)
    # A lock that no longer matches the files (prepare was run outside dvc repro) would mislabel the data.
    source = "dvc.lock" if locked == current else "computed"
    return {"data_version": current, "data_version_source": source}


def data_version(prepared_dir: str | Path) -> str:
    """The data version of a prepared dataset: the md5 DVC records for it (from dvc.lock, or computed alike)."""
    return data_version_info(prepared_dir)["data_version"]


def git_info(repo: str | Path | None = None) -> dict[str, Any]:
    """{"git_commit": sha or "unknown", "git_dirty": bool or None (None when not a git work tree)}.

    Dirty means the work tree's *sources* differ from the commit: the files the DVC pipeline writes (dvc.lock and
    the outputs dvc.yaml declares, such as the git-tracked metrics JSONs) do not count, since every training
    rewrites them; a run on a clean checkout must not be labelled dirty by its own outputs."""
    cwd = str(repo) if repo is not None else None
    try:
        commit = _git(["rev-parse", "HEAD"], cwd)
        top = Path(_git(["rev-parse", "--show-toplevel"], cwd).strip())
        excluded = [f":(top,exclude){path}" for path in pipeline_outputs(top)]
        status = _git(["status", "--porcelain", "--", ":(top)", *excluded], cwd)
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


def lineage(cfg: Config) -> dict[str, str]:
    """Everything needed to say what produced a result, as strings (MLflow tags)."""
    import torch

    from gan_core.device import pick_device  # imports torch: only lineage() needs it

    version_info = data_version_info(cfg.data.prepared_dir)
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
        "device": pick_device(cfg.train.device).type,  # cuda | mps | cpu
    }


def code_hash() -> str:
    """sha256 (16 hex) of gan_core's source files: uncommitted edits to the code count as a change, which the
    git commit alone would miss."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
