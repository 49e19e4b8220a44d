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
    from gan_core.training.launch import torchrun_command

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
    proc = subprocess.run(torchrun_command(cli_params, cfg), cwd=ws.root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["world_size"] == 2  # one JSON result: rank 0's
    ours = load_file(flow_package / "weights.safetensors")
    theirs = load_file(tmp_path / "cli" / "generator" / "weights.safetensors")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)


def test_two_nodes_meet_at_node_0_and_train_as_two_local_processes_do(
    prefect_harness: None, retrain_workspace: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """train.nnodes=2 on one machine: the flow is node 0 and a second torchrun (node_rank 1, another working
    directory) joins it at master_addr:master_port. Two nodes of one process each are the world of two processes
    that `nproc_per_node=2` makes, with the same ranks: the weights are the same, bit for bit."""
    from processes import free_port, stop_process_group

    from flows.retrain import retrain
    from gan_core.training.launch import torchrun_command

    ws = retrain_workspace(tmp_path / "ws")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.db_uri)
    monkeypatch.chdir(ws.root)
    nodes = ["train.nnodes=2", "train.master_addr=127.0.0.1", f"train.master_port={free_port()}"]
    cfg = ws.config(nodes)
    other = tmp_path / "node1"
    other.mkdir()
    params = other / "params.json"
    dump = cfg.model_dump(mode="json")
    params.write_text(json.dumps({**dump, "train": {**dump["train"], "node_rank": 1, "out_dir": str(other / "out")}}))
    node1_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"node_rank": 1})})
    with (other / "node1.log").open("w") as log:
        node1 = subprocess.Popen(torchrun_command(params, node1_cfg), cwd=other, stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        result = retrain(params=str(ws.params), overrides=nodes)
        assert node1.wait(timeout=120) == 0, (other / "node1.log").read_text()[-3000:]
    finally:
        stop_process_group(node1)
    assert result["status"] == "promoted"
    assert not (other / "out").exists()  # only node 0's rank 0 writes

    single = subprocess.run(torchrun_command(tmp_path / "single.json", _with(cfg, tmp_path, "single")), cwd=ws.root,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ours = load_file(Path(cfg.train.out_dir) / "generator" / "weights.safetensors")
    theirs = load_file(tmp_path / "single" / "generator" / "weights.safetensors")
    assert all((ours[k] == theirs[k]).all() for k in ours)


def _with(cfg: Any, tmp_path: Path, name: str) -> Any:
    """cfg as one node of two processes, writing to tmp_path/name; its params file is tmp_path/<name>.json."""
    single = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "nnodes": 1, "nproc_per_node": 2, "out_dir": str(tmp_path / name)})})
    (tmp_path / f"{name}.json").write_text(json.dumps(single.model_dump(mode="json")))
    return single
