"""Checkpoints: a SIGKILLed run resumes to bit-identical weights; the divergence guard keeps the last good one."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from translation import TRANSLATION_SETTINGS

from gan_core.errors import UserError
from gan_core.training.callbacks import TrainCallback
from gan_core.training.checkpoint import load_checkpoint
from gan_core.training.loop import DivergenceError, Trainer, train

# Tiny tensors: one intra-op thread is faster, and far faster when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


REPO = Path(__file__).resolve().parents[1]

# Runs training in a child process whose callback blocks forever once `block_at` is logged, i.e. after the
# checkpoint at step 10 is on disk and before the run can finish, so the SIGKILL lands mid-run every time.
CHILD = """
import json, sys, time
from pathlib import Path
from gan_core.training.callbacks import TrainCallback
from gan_core.config import load_config
from gan_core.training.loop import train

params, overrides, marker = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])

class BlockAt(TrainCallback):
    def on_metrics(self, step, metrics):
        if step == 15:
            marker.write_text(str(step))
            time.sleep(600)

train(load_config(params, overrides), callbacks=[BlockAt()])
"""


def _tensors(tree, prefix=""):
    """Flatten a checkpoint's nested dicts/lists into {path: tensor-or-value}."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_tensors(v, f"{prefix}{k}."))
        return out
    if isinstance(tree, (list, tuple)):
        out = {}
        for i, v in enumerate(tree):
            out.update(_tensors(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): tree}


RESUME_CASES = {
    "dcgan": {"model.arch": "dcgan", "train.diffaugment": "translation,cutout"},
    # Every stateful part of the stylegan2 step crosses the kill: lazy R1 (steps 4, 8, 12, ...), path length
    # (its running mean), style mixing, layer noise, ADA's p and its pending signs (interval 3: 10 is mid-interval).
    "stylegan2-ada": {"model.arch": "stylegan2", "model.mapping_layers": 2, "train.r1_every": 4,
                      "train.pl_weight": 2.0, "train.pl_every": 3, "train.augment": "ada", "train.ada_interval": 3,
                      "train.ada_kimg": 1.0},
    # The history pool (8 images: full after two steps, then swapping) and the lr decay cross the kill.
    "cyclegan": {**TRANSLATION_SETTINGS, "train.pool_size": 8},
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(RESUME_CASES))
def test_sigkill_and_resume_matches_uninterrupted_run(family, request, tiny_train_config, tmp_path):
    overrides = {"train.steps": 30, "train.log_every": 5, "train.checkpoint_every": 10, "train.sample_every": 100,
                 **RESUME_CASES[family]}
    prepared = request.getfixturevalue("pair_prepared" if family == "cyclegan" else "mnist_prepared")
    killed_cfg = tiny_train_config(prepared, **overrides, **{"train.out_dir": str(tmp_path / "killed")})
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(killed_cfg.model_dump(mode="json")))  # JSON is YAML
    marker = tmp_path / "blocked"

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(params), "{}", str(marker)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "child never reached step 15"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    ckpt = Path(killed_cfg.train.out_dir) / "checkpoints" / "last.pt"
    assert load_checkpoint(ckpt)["step"] == 10  # steps 11-15 were lost with the process
    assert not list(ckpt.parent.glob(".*.tmp")), "an interrupted write must leave no temp files behind"

    resumed = train(killed_cfg)
    assert resumed.resumed_from == 10 and resumed.steps == 30

    straight_cfg = tiny_train_config(prepared, **overrides, **{"train.out_dir": str(tmp_path / "straight")})
    straight = train(straight_cfg, resume=False)
    assert straight.resumed_from == 0

    a = load_checkpoint(resumed.checkpoint)
    b = load_checkpoint(straight.checkpoint)
    for part in ("generator", "discriminator", "ema", "g_optimizer", "d_optimizer", "step_state", "augment_state"):
        ta, tb = _tensors(a[part]), _tensors(b[part])
        assert ta.keys() == tb.keys()
        for key, va in ta.items():
            if isinstance(va, torch.Tensor):
                assert torch.equal(va, tb[key]), f"{part}.{key} differs after resume"
            else:
                assert va == tb[key], f"{part}.{key} differs after resume"
    assert resumed.final["g_loss"] == straight.final["g_loss"] and resumed.final["d_loss"] == straight.final["d_loss"]


def test_checkpoint_is_self_describing_and_weights_only(mnist_prepared, tiny_train_config):
    cfg = tiny_train_config(mnist_prepared, **{"train.steps": 4})
    result = train(cfg)
    path = Path(result.checkpoint)
    state = torch.load(path, weights_only=True)  # no pickled objects inside
    assert state["step"] == 4 and state["data_version"] and state["code_hash"]
    assert state["config"] == cfg.model_dump(mode="json")
    assert {"torch", "cuda", "numpy", "python"} <= state["rng"].keys()
    assert set(state["generator"]) == set(Trainer(cfg).G.state_dict())
    summary = json.loads(path.with_name("last.json").read_text())
    assert summary["step"] == 4 and summary["config_hash"] == cfg.hash("model", "train")


class Poison(TrainCallback):
    """Turns D's weights into NaN right after step 15 is logged: step 16's losses are NaN."""

    def __init__(self) -> None:
        self.trainer: Trainer | None = None
        self.logged: list[int] = []

    def on_metrics(self, step, metrics):
        self.logged.append(step)
        if step == 15:
            with torch.no_grad():
                for p in self.trainer.D.parameters():
                    p.fill_(float("nan"))


def test_divergence_stops_and_keeps_last_good_checkpoint(mnist_prepared, tiny_train_config):
    # Sample grids every 3 steps, off the logging cadence: step 18's grid would come from the poisoned weights.
    cfg = tiny_train_config(mnist_prepared, **{"train.steps": 30, "train.log_every": 5,
                                               "train.checkpoint_every": 10, "train.sample_every": 3})
    poison = Poison()
    trainer = Trainer(cfg, resume=False, callbacks=[poison])
    poison.trainer = trainer
    ckpt = Path(cfg.train.out_dir) / "checkpoints" / "last.pt"
    digest_at_10: str | None = None
    real_write = trainer.write_checkpoint

    def write_and_remember(step: int) -> None:
        nonlocal digest_at_10
        real_write(step)
        if step == 10:
            digest_at_10 = hashlib.sha256(ckpt.read_bytes()).hexdigest()

    trainer.write_checkpoint = write_and_remember
    with pytest.raises(DivergenceError, match=r"non-finite loss at step 16\b.*checkpoint .*last.pt is unchanged"):
        trainer.run()

    assert poison.logged == [5, 10, 15]  # stopped at the check of step 18, before drawing its samples
    grids = sorted(p.name for p in (Path(cfg.train.out_dir) / "samples").glob("*.png"))
    assert grids == [f"step_{s:06d}.png" for s in (0, 3, 6, 9, 12, 15)], "no sample grid from diverged weights"
    assert digest_at_10 is not None and hashlib.sha256(ckpt.read_bytes()).hexdigest() == digest_at_10
    state = load_checkpoint(ckpt)
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["discriminator"].values() if v.is_floating_point())
    assert not (Path(cfg.train.out_dir) / "generator").exists(), "no package from diverged weights"


# ----------------------------------------------------------------------------- damaged checkpoints
def _drop(state: dict, path: str) -> dict:
    """A deep copy of `state` without the value at the dotted `path`."""
    import copy

    state = copy.deepcopy(state)
    *parents, last = path.split(".")
    node = state
    for part in parents:
        node = node[part]
    del node[last]
    return state


@pytest.fixture(scope="module")
def trained_checkpoint(mnist_prepared, tmp_path_factory) -> tuple[Path, dict]:
    """One real 4-step checkpoint (and the params that made it), copied by each test that damages it."""
    from gan_core.config import load_config

    root = tmp_path_factory.mktemp("trained_checkpoint")
    (root / "empty.yaml").write_text("{}\n")
    overrides = {"data.prepared_dir": str(mnist_prepared), "model.g_width": 8, "model.d_width": 8,
                 "model.latent_dim": 16, "train.batch_size": 8, "train.steps": 4, "train.log_every": 2,
                 "train.device": "cpu", "train.out_dir": str(root / "train")}
    result = train(load_config(root / "empty.yaml", overrides))
    return Path(result.checkpoint), overrides


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda s: {"format": s["format"], "step": 3}, "generator missing"),
        (lambda s: _drop(s, "rng"), "rng missing"),
        (lambda s: _drop(s, "rng.numpy.keys"), "rng.numpy.keys missing"),
        (lambda s: _drop(s, "config.model"), "config.model missing"),
        (lambda s: _drop(s, "data_version"), "data_version missing"),
        (lambda s: {**s, "step": "4"}, "step is a str, expected int"),
        (lambda s: {**s, "step": -1}, "step=-1"),
        (lambda s: {**s, "generator": {"w": [1.0]}}, "generator is not a dict of tensors"),
        (lambda s: {**s, "ema": {**s["ema"], "num_updates": 4.5}}, "ema.num_updates is a float"),
    ],
    ids=["only-format-and-step", "no-rng", "no-numpy-keys", "no-model-config", "no-data-version", "step-string",
         "negative-step", "generator-not-tensors", "float-updates"],
)
def test_checkpoint_missing_fields_is_one_line_user_error(trained_checkpoint, tmp_path, damage, problem):
    source, _ = trained_checkpoint
    path = tmp_path / "last.pt"
    torch.save(damage(torch.load(source, weights_only=True)), path)
    with pytest.raises(UserError, match=f"damaged checkpoint \\({problem}") as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "--no-resume" in message and "\n" not in message


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "foreign-dict", "a-directory"])
def test_unreadable_or_foreign_checkpoint_is_one_line_user_error(trained_checkpoint, tmp_path, damage):
    source, _ = trained_checkpoint
    path = tmp_path / "last.pt"
    if damage == "truncated":
        path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign-dict":
        torch.save({"model": torch.zeros(2)}, path)  # a nanoGPT-style checkpoint: loads, but is not ours
    else:
        path.mkdir()
    with pytest.raises(UserError, match="unreadable checkpoint|not a ganops checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "--no-resume" in str(info.value)


def test_a_pickle_in_a_checkpoint_is_never_run(tmp_path):
    """weights_only=True: a checkpoint carrying code is refused, and the code does not run."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    path = tmp_path / "last.pt"
    torch.save({"format": "ganops-checkpoint/1", "step": Payload()}, path)
    with pytest.raises(UserError, match="unreadable checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_training_on_a_damaged_checkpoint_stops_with_one_line_and_no_resume_recovers(
    trained_checkpoint, tmp_path, capsys, mlflow_store
):
    from gan_core.cli import app, run_app

    source, overrides = trained_checkpoint
    out_dir = tmp_path / "train"
    (out_dir / "checkpoints").mkdir(parents=True)
    path = out_dir / "checkpoints" / "last.pt"
    torch.save(_drop(torch.load(source, weights_only=True), "d_optimizer"), path)
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    argv = ["train", "--params", str(params), *(f"{k}={v}" for k, v in overrides.items()),
            f"train.out_dir={out_dir}"]

    assert run_app(app, argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error:") and "Traceback" not in err
    assert str(path) in lines[0] and "d_optimizer missing" in lines[0] and "--no-resume" in lines[0]
    assert mlflow.search_runs(search_all_experiments=True).empty  # checked before an MLflow run was opened

    # As the message says: --no-resume trains from scratch and replaces the damaged file.
    assert run_app(app, [*argv, "--no-resume"]) == 0
    assert load_checkpoint(path)["step"] == 4


def test_checkpoint_whose_tensors_were_edited_cannot_be_resumed(trained_checkpoint, tmp_path):
    """The structure and the settings match, but a weight has another shape: caught when it is applied."""
    from gan_core.config import load_config

    source, overrides = trained_checkpoint
    state = torch.load(source, weights_only=True)
    name = next(iter(state["generator"]))
    state["generator"][name] = torch.zeros(3, 3)
    path = tmp_path / "train" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    (tmp_path / "empty.yaml").write_text("{}\n")
    cfg = load_config(tmp_path / "empty.yaml", {**overrides, "train.out_dir": str(tmp_path / "train")})
    with pytest.raises(UserError, match=f"{path}: cannot be resumed \\(RuntimeError: .*--no-resume"):
        train(cfg)
