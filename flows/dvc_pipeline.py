"""The flow's side of the DVC pipeline: when a run *is* a DVC stage, and running `dvc` bounded and quietly.

When the run is exactly the DVC `prepare` stage (the repo's params.yaml, no `data.*` overrides, data.prepared_dir =
the stage's output) the data step runs `dvc repro prepare`, so dvc.lock and the DVC cache record the dataset (and
`dvc push` sends it to the default remote when one is configured). When the run is the whole DVC pipeline
(params.yaml, no overrides), the flow runs the classifier/encoder/train/evaluate steps itself (training must log
into its MLflow run) and then `dvc commit`s those stages, so dvc.lock records what it produced and `dvc status` is
clean.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gan_core.config import DEFAULT_PARAMS, Config
from gan_core.errors import ServiceUnavailable, UserError
from gan_core.tracking.store import connection_problem, service_timeout_s

PREPARE_STAGE = "prepare"


def dvc_stage_applies(cfg: Config, params: str | Path, overrides: Mapping[str, Any]) -> bool:
    """True when `dvc repro prepare` would build exactly cfg.data: same params file, no data overrides, same output."""
    dvc_yaml = Path("dvc.yaml")
    if not (dvc_yaml.is_file() and Path(".dvc").is_dir()):
        return False
    if Path(params).resolve() != DEFAULT_PARAMS.resolve() or any(k.startswith("data.") for k in overrides):
        return False
    stage = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}).get(PREPARE_STAGE) or {}
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
    return any(Path(o).resolve() == Path(cfg.data.prepared_dir).resolve() for o in outs)


# The stages the flow runs itself (inside an MLflow run) rather than through `dvc repro`, and the config
# directory each one's outputs must lie in for `dvc commit` to record what the flow produced.
FLOW_STAGES = {
    "classifier": lambda cfg: cfg.eval.classifier.out_dir,
    "encoder": lambda cfg: cfg.eval.encoder.out_dir,
    "train": lambda cfg: cfg.train.out_dir,
    "evaluate": lambda cfg: cfg.eval.out_dir,
}


def dvc_pipeline_applies(cfg: Config, params: str | Path, overrides: Mapping[str, Any]) -> bool:
    """True when the whole run is the repo's DVC pipeline: the prepare stage applies, there are no overrides, and
    every output of the classifier/encoder/train/evaluate stages lies where cfg makes the flow write it."""
    if overrides or not dvc_stage_applies(cfg, params, overrides):
        return False
    stages = (yaml.safe_load(Path("dvc.yaml").read_text()) or {}).get("stages", {})
    for name, out_dir in FLOW_STAGES.items():
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in (stages.get(name) or {}).get("outs", [])]
        root = Path(out_dir(cfg)).resolve()
        if not outs or not all(Path(o).resolve().is_relative_to(root) for o in outs):
            return False
    return True


class DvcFailed(RuntimeError):
    """A `dvc` command exited non-zero; `reason` is its first ERROR line."""

    def __init__(self, args: tuple[str, ...], returncode: int, reason: str) -> None:
        self.reason = reason
        super().__init__(f"`dvc {' '.join(args)}` exited with {returncode}: {reason}")


def run_dvc(*args: str, timeout: float = 3600) -> str:
    """Run the DVC that lives beside this Python (stages call `python`, so our venv goes first on PATH)."""
    bindir = Path(sys.executable).parent
    exe = bindir / "dvc" if (bindir / "dvc").exists() else shutil.which("dvc")
    if exe is None:
        raise RuntimeError("dvc is not installed in this environment; pip install dvc")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        # A stage that is one of our entry points (`python -m gan_core prepare`) printed a user error: pass it on.
        ours = [line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("error: ")]
        if ours:
            raise UserError(f"`dvc {' '.join(args)}`: {ours[0].removeprefix('error: ')}")
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        # DVC's first ERROR line says what failed (a transfer and why); the last one only counts the failures.
        errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
        raise DvcFailed(args, proc.returncode, (errors or lines[-1:] or [""])[0])
    return proc.stdout


def dvc_push(*targets: str, step: str = "push_data") -> None:
    """`dvc push` to the default remote within GANOPS_SERVICE_TIMEOUT; a remote that refuses, fails or stays silent
    is one ServiceUnavailable line naming it. DVC's own clients retry transfers: no retry on top."""
    budget = service_timeout_s()
    try:
        run_dvc("push", *targets, timeout=budget)
        return
    except subprocess.TimeoutExpired:
        reason, state = f"`dvc push` did not finish within {budget:g} s", "unreachable"
    except DvcFailed as e:
        reason = connection_problem(e.reason)
        state = "unreachable" if reason in ("connection refused", "host name not found") else "failed"
    raise ServiceUnavailable(
        "DVC remote", default_remote_label(), step, reason,
        "check it (`dvc remote list`, `dvc push`), or raise GANOPS_SERVICE_TIMEOUT for a large upload", state=state,
    )


def default_remote_label() -> str:
    """`'name' (url)` of the default DVC remote, as far as DVC's config tells."""
    try:
        name = run_dvc("remote", "default", timeout=60).strip()
        remotes = [line.split() for line in run_dvc("remote", "list", timeout=60).splitlines()]
    except (DvcFailed, subprocess.TimeoutExpired):
        return "(default)"
    # `dvc remote list` prints "<name> <url> [(default)]" per remote.
    url = next((parts[1] for parts in remotes if len(parts) > 1 and parts[0] == name), "?")
    return f"{name!r} ({url})"


def has_default_remote() -> bool:
    try:
        return bool(run_dvc("remote", "default", timeout=60).strip())
    except DvcFailed:  # `dvc remote default` exits non-zero when none is set
        return False
