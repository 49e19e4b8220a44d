"""Data-parallel training from a running program: `python -m gan_core train` under torchrun, one process per GPU
(gloo processes on a CPU), rank 0 logging into a given MLflow run. The retrain flow's train step calls this when
train.nproc_per_node is not 1 or train.nnodes is above 1 (then the flow's machine is node 0 and the other machines
run `torchrun_command` with their own train.node_rank); the result equals the same torchrun command's by hand.

    result = train_processes(cfg, run_id)      # a TrainResult, as gan_core.training.loop.train returns
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gan_core.atomic import write_json
from gan_core.config import Config
from gan_core.errors import UserError
from gan_core.training.loop import TrainResult


def distributed(cfg: Config) -> bool:
    """True when the training takes more than this one process: the flow launches torchrun."""
    return processes(cfg) > 1 or cfg.train.nnodes > 1


def processes(cfg: Config) -> int:
    """train.nproc_per_node as a number: auto is this node's GPU count (at least 1)."""
    n = cfg.train.nproc_per_node
    if n == "auto":
        import torch

        return max(1, torch.cuda.device_count())
    return int(n)


def torchrun_command(params_file: str | Path, cfg: Config, run_id: str | None = None) -> list[str]:
    """The command line: torchrun running gan_core's train CLI, standalone on one node, or as node
    train.node_rank of train.nnodes meeting at train.master_addr:master_port."""
    tc = cfg.train
    tracking = ["--mlflow-run-id", run_id] if run_id else ["--no-mlflow"]
    nodes = ["--standalone"] if tc.nnodes == 1 else [
        "--nnodes", str(tc.nnodes), "--node_rank", str(tc.node_rank), "--master_addr", tc.master_addr,
        "--master_port", str(tc.master_port)]
    return [sys.executable, "-m", "torch.distributed.run", *nodes, "--nproc_per_node", str(processes(cfg)),
            "-m", "gan_core", "train", "--params", str(params_file), *tracking, "--json"]


def train_processes(cfg: Config, run_id: str | None = None) -> TrainResult:
    """Train with processes(cfg) processes; rank 0 logs into MLflow run `run_id` (none when None). The config
    goes to the processes as a params file beside the outputs ({train.out_dir}/launch/params.json)."""
    if cfg.train.node_rank != 0:
        raise UserError(f"train.node_rank={cfg.train.node_rank}: the retrain flow runs on node 0 (its rank 0 logs and "
                        "writes the outputs); start the other nodes with torchrun and their own train.node_rank")
    params = Path(cfg.train.out_dir) / "launch" / "params.json"
    # JSON is YAML: the CLI reads it with --params. The settings are resolved already, so the recipe is not applied
    # again (it would undo overrides of its keys); its name reaches MLflow through the flow's run, opened here.
    write_json(params, {**cfg.model_dump(mode="json"), "recipe": None})
    nproc = processes(cfg) * cfg.train.nnodes
    # Stderr (the ranks' progress lines) streams through; stdout is rank 0's result JSON.
    proc = subprocess.run(torchrun_command(params, cfg, run_id), stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if proc.returncode != 0:
        raise UserError(f"training with {nproc} processes (torchrun, {cfg.train.nnodes} node(s)) failed with exit "
                        f"status {proc.returncode}; its error is above")
    return TrainResult(**json.loads(proc.stdout))
