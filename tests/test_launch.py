"""Data-parallel training launched by the retrain flow (train.nproc_per_node): two gloo processes on CPU under
torchrun, rank 0 logging into the flow's MLflow run; the result equals the CLI's `torchrun -m gan_core train`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

pytestmark = [pytest.mark.slow, pytest.mark.scale]


def test_the_flow_trains_with_two_processes_as_torchrun_does(prefect_harness: None, retrain_workspace: Any,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from flows.retrain import retrain
    from gan_core.launch import torchrun_command

    ws = retrain_workspace(tmp_path / "ws")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
    monkeypatch.chdir(ws.root)
    result = retrain(params=str(ws.params), overrides=["train.nproc_per_node=2"])
    assert result["status"] == "promoted"

    client = MlflowClient(ws.db_uri)
    run = client.get_run(result["run_id"])
    assert run.data.params["train.nproc_per_node"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "g_loss")) == 2  # rank 0 logged steps 10 and 20, once
    assert run.info.status == "FINISHED" and "fid_lenet" in run.data.metrics
    cfg = ws.config(["train.nproc_per_node=2"])
    flow_package = Path(cfg.train.out_dir) / "generator"
    assert json.loads((Path(cfg.train.out_dir) / "metrics.json").read_text())["steps"] == 20

    # The same config through the CLI under torchrun, into another directory: the same weights, bit for bit.
    cli_params = tmp_path / "cli.json"
    cli_params.write_text(json.dumps({**cfg.model_dump(mode="json"),
                                      "train": {**cfg.model_dump(mode="json")["train"],
                                                "out_dir": str(tmp_path / "cli")}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(torchrun_command(cli_params, 2), cwd=ws.root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["world_size"] == 2  # one JSON result: rank 0's
    ours = load_file(flow_package / "weights.safetensors")
    theirs = load_file(tmp_path / "cli" / "generator" / "weights.safetensors")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
