"""The trainer on tiny CPU configs: every architecture × loss, EMA, outputs, package round-trip, resume rules."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from gan_core.config import DataConfig
from gan_core.data import prepare
from gan_core.data.version import data_version
from gan_core.errors import UserError
from gan_core.packaging.generator import load_generator, read_spec
from gan_core.training.augment import diff_augment
from gan_core.training.callbacks import TrainCallback
from gan_core.training.loop import Trainer, train
from gan_core.training.progress import progress_line


@pytest.fixture(scope="module")
def mnist28(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 28 px, 64-image labelled set (DCGAN's 7×7-seed path)."""
    out = tmp_path_factory.mktemp("mnist28") / "prepared"
    prepare(DataConfig(source="mnist5k", resolution=28, channels=1, max_images=64, prepared_dir=str(out)))
    return out


# Tiny tensors: one intra-op thread is faster, and far faster when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


class Recorder(TrainCallback):
    def __init__(self) -> None:
        self.start: dict | None = None
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.samples: list[tuple[int, Path]] = []
        self.end: dict | None = None

    def on_train_start(self, info):
        self.start = info

    def on_metrics(self, step, metrics):
        self.metrics.append((step, metrics))

    def on_samples(self, step, grid_png):
        self.samples.append((step, grid_png))

    def on_train_end(self, result):
        self.end = result


# arch, resolution (28 = the module fixture, 32 = mnist_prepared), loss, extra overrides
MATRIX = [
    *[("dcgan", 32, loss, {}) for loss in ("nonsaturating", "minimax", "hinge", "wgan-gp", "lsgan")],
    *[("mlp", 28, loss, {}) for loss in ("nonsaturating", "minimax", "hinge", "wgan-gp", "lsgan")],
    ("dcgan", 28, "hinge", {"model.conditional": True, "model.cond_mode": "projection", "model.spectral_norm": True}),
    ("dcgan", 32, "wgan-gp", {"model.conditional": True, "model.cond_mode": "concat", "train.n_critic": 2}),
    ("mlp", 32, "lsgan", {"model.conditional": True, "model.cond_mode": "projection"}),
    ("mlp", 28, "nonsaturating", {"model.conditional": True, "model.cond_mode": "concat", "model.spectral_norm": True}),
    ("dcgan", 32, "nonsaturating", {"train.diffaugment": "color,translation,cutout"}),
    ("dcgan", 32, "wgan", {"train.n_critic": 2, "train.d_optimizer.kind": "rmsprop",
                           "train.g_optimizer.kind": "rmsprop"}),
    ("mlp", 28, "nonsaturating", {"train.augment": "ada", "train.ada_interval": 1}),
    # R1 and path length every step, styles always mixed: every regulariser runs in three steps.
    ("stylegan2", 32, "nonsaturating", {"train.r1_every": 1, "train.pl_weight": 2.0, "train.pl_every": 1,
                                        "train.style_mixing": 1.0}),
    ("stylegan2", 32, "hinge", {"model.conditional": True, "model.mapping_layers": 2, "train.augment": "ada"}),
]


def _case_id(arch: str, res: int, loss: str, extra: dict) -> str:
    return "-".join([f"{arch}{res}", loss, *(f"{k.rsplit('.', 1)[1]}={v}" for k, v in extra.items())])


@pytest.mark.parametrize(("arch", "res", "loss", "extra"), MATRIX, ids=[_case_id(*case) for case in MATRIX])
def test_every_architecture_and_loss_trains(arch, res, loss, extra, mnist_prepared, mnist28, tiny_train_config):
    prepared = mnist_prepared if res == 32 else mnist28
    cfg = tiny_train_config(prepared, **{"model.arch": arch, "train.loss": loss, "train.steps": 3,
                                         "train.log_every": 3, "train.checkpoint_every": 3, **extra})
    trainer = Trainer(cfg, resume=False)
    g0, d0 = _params(trainer.G), _params(trainer.D)
    result = trainer.run()

    assert result.steps == 3
    for key in ("d_loss", "g_loss", "d_real_logit", "d_fake_logit", "d_grad_norm", "g_grad_norm"):
        assert torch.isfinite(torch.tensor(result.final[key])), key
    # Both networks learned: every parameter tensor moved. D's output bias is exempt: it cancels out of the
    # wgan-gp loss, and its hinge gradient is zero while all logits lie inside the margin.
    for before, module in ((g0, trainer.G), (d0, trainer.D)):
        still = [k for k, v in module.named_parameters()
                 if torch.equal(before[k], v) and k not in ("head.linear.bias", "out.bias")]
        assert not still
    cond = extra.get("model.conditional", False)
    G = load_generator(result.package_dir)
    labels = torch.arange(4) if cond else None
    assert G(torch.randn(4, 16), labels).shape == (4, 1, res, res)
    assert G.num_classes == (10 if cond else 0)


def test_outputs_callbacks_and_package_round_trip(mnist_prepared, tiny_train_config):
    cfg = tiny_train_config(mnist_prepared, **{"model.conditional": True, "train.steps": 6, "train.log_every": 3,
                                               "train.sample_every": 3, "train.checkpoint_every": 6})
    rec = Recorder()
    trainer = Trainer(cfg, resume=False, callbacks=[rec])
    result = trainer.run()
    out = Path(cfg.train.out_dir)

    assert rec.start["world_size"] == 1 and rec.start["resumed_from"] == 0 and rec.start["g_params"] > 0
    assert [s for s, _ in rec.metrics] == [3, 6]
    expected = {"d_loss", "g_loss", "d_real_logit", "d_fake_logit", "d_grad_norm", "g_grad_norm", "images_per_s",
                "diversity", "ema_decay"}
    assert set(rec.metrics[0][1]) == expected
    assert rec.metrics[-1][1]["images_per_s"] > 0 and rec.metrics[-1][1]["diversity"] > 0
    assert [s for s, _ in rec.samples] == [0, 3, 6]  # step 0: the untrained G, where MLflow's image chart opens
    with Image.open(out / "samples" / "step_000006.png") as grid:  # 8×8 grid of 32 px with 2 px padding
        assert grid.size == (8 * 34 + 2, 8 * 34 + 2)
    assert rec.end == result

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["trained_steps"] == 6 and metrics["g_loss"] == result.final["g_loss"]
    spec = read_spec(out / "generator")
    assert spec["arch"] == "dcgan" and spec["num_classes"] == 10 and spec["image_shape"] == [1, 32, 32]
    assert spec["class_names"] == [str(i) for i in range(10)]
    meta = json.loads((Path(mnist_prepared) / "meta.json").read_text())
    assert spec["metadata"]["steps"] == 6 and spec["metadata"]["config_hash"] == cfg.hash()
    assert spec["metadata"]["data_source"] == meta["source"]
    assert spec["metadata"]["data_content_hash"] == meta["content_hash"]
    assert spec["metadata"]["data_version"] == data_version(mnist_prepared)  # what MLflow lineage tags carry

    assert spec["metadata"]["device"] == trainer.device.type == "cpu"  # the device it ran on, not decided again
    assert len(spec["metadata"]["git_commit"]) in (40, len("unknown"))

    # The package holds the EMA weights: a reloaded G reproduces the in-memory EMA generator exactly.
    z, labels = torch.randn(5, 16), torch.tensor([0, 1, 2, 3, 9])
    G = load_generator(out / "generator")
    with torch.no_grad():
        assert torch.equal(G(z, labels), trainer.ema.module.eval()(z, labels))


def test_ema_differs_from_g_and_tracks_it(mnist_prepared, tiny_train_config):
    cfg = tiny_train_config(mnist_prepared, **{"train.steps": 8, "train.ema_decay": 0.9})
    trainer = Trainer(cfg, resume=False)
    init = _params(trainer.G)
    trainer.run()
    g, ema = _params(trainer.G), dict(trainer.ema.module.named_parameters())

    def dist(a, b):
        return sum(((a[k] - b[k]) ** 2).sum() for k in a).sqrt()

    assert dist(g, ema) > 0, "EMA must average, not copy"
    # Tracking: the average sits between the start and where G is now, closer to G.
    assert dist(g, ema) < dist(g, init)
    assert dist(init, ema) > 0

    # decay 0 turns the average off: the EMA generator is G.
    cfg0 = tiny_train_config(mnist_prepared, **{"train.steps": 3, "train.ema_decay": 0.0,
                                                "train.out_dir": str(Path(cfg.train.out_dir) / "decay0")})
    t0 = Trainer(cfg0, resume=False)
    t0.run()
    assert all(torch.equal(a, b) for a, b in zip(t0.G.parameters(), t0.ema.module.parameters(), strict=True))


def test_diff_augment_is_seeded_differentiable_and_off_when_empty():
    x = (torch.rand(6, 1, 16, 16) * 2 - 1).requires_grad_()  # (B, C, H, W) in [-1, 1]
    policy = "color,translation,cutout"
    a = diff_augment(x, policy, torch.Generator().manual_seed(5))
    b = diff_augment(x, policy, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, diff_augment(x, policy, torch.Generator().manual_seed(6)))
    assert not torch.allclose(a, x)
    a.sum().backward()  # G learns through the augmentation
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert diff_augment(x, "", torch.Generator()) is x


def test_diffaugment_reaches_real_and_fake_in_d_and_fake_in_g(mnist_prepared, tiny_train_config):
    cfg = tiny_train_config(mnist_prepared, **{"train.diffaugment": "translation", "train.n_critic": 2})
    trainer = Trainer(cfg, resume=False)
    seen: list[torch.Tensor] = []
    augment = trainer.augment

    def record(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return augment(x)

    trainer.augment = record
    trainer.train_step(1)
    # Each D update augments its real batch, then the detached fake; the G update augments the fake with its graph.
    assert len(seen) == 2 * 2 + 1
    for i in range(2):
        real, fake = seen[2 * i], seen[2 * i + 1]
        assert torch.equal(real, trainer.real_batch(i)[0]) and not real.requires_grad
        assert fake.shape == real.shape and not fake.requires_grad
    assert seen[4].requires_grad and torch.equal(seen[4], seen[3])  # G's pass: the last D update's fake


def test_conditional_needs_labels(mnist_prepared, tiny_train_config, tmp_path):
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(mnist_prepared, unlabelled)
    for labels in unlabelled.rglob("*.labels.npy"):  # the shards' label files (gan_core.data.shards)
        labels.unlink()
    meta = json.loads((unlabelled / "meta.json").read_text())
    meta["classes"] = None
    for shard in meta["shards"]:
        del shard["md5"]["labels"]
    (unlabelled / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="model.conditional=true needs class labels.*unlabelled"):
        Trainer(tiny_train_config(unlabelled, **{"model.conditional": True}))


def test_batch_larger_than_dataset_is_a_user_error(mnist28, tiny_train_config):
    with pytest.raises(UserError, match="64 images, fewer than one batch of 128"):
        Trainer(tiny_train_config(mnist28, **{"train.batch_size": 128}))


def test_resume_continues_or_starts_fresh(mnist_prepared, tiny_train_config, caplog):
    first = train(tiny_train_config(mnist_prepared, **{"train.steps": 4}))
    assert first.resumed_from == 0

    # More steps, same training settings: continue from the checkpoint at step 4.
    more = train(tiny_train_config(mnist_prepared, **{"train.steps": 6, "train.log_every": 3}))
    assert more.resumed_from == 4 and more.steps == 6 and more.trained_steps == 2
    assert json.loads((Path(more.checkpoint).with_name("last.json")).read_text())["step"] == 6

    # A setting that shapes the weights changed: the checkpoint is not used, and the log says why.
    with caplog.at_level(logging.WARNING, logger="gan_core.training.loop"):
        fresh = train(tiny_train_config(mnist_prepared, **{"train.steps": 6, "train.loss": "hinge"}))
    assert fresh.resumed_from == 0 and fresh.trained_steps == 6
    assert "train.loss: 'nonsaturating' → now 'hinge'" in caplog.text

    # A checkpoint written by other code (e.g. before a fix to the losses) is not resumed either.
    checkpoint = Path(fresh.checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "code_hash": "0" * 16}, checkpoint)
    with caplog.at_level(logging.WARNING, logger="gan_core.training.loop"):
        rerun = train(tiny_train_config(mnist_prepared, **{"train.steps": 7, "train.loss": "hinge"}))
    assert rerun.resumed_from == 0 and rerun.trained_steps == 7
    assert "code: '0000000000000000'" in caplog.text

    # resume=False ignores a matching checkpoint.
    assert train(tiny_train_config(mnist_prepared, **{"train.steps": 6, "train.loss": "hinge"}),
                 resume=False).resumed_from == 0


def test_a_checkpoint_past_the_request_is_not_resumed(mnist_prepared, tiny_train_config, tmp_path, caplog):
    """Fewer steps (or a smaller time budget) than the checkpoint holds train from scratch, so a model labelled
    N steps is an N-step model: its weights equal a fresh N-step run's, bit for bit on CPU."""
    from safetensors.torch import load_file

    def weights(result):
        return load_file(Path(result.package_dir) / "weights.safetensors")

    train(tiny_train_config(mnist_prepared, **{"train.steps": 6, "train.sample_every": 6,
                                               "train.checkpoint_every": 6}))
    with caplog.at_level(logging.WARNING, logger="gan_core.training.loop"):
        shorter = train(tiny_train_config(mnist_prepared, **{"train.steps": 3}))
    assert (shorter.steps, shorter.trained_steps, shorter.resumed_from) == (3, 3, 0)
    assert "it is at step 6, past train.steps=3; training from scratch" in caplog.text
    assert json.loads(Path(shorter.checkpoint).with_name("last.json").read_text())["step"] == 3
    fresh = train(tiny_train_config(mnist_prepared, **{"train.steps": 3, "train.out_dir": str(tmp_path / "fresh")}))
    assert all(torch.equal(a, b) for a, b in zip(weights(shorter).values(), weights(fresh).values(), strict=True))

    # The same for a time budget smaller than the seconds the checkpoint trained: from scratch, stopped by time.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gan_core.training.loop"):
        budget = train(tiny_train_config(mnist_prepared, **{"train.steps": 3, "train.max_seconds": 1e-6}))
    assert (budget.steps, budget.resumed_from, budget.stopped_by_time) == (1, 0, True)
    assert "past train.max_seconds=1e-06" in caplog.text


def test_cli_train_is_an_mlflow_run_prints_result_json_and_reports_user_errors(
    mnist_prepared, tmp_path, capsys, mlflow_store
):
    """`python -m gan_core train` (the DVC stage) logs one MLflow run, as the flow's training does; the package names
    it. A user error fails before any run is opened; --no-mlflow trains without one."""
    from mlflow import MlflowClient

    from gan_core.cli import app, run_app
    from gan_core.packaging.generator import read_spec

    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    common = ["--params", str(params), f"data.prepared_dir={mnist_prepared}", "model.g_width=8", "model.d_width=8",
              "train.batch_size=8", "train.steps=2", "train.device=cpu", f"train.out_dir={tmp_path / 'out'}"]
    assert run_app(app, ["train", *common, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 2 and Path(result["package_dir"], "weights.safetensors").is_file()
    client = MlflowClient(tracking_uri=mlflow_store.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ganops-generator").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("dcgan-nonsaturating-2steps-")
    assert run.data.params["train.steps"] == "2" and "d_loss" in run.data.metrics
    assert {"training_hash", "code_hash", "data_version"} <= set(run.data.tags)
    assert read_spec(result["package_dir"])["metadata"]["mlflow_run_id"] == run.info.run_id

    assert run_app(app, ["train", *common, "train.batch_size=5000"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "fewer than one batch of 5000" in err and "Traceback" not in err
    assert run_app(app, ["train", *common, "train.steps=3", "--no-mlflow"]) == 0
    # Without --json, one line (what `dvc repro` shows); the numbers are in metrics.json.
    assert re.fullmatch(r"trained to step 3 \(1 step in \d+ s on cpu, resumed from step 2\): \S+/generator; "
                        r"metrics in \S+/metrics.json\n", capsys.readouterr().out)
    assert len(client.search_runs([run.info.experiment_id])) == 1  # neither the error nor --no-mlflow made a run


class Started(TrainCallback):
    """Records whether training got as far as its first step (on_train_start comes right before it)."""

    def __init__(self) -> None:
        self.started = False

    def on_train_start(self, info):
        self.started = True


def test_unwritable_out_dir_fails_before_the_first_step(mnist_prepared, tiny_train_config, tmp_path):
    # Tests run as root, where chmod does not stop writes: a regular file where a parent directory should be does.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    out_dir = blocker / "train"
    started = Started()
    with pytest.raises(UserError, match=f"train.out_dir='{out_dir}' is not writable"):
        train(tiny_train_config(mnist_prepared, **{"train.out_dir": str(out_dir), "train.steps": 1000}),
              callbacks=[started])
    assert not started.started, "the check must come before any training step"
    assert blocker.read_text() == "a file, not a directory"


def test_full_disk_fails_before_the_first_step(mnist_prepared, tiny_train_config, tmp_path, monkeypatch):
    monkeypatch.setenv("GANOPS_MIN_FREE_BYTES", str(2**62))  # headroom no disk has: a full disk without filling one
    out_dir = tmp_path / "train"
    started = Started()
    with pytest.raises(UserError, match=f"not enough disk space for the checkpoints.*'{out_dir}'"):
        train(tiny_train_config(mnist_prepared, **{"train.out_dir": str(out_dir), "train.steps": 1000}),
              callbacks=[started])
    assert not started.started
    assert not (out_dir / "checkpoints").exists() and not (out_dir / "samples").exists()


def test_preflight_asks_for_room_for_two_checkpoints(mnist_prepared, tiny_train_config):
    """The estimate must cover what is written: the checkpoint is replaced atomically, so two coexist briefly."""
    result = train(tiny_train_config(mnist_prepared))
    trainer = Trainer(tiny_train_config(mnist_prepared))
    checkpoint = Path(result.checkpoint).stat().st_size
    package = sum(f.stat().st_size for f in Path(result.package_dir).iterdir())
    assert trainer._output_bytes() >= 2 * checkpoint + package


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps"])
def test_absent_training_device_is_one_line_naming_the_available_ones(mnist_prepared, tiny_train_config, device):
    if (device == "cuda" and torch.cuda.is_available()) or (device == "cuda:7" and torch.cuda.device_count() > 7):
        pytest.skip("this machine has that CUDA device")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(UserError, match=f"train.device='{device}' but .*available here: cpu"):
        Trainer(tiny_train_config(mnist_prepared, **{"train.device": device}))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_channels_last_step(mnist_prepared, tiny_train_config):
    cfg = tiny_train_config(mnist_prepared, **{"train.device": "cuda", "train.steps": 3, "train.log_every": 3,
                                               "train.channels_last": True})
    trainer = Trainer(cfg, resume=False)
    assert trainer.runtime.bf16 and trainer.runtime.channels_last
    result = trainer.run()
    assert torch.isfinite(torch.tensor([result.final["d_loss"], result.final["g_loss"]])).all()
    assert load_generator(result.package_dir)(torch.randn(2, 16)).shape == (2, 1, 32, 32)


def test_progress_lines_every_log_every_steps_when_stderr_is_not_a_terminal(
    mnist_prepared, tiny_train_config, caplog
):
    """Under pytest stderr is not a TTY, as in CI, a piped `make demo` or a worker: no bar, a line per window."""
    cfg = tiny_train_config(mnist_prepared, **{"train.steps": 7, "train.log_every": 3})
    with caplog.at_level(logging.INFO, logger="gan_core.training.loop"):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "gan_core.training.loop" and r.levelno == logging.INFO]
    # log_every=3 over 7 steps: steps 3 and 6, then the last step closes its partial window.
    assert [line.split()[1] for line in lines] == ["3/7", "6/7", "7/7"]
    pattern = re.compile(r"^step (\d+)/7 \((\d+)%\)  d_loss=\S+  g_loss=\S+  (\d+) img/s  (ETA|done in) \S+$")
    for line in lines:
        match = pattern.match(line)
        assert match, line
        assert int(match[2]) == 100 * int(match[1]) // 7 and int(match[3]) > 0
    assert "ETA" in lines[0] and lines[-1].split()[-3:-1] == ["done", "in"]


def test_progress_line_says_where_how_fast_and_how_long():
    metrics = {"d_loss": 1.23456, "g_loss": 0.5, "images_per_s": 511.6}
    # 250 of 1000 steps in 50 s → 750 more at the same pace: 150 s.
    assert progress_line(250, 1000, metrics, 50.0, 250) == \
        "step 250/1000 (25%)  d_loss=1.235  g_loss=0.5  512 img/s  ETA 2m30s"
    # A resumed run paces on the steps it trained itself (100 in 50 s), not on the resumed-from step.
    assert progress_line(900, 1000, metrics, 50.0, 100).endswith("ETA 50s")
    assert progress_line(1000, 1000, metrics, 7450.0, 1000).endswith("done in 2h04m")


def test_on_a_terminal_the_bar_shows_progress_and_the_lines_drop_to_debug(
    mnist_prepared, tiny_train_config, caplog, capsys, monkeypatch
):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich's way to treat stderr as a terminal
    cfg = tiny_train_config(mnist_prepared, **{"train.steps": 4, "train.log_every": 2})
    with caplog.at_level(logging.DEBUG, logger="gan_core.training.loop"):
        train(cfg)
    progress = [r for r in caplog.records if r.getMessage().startswith("step ")]
    assert [r.getMessage().split()[1] for r in progress] == ["2/4", "4/4"]
    assert {r.levelno for r in progress} == {logging.DEBUG}  # a log line would tear the live bar
    assert "4/4" in capsys.readouterr().err  # the bar's count


def test_the_data_version_and_lineage_are_handed_in_when_the_caller_has_them(mnist_prepared, tiny_train_config):
    """A flow that prepared the data and stamped its run passes both on: the trainer neither hashes the data again
    nor asks git and the device a second time, and the package says what the run's tags say."""
    cfg = tiny_train_config(mnist_prepared, **{"train.steps": 2})
    version = {"data_version": "f" * 32 + ".dir", "data_version_source": "dvc.lock"}
    stamped = {"data_version": version["data_version"], "git_commit": "c0ffee", "device": "cuda"}
    result = train(cfg, data_version_info=version, lineage=stamped)
    metadata = read_spec(result.package_dir)["metadata"]
    assert {k: metadata[k] for k in stamped} == stamped and "git_dirty" not in metadata
    state = torch.load(result.checkpoint, weights_only=True, map_location="cpu")
    assert state["data_version"] == version["data_version"]
