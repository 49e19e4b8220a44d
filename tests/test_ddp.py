"""Data parallel training: 2 gloo processes under torchrun stay in lockstep; only rank 0 writes files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from translation import TRANSLATION_SETTINGS

from gan_core.training.batching import EpochBatches

REPO = Path(__file__).resolve().parents[1]

# One torchrun worker: rank r trains with out_dir {base}/rank{r} (out_dir does not shape training, so the config
# is otherwise identical), then saves its final G and D so the test can compare ranks.
WORKER = """
import json, os, sys
from pathlib import Path
import torch
from gan_core.config import load_config
from gan_core.training.loop import Trainer

params, base = sys.argv[1], Path(sys.argv[2])
rank = int(os.environ["RANK"])
cfg = load_config(params, {"train.out_dir": str(base / f"rank{rank}")})
trainer = Trainer(cfg, resume=False)
result = trainer.run()
torch.save({"G": trainer.G.state_dict(), "D": trainer.D.state_dict()}, base / f"weights{rank}.pt")
(base / f"result{rank}.json").write_text(json.dumps(result.as_dict()))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_epoch_batches_shard_disjointly_and_cover_each_epoch():
    ranks = [EpochBatches(num_images=40, batch_size=4, seed=3, rank=r, world_size=2) for r in range(2)]
    per_epoch = ranks[0].batches_per_epoch
    assert per_epoch == 5
    seen = [torch.cat([b.indices(k) for k in range(per_epoch)]) for b in ranks]
    assert set(seen[0].tolist()).isdisjoint(seen[1].tolist())  # no image on both ranks in an epoch
    assert sorted(torch.cat(seen).tolist()) == list(range(40))  # every image once per epoch
    # The next epoch is a different shuffle, and batch k is the same however the sampler got there.
    assert not torch.equal(ranks[0].indices(per_epoch), ranks[0].indices(0))
    fresh = EpochBatches(num_images=40, batch_size=4, seed=3, rank=1, world_size=2)
    assert torch.equal(fresh.indices(7), ranks[1].indices(7))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dcgan", "cyclegan"])
def test_two_gloo_ranks_stay_identical_and_only_rank0_writes(family, request, tiny_train_config, tmp_path):
    settings = {"train.steps": 4, "train.log_every": 2, "train.checkpoint_every": 2}
    if family == "cyclegan":  # two G and two D in one module each, a history pool per rank
        cfg = tiny_train_config(request.getfixturevalue("pair_prepared"), **TRANSLATION_SETTINGS, **settings)
    else:
        cfg = tiny_train_config(request.getfixturevalue("mnist_prepared"), **settings)
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(cfg.model_dump(mode="json")))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), str(params), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    w0 = torch.load(tmp_path / "weights0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights1.pt", weights_only=True)
    # Each rank trained on its own shard; averaged gradients and broadcast BatchNorm stats keep them identical.
    for net in ("G", "D"):
        assert w0[net].keys() == w1[net].keys()
        for key in w0[net]:
            assert torch.equal(w0[net][key], w1[net][key]), f"{net}.{key} differs between ranks"
    r0 = json.loads((tmp_path / "result0.json").read_text())
    r1 = json.loads((tmp_path / "result1.json").read_text())
    # Logged losses are averaged over ranks.
    assert r0["world_size"] == 2 and r0["final"]["g_loss"] == r1["final"]["g_loss"]

    rank0, rank1 = tmp_path / "rank0", tmp_path / "rank1"
    package = "translator.json" if family == "cyclegan" else "generator.json"
    assert (rank0 / "checkpoints" / "last.pt").is_file() and (rank0 / "generator" / package).is_file()
    assert (rank0 / "metrics.json").is_file() and list((rank0 / "samples").glob("*.png"))
    assert not rank1.exists(), f"rank 1 wrote {sorted(p.name for p in rank1.rglob('*'))}"
    # The checkpoint holds the same G the ranks ended with.
    ckpt = torch.load(rank0 / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(ckpt["generator"][k], v) for k, v in w0["G"].items())
