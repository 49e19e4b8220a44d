"""Train a GAN on the prepared dataset; write checkpoints, sample grids, the generator package and metrics.
(The generic loop: data, device, AMP, EMA, DDP, checkpoints, callbacks, the divergence guard, progress and
resume. What a step does — losses, regularisers, the order of G/D phases — is the family's, gan_core.models.step,
which uses only what its `Loop` protocol lists of the Trainer.)

    python -m gan_core train                                        # params.yaml
    python -m gan_core train train.steps=200 model.arch=mlp         # dotted overrides
    python -m gan_core train recipe=wgan-gp                         # a recipe: configs/recipes/wgan-gp.yaml
    python -m gan_core train train.max_seconds=120 train.steps=100000   # stop at 2 minutes (summed over resumes)
    python -m gan_core train --no-resume                            # ignore {out_dir}/checkpoints/last.pt
    torchrun --standalone --nproc_per_node 2 -m gan_core train      # data parallel (gloo on CPU, NCCL on GPUs)

    from gan_core.training.loop import train
    result = train(cfg, callbacks=[MyCallback()])   # a TrainResult: result.package_dir, result.steps, ...

Outputs under train.out_dir: checkpoints/last.pt (+ last.json), samples/step_XXXXXX.png, generator/ (EMA weights,
safetensors + JSON), metrics.json. Only rank 0 logs, samples and writes files.

Progress: a bar on a terminal; elsewhere (CI, pipes, DVC, Prefect) one INFO line of the `gan_core.training.loop` logger
every train.log_every steps: `step 250/1000 (25%)  d_loss=…  g_loss=…  512 img/s  ETA 2m30s`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.utils import save_image

from gan_core.atomic import atomic_file, write_json
from gan_core.config import Config, OptimizerConfig
from gan_core.data import PreparedDataset
from gan_core.data.feed import ResidentImages, StreamedImages, training_images
from gan_core.data.version import data_version_info as read_data_version
from gan_core.device import choose_runtime, deterministic
from gan_core.errors import UserError, first_line
from gan_core.models import family
from gan_core.packaging import PACKAGES
from gan_core.packaging.classifier import load_classifier, require_shared_classes, stored_judge
from gan_core.packaging.generator import GRID_SAMPLES
from gan_core.packaging.translator import GRID_TRANSLATIONS
from gan_core.preflight import ensure_free_space, ensure_writable_dir
from gan_core.training import distributed
from gan_core.training.augment import AdaptiveAugment, diff_augment
from gan_core.training.batching import EpochBatches
from gan_core.training.callbacks import TrainCallback
from gan_core.training.checkpoint import (
    CHECKPOINT_FILE,
    RESUME_FIX,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from gan_core.training.ema import EMA
from gan_core.training.identity import (
    code_hash,
    first_difference,
    judged_by,
    resumable,
    trained_past,
    training_identity,
)
from gan_core.training.lineage import lineage
from gan_core.training.progress import Progress, progress_line
from gan_core.training.result import TrainResult
from gan_core.training.tasks import TRAINING, PackageContents

log = logging.getLogger(__name__)

NO_BAD_STEP = 2**62  # "no non-finite loss yet": above any step, so the earliest bad step is a plain minimum


class DivergenceError(UserError):
    """A loss became NaN or infinite: training stops, and the last good checkpoint stays as it was."""


def train(cfg: Config, resume: bool = True, callbacks: Sequence[TrainCallback] = (), *,
          data_version_info: Mapping[str, str] | None = None, lineage: Mapping[str, str] | None = None) -> TrainResult:
    """Train per `cfg` (resuming from {train.out_dir}/checkpoints/last.pt when it matches). `data_version_info` and
    `lineage`: as Trainer takes them."""
    return Trainer(cfg, resume=resume, callbacks=callbacks, data_version_info=data_version_info,
                   lineage=lineage).run()


class Trainer:
    """One training run. `train()` is the entry point; the class exposes G, D and the EMA for tests and tools, and is
    the `Loop` a family's step uses (gan_core.models.step).

    `data_version_info`: the prepared data's version as gan_core.data.version.data_version_info gives it, when the
    caller has it already (a flow that prepared the data); `lineage`: the package's lineage metadata, when the caller
    has stamped a run with it (gan_core.training.lineage.lineage). Each is computed here when not given."""

    def __init__(self, cfg: Config, resume: bool = True, callbacks: Sequence[TrainCallback] = (), *,
                 data_version_info: Mapping[str, str] | None = None, lineage: Mapping[str, str] | None = None):
        self.cfg, self.resume, self.callbacks = cfg, resume, list(callbacks)
        tc = cfg.train
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.runtime = choose_runtime(tc, local_rank)
        self.dist = distributed.init_from_env(self.runtime.device)
        self.device = self.runtime.device
        self.out_dir = Path(tc.out_dir)
        self.checkpoint_path = self.out_dir / "checkpoints" / CHECKPOINT_FILE
        self.resumed_from: int | None = None  # set by prepare()
        self.prior_seconds = 0.0  # training seconds of the runs this one resumes (train.max_seconds counts them)
        self._run_started: float | None = None  # perf_counter() at the first step of this run

        self.family = family(cfg.model.arch)
        self.task = TRAINING[self.family.task]
        # Generation trains on one image set (domain ""); translation on domains "a" and "b" of one prepared dir.
        datasets, self.dataset_meta = self.task.load(cfg)
        self.data = next(iter(datasets.values()))
        # The DVC md5, as in every lineage tag: hashed here unless the caller (a flow) hands it over.
        self.data_version_info = dict(data_version_info or read_data_version(cfg.data.prepared_dir))
        self.data_version = self.data_version_info["data_version"]
        self._lineage = dict(lineage) if lineage is not None else None
        self.code_hash = code_hash()
        self.image_shape: tuple[int, int, int] = self.data.shape  # (C, H, W)
        self.num_classes = self._num_classes(self.data)
        self.domains = {name: self._on_device(ds, seed=tc.seed + i) for i, (name, ds) in enumerate(datasets.items())}

        # Same seed on every rank → identical initial weights (broadcast below makes sure).
        torch.manual_seed(tc.seed)
        mc = cfg.model
        self.g_kwargs = self.family.generator_kwargs(mc, self.image_shape, self.num_classes)
        self.d_kwargs = self.family.discriminator_kwargs(mc, tc.loss, self.image_shape, self.num_classes)
        self.G = self.runtime.prepare(self.family.Generator(**self.g_kwargs))
        self.D = self.runtime.prepare(self.family.Discriminator(**self.d_kwargs))
        distributed.broadcast_module(self.G, self.dist)
        distributed.broadcast_module(self.D, self.dist)
        self.G_step, self.D_step = self.runtime.compiled(self.G), self.runtime.compiled(self.D)
        self.opt_g = make_optimizer(self.G, tc.g_optimizer, self.device)
        self.opt_d = make_optimizer(self.D, tc.d_optimizer, self.device)
        self.ema = EMA(self.G, tc.ema_decay)

        # Noise for z, penalties, style mixing and augmentation: reseeded from (seed, rank, step) every step, so a
        # resumed run draws what the killed one would have, and ranks draw different noise.
        self.noise = torch.Generator(device=self.device)
        self.ada: AdaptiveAugment | None = None
        if tc.augment == "ada":
            self.ada = AdaptiveAugment.for_training(tc, self.dist.world_size, self.device,
                                                    average=lambda t: distributed.all_reduce_mean(t, self.dist))
        grid_gen = torch.Generator().manual_seed(tc.seed)
        self.grid_z = torch.randn(GRID_SAMPLES, mc.latent_dim, generator=grid_gen).to(self.device)  # (64, Z)
        self.grid_labels = (torch.arange(GRID_SAMPLES) % self.num_classes).to(self.device) if self.num_classes else None
        # Translation: the first images of each domain (prepare's fixed order mixes the classes) in every grid.
        self.grid_images = {name: self.runtime.layout(_to_unit(d.images.take(torch.arange(GRID_TRANSLATIONS))))
                            for name, d in self.domains.items()}
        self.step_fn = self.family.TrainingStep(self)

        # Per-window accumulators, on the device: synced to the host only every log_every steps.
        self._sums = torch.zeros(4, device=self.device)  # d_loss, g_loss, D(x) logit, D(G(z)) logit
        self._first_bad_step = torch.full((), NO_BAD_STEP, dtype=torch.long, device=self.device)
        self._last_real: torch.Tensor | None = None
        self._last_fake: torch.Tensor | None = None

    # ------------------------------------------------------------------------- setup helpers
    def _num_classes(self, data: PreparedDataset) -> int:
        if not self.cfg.model.conditional:
            return 0
        if data.labels is None or not data.num_classes:
            raise UserError(
                f"model.conditional=true needs class labels, but the dataset at {str(data.path)!r} "
                f"(source {data.meta.get('source')!r}) has none; use a labelled source (mnist5k, digits, a folder "
                "of class subfolders) or set model.conditional=false"
            )
        return data.num_classes

    def _on_device(self, data: PreparedDataset, seed: int) -> _Domain:
        """One image set where training reads it (on the device, in memory or streamed from its shards:
        gan_core.data.feed), with its batch order."""
        images = training_images(data, self.device)  # uint8 batches (B, C, H, W) on self.device
        labels = data.labels.to(images.device) if self.num_classes else None  # int64 (N,)
        batches = EpochBatches(len(data), self.cfg.train.batch_size, seed, self.dist.rank, self.dist.world_size,
                               images.device)
        return _Domain(images, labels, batches)

    def _step_seed(self, step: int) -> int:
        return ((self.cfg.train.seed * 1_000_003 + self.dist.rank) * 1_000_033 + step) % (2**63)

    # ------------------------------------------------------------------------- services for the family's step
    def real_batch(self, k: int, domain: str = "") -> tuple[torch.Tensor, torch.Tensor | None]:
        """The k-th real batch of this rank: images in [-1, 1] (B, C, H, W) and labels (B,) or None.
        `domain`: "a" or "b" for translation; generation has one image set ("")."""
        d = self.domains[domain]
        idx = d.batches.indices(k)
        x = _to_unit(d.images.take(idx))
        d.images.prefetch(d.batches.indices(k + 1))  # streamed on CUDA: read while this batch trains
        y = d.labels[idx].to(self.device, non_blocking=True) if d.labels is not None else None
        return self.runtime.layout(x), y

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees: ADA's adaptive augmentation, else the DiffAugment policy (identity when empty)."""
        if self.ada is not None:
            return self.ada(x, self.noise)
        return diff_augment(x, self.cfg.train.diffaugment, self.noise)

    def optimize(self, net: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimizer step of `net` on `loss`, its gradients averaged over ranks."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(net, self.dist)
        optimizer.step()

    def observe_real_logits(self, logits: torch.Tensor) -> None:
        """D's logits on every real image of this step (all n_critic batches), once per step: ADA steers its
        probability by them."""
        if self.ada is not None:
            self.ada.observe(logits.detach())

    def scale_learning_rates(self, scale: float) -> None:
        """Both optimizers' learning rates set to `scale` × train.g_optimizer.lr / train.d_optimizer.lr."""
        for optimizer, settings in ((self.opt_g, self.cfg.train.g_optimizer), (self.opt_d, self.cfg.train.d_optimizer)):
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * scale

    def sync_buffers(self) -> None:
        """G's and D's buffers (BatchNorm running stats, which saw only this rank's batches) made rank 0's."""
        distributed.broadcast_buffers(self.G, self.dist)
        distributed.broadcast_buffers(self.D, self.dist)

    def judge(self, domain: str) -> nn.Module:
        """The stored judge of `domain` for this data and eval.classifier's settings (a UserError saying how to
        train it when there is none; one naming the unlabelled domain when the data cannot have one), frozen on the
        training device: it scores translations, it is never trained here."""
        reason = judged_by(self.cfg.model_dump(mode="json")) or f"a judge of domain {domain.upper()}"
        require_shared_classes(self.dataset_meta.get("domains", {}), reason)
        info = stored_judge(self.cfg, domain, data_version=self.data_version)
        return load_classifier(info["model_dir"], self.device).requires_grad_(False)

    # ------------------------------------------------------------------------- the step
    def train_step(self, step: int) -> None:
        """One step (step = 1, 2, ...) of the family's training step, then the EMA and the bookkeeping."""
        self.noise.manual_seed(self._step_seed(step))
        out = self.step_fn(step)
        self.ema.update(self.G)

        # ---- bookkeeping on the device (no host sync)
        with torch.no_grad():
            stats = torch.stack([out.d_loss, out.g_loss, out.d_real.float().mean(), out.d_fake.float().mean()])
            self._sums += stats
            bad = ~torch.isfinite(stats[:2]).all()
            self._first_bad_step = torch.where(bad, self._first_bad_step.clamp(max=step), self._first_bad_step)
        self._last_real, self._last_fake = out.real, out.fake

    # ------------------------------------------------------------------------- observation
    def _raise_if_diverged(self) -> None:
        """Stop on a non-finite loss (all ranks together) before anything is written from the broken weights."""
        bad_step = int(distributed.all_reduce_min(self._first_bad_step, self.dist))  # earliest over ranks
        if bad_step != NO_BAD_STEP:
            kept = f"the last good checkpoint {self.checkpoint_path} is unchanged" if self.checkpoint_path.exists() \
                else "no checkpoint was written"
            raise DivergenceError(
                f"training diverged: non-finite loss at step {bad_step} (train.loss={self.cfg.train.loss}, "
                f"d lr={self.cfg.train.d_optimizer.lr}, g lr={self.cfg.train.g_optimizer.lr}); {kept}; "
                "lower the learning rates or try train.loss=hinge / model.spectral_norm=true"
            )

    @torch.no_grad()
    def _window_metrics(self, steps_in_window: int, seconds: float) -> dict[str, float]:
        """Means over the steps since the last log, plus gradient norms and diversity at this step."""
        sums = distributed.all_reduce_mean(self._sums, self.dist) / max(steps_in_window, 1)
        d_loss, g_loss, d_real, d_fake = sums.tolist()  # the one host sync per window
        self._sums.zero_()
        images = steps_in_window * self.cfg.train.batch_size * self.cfg.train.n_critic * self.dist.world_size
        d_grads = [p.grad for p in self.D.parameters() if p.grad is not None]
        g_grads = [p.grad for p in self.G.parameters() if p.grad is not None]
        return {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real_logit": d_real,  # mean raw D(x); sigmoid of it is D's probability for the BCE losses
            "d_fake_logit": d_fake,  # mean raw D(G(z))
            "d_grad_norm": float(nn.utils.get_total_norm(d_grads)) if d_grads else 0.0,
            "g_grad_norm": float(nn.utils.get_total_norm(g_grads)) if g_grads else 0.0,
            "images_per_s": images / max(seconds, 1e-9),
            "diversity": self._diversity(),
            "ema_decay": self.ema.current_decay(),
            **self.step_fn.metrics(),
            **({"ada_p": float(self.ada.p)} if self.ada is not None else {}),
        }

    def _diversity(self) -> float:
        """Mode-collapse signal: mean pairwise L2 distance within the generated batch over that within the real
        batch; near 1 is healthy, falling towards 0 means G draws the same few images."""
        if self._last_fake is None or self._last_fake.shape[0] < 2:
            return float("nan")
        fake = torch.pdist(self._last_fake.float().flatten(1)).mean()
        real = torch.pdist(self._last_real.float().flatten(1)).mean()
        return float(fake / real.clamp_min(1e-8))

    @torch.no_grad()
    def write_samples(self, step: int) -> Path:
        """The EMA generator's sample grid (the family's: 8×8 samples of fixed latents; translation rows of image,
        translation and its way back) as a PNG (atomic)."""
        images, per_row = self.step_fn.sample_grid(self.ema.module)  # (n, C, H, W) in [-1, 1]
        path = self.out_dir / "samples" / f"step_{step:06d}.png"
        with atomic_file(path) as tmp:
            save_image(images.float().cpu(), tmp, nrow=per_row, normalize=True, value_range=(-1, 1), format="png")
        return path

    # ------------------------------------------------------------------------- checkpoints
    def _state(self, step: int, train_seconds: float) -> dict[str, Any]:
        return {
            "step": step,
            "train_seconds": train_seconds,
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "ema": self.ema.state_dict(),
            "g_optimizer": self.opt_g.state_dict(),
            "d_optimizer": self.opt_d.state_dict(),
            "rng": rng_state(),
            "step_state": self.step_fn.state_dict(),
            "augment_state": self.ada.state_dict() if self.ada is not None else {},
            "config": self.cfg.model_dump(mode="json"),
            "data_version": self.data_version,
            "code_hash": self.code_hash,
        }

    def train_seconds(self) -> float:
        """Training seconds so far, over resumes: what train.max_seconds limits and a checkpoint keeps."""
        started = self._run_started
        return self.prior_seconds + (time.perf_counter() - started if started is not None else 0.0)

    def write_checkpoint(self, step: int) -> None:
        train_seconds = self.train_seconds()
        summary = {"step": step, "steps": self.cfg.train.steps, "train_seconds": round(train_seconds, 3),
                   "max_seconds": self.cfg.train.max_seconds, "config_hash": self.cfg.hash("model", "train"),
                   "data_version": self.data_version, "device": self.runtime.describe(),
                   "torch_version": torch.__version__, "written_at": time.time()}
        save_checkpoint(self.checkpoint_path, self._state(step, train_seconds), summary)

    def _try_resume(self) -> int:
        """Load the last checkpoint when it was trained under the same settings; return the step to continue from."""
        if not (self.resume and self.checkpoint_path.exists()):
            return 0
        # On the CPU: RNG states must be CPU tensors (set_rng_state refuses CUDA ones); load_state_dict and the
        # optimizers copy the weights and their state to the networks' device.
        state = load_checkpoint(self.checkpoint_path, map_location="cpu")
        mine = training_identity(self.cfg.model_dump(mode="json"), self.data_version, self.code_hash)
        theirs = training_identity(state["config"], state["data_version"], state.get("code_hash", ""))
        if not resumable(mine, theirs):
            if self.dist.is_main:
                log.warning("not resuming %s: it was trained with %s; starting fresh", self.checkpoint_path,
                            first_difference(theirs, mine))
            return 0
        past = trained_past(mine["train"], theirs["train"], int(state["step"]), float(state.get("train_seconds", 0.0)))
        if past is not None:
            if self.dist.is_main:
                log.warning("not resuming %s: %s; training from scratch", self.checkpoint_path, past)
            return 0
        try:
            self.G.load_state_dict(state["generator"])
            self.D.load_state_dict(state["discriminator"])
            self.ema.load_state_dict(state["ema"])
            self.opt_g.load_state_dict(state["g_optimizer"])
            self.opt_d.load_state_dict(state["d_optimizer"])
            set_rng_state(state["rng"])
            self.step_fn.load_state_dict(state.get("step_state", {}))
            if self.ada is not None:
                self.ada.load_state_dict(state["augment_state"])
            self.prior_seconds = float(state.get("train_seconds", 0.0))  # checkpoints from before max_seconds: 0
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            # Its settings match ours, so the tensors inside were edited or damaged (load_checkpoint checked the
            # structure; shapes and optimizer/RNG contents only show when applied).
            raise UserError(f"{self.checkpoint_path}: cannot be resumed ({type(e).__name__}: {first_line(e)}); "
                            f"{RESUME_FIX}") from e
        if self.dist.is_main:
            log.info("resuming from %s at step %d", self.checkpoint_path, state["step"])
        return int(state["step"])

    # ------------------------------------------------------------------------- the run
    def _preflight(self) -> None:
        """Fail before the first step, not at the first checkpoint: train.out_dir must be a writable directory with
        room for what the run writes there."""
        ensure_writable_dir(self.out_dir, "train.out_dir")
        ensure_free_space(self.out_dir, self._output_bytes(), "checkpoints, samples and generator package")

    def _output_bytes(self) -> int:
        """About the most train.out_dir needs: last.pt (G, D, EMA, two Adam moments per parameter) twice over,
        since the new checkpoint is written beside the old before replacing it, plus the package and a grid."""
        def size(module: nn.Module) -> int:
            return sum(t.numel() * t.element_size() for t in module.state_dict().values())

        g, d = size(self.G), size(self.D)
        checkpoint = 4 * g + 3 * d  # G + EMA + 2 moments; D + 2 moments
        grid = GRID_SAMPLES * 3 * math.prod(self.image_shape)
        return 2 * checkpoint + 2 * g + grid + 2**20

    def prepare(self) -> int:
        """Check train.out_dir and load the checkpoint to resume from (once); return the step to continue from.

        run() calls it; call it first to fail on unwritable outputs or a damaged checkpoint before anything else
        (an MLflow run) is started."""
        if self.resumed_from is None:
            if self.dist.is_main:  # only rank 0 writes; when it fails here, torchrun stops the other ranks
                self._preflight()
            self.resumed_from = self._try_resume()
        return self.resumed_from

    def run(self) -> TrainResult:
        try:
            with deterministic(self.device.type == "cpu"):
                return self._run()
        finally:
            distributed.shutdown(self.dist)

    def _run(self) -> TrainResult:
        tc = self.cfg.train
        main = self.dist.is_main
        start = self.prepare()
        if main:
            info = {
                "device": self.runtime.describe(), "world_size": self.dist.world_size,
                "g_params": sum(p.numel() for p in self.G.parameters()),
                "d_params": sum(p.numel() for p in self.D.parameters()),
                "dataset": self.dataset_meta, "data_version": self.data_version, "resumed_from": start,
            }
            for cb in self.callbacks:
                cb.on_train_start(info)
            if start == 0:
                # What G draws before training (the fixed latents through the EMA copy in eval mode: no random
                # draw, no weight changes): MLflow's image chart opens at step 0 and shows nothing without it.
                first_grid = self.write_samples(0)
                for cb in self.callbacks:
                    cb.on_samples(0, first_grid)
        metrics: dict[str, float] = {}
        t_run = t_window = self._run_started = time.perf_counter()
        window_start = reached = start
        last_grid: Path | None = None
        out_of_time = self._out_of_time(0.0)  # a resumed run may have spent its budget already
        with Progress(main, start, tc.steps) as bar:
            for step in range(start + 1, tc.steps + 1):
                if out_of_time:
                    break
                self.train_step(step)
                bar.advance()
                reached = step
                # A run stopped by train.max_seconds ends like one that reached train.steps: last log window,
                # sample grid and checkpoint at this step, then the package.
                out_of_time = self._out_of_time(time.perf_counter() - t_run)
                last = step == tc.steps or out_of_time
                due_log = step % tc.log_every == 0 or last
                due_samples = step % tc.sample_every == 0 or last
                due_checkpoint = step % tc.checkpoint_every == 0 or last
                if due_log or due_samples or due_checkpoint:
                    # Every rank takes part (the check is collective); nothing is written from broken weights.
                    self._raise_if_diverged()
                if due_log:
                    now = time.perf_counter()
                    metrics = self._window_metrics(step - window_start, now - t_window)
                    t_window, window_start = now, step
                    if main:
                        # The bar shows progress on a terminal; elsewhere (CI, a piped `make demo`, a worker's log,
                        # a DVC stage) this line is the only sign of life during a run of minutes.
                        line = progress_line(step, tc.steps, metrics, now - t_run, step - start)
                        log.log(logging.DEBUG if bar.shown else logging.INFO, "%s", line)
                        bar.show_losses(metrics)
                        for cb in self.callbacks:
                            cb.on_metrics(step, metrics)
                if due_samples and main:
                    last_grid = self.write_samples(step)
                    for cb in self.callbacks:
                        cb.on_samples(step, last_grid)
                        cb.on_generator(step, self.ema.module)
                if due_checkpoint and main:
                    self.write_checkpoint(step)
        wall = time.perf_counter() - t_run
        if out_of_time and main:
            log.info("train.max_seconds=%s reached at step %d of %d", tc.max_seconds, reached, tc.steps)
        result = self._finish(metrics, reached, wall, last_grid, stopped_by_time=out_of_time and reached < tc.steps)
        if main:
            for cb in self.callbacks:
                cb.on_train_end(result)
        return result

    def _out_of_time(self, seconds: float) -> bool:
        """train.max_seconds spent (this run's `seconds` plus the resumed runs'). Decided by rank 0 and shared, so
        every rank stops at the same step (their clocks differ; a rank that stopped alone would hang the others)."""
        budget = self.cfg.train.max_seconds
        if budget is None:
            return False
        spent = self.prior_seconds + seconds >= budget
        if not self.dist.enabled:
            return spent
        flag = torch.tensor(float(spent), device=self.device)  # a sync per step, as the gradient all-reduce is
        distributed.broadcast_tensor(flag, self.dist)
        return bool(flag.item())

    def _finish(self, metrics: dict[str, float], reached: int, wall: float, grid: Path | None,
                stopped_by_time: bool = False) -> TrainResult:
        """Write the generator package (EMA weights) and metrics.json; `reached` is the step the loop ended at
        (the resumed step when it ran none)."""
        tc = self.cfg.train
        steps = reached
        trained = reached - self.resumed_from
        images = trained * tc.batch_size * tc.n_critic * self.dist.world_size
        package_dir = self.out_dir / "generator"
        if self.dist.is_main and grid is None:
            grid = self.write_samples(steps)
        result = TrainResult(
            steps=steps, trained_steps=trained, resumed_from=self.resumed_from, wall_time_s=wall,
            train_seconds=self.prior_seconds + wall, stopped_by_time=stopped_by_time,
            images_per_s=images / wall if trained and wall > 0 else 0.0, final=metrics,
            package_dir=str(package_dir), metrics_path=str(self.out_dir / "metrics.json"),
            samples_dir=str(self.out_dir / "samples"), last_samples=str(grid) if grid else None,
            checkpoint=str(self.checkpoint_path), device=self.runtime.describe(), world_size=self.dist.world_size,
        )
        if self.dist.is_main:
            PACKAGES[self.family.task].save(self.ema.module, self._package_spec(steps, stopped_by_time), package_dir)
            write_json(Path(result.metrics_path), result.summary())
        return result

    def _package_lineage(self) -> dict[str, str]:
        """The lineage handed in, else this run's: its data version and the device it ran on."""
        if self._lineage is not None:
            return self._lineage
        return lineage(self.cfg, data_version_info=self.data_version_info, device=self.runtime.device.type)

    def _package_spec(self, steps: int, stopped_by_time: bool = False) -> dict[str, Any]:
        # Lineage: data version (the DVC md5), data source, git commit, config hash, torch version, device.
        metadata: dict[str, Any] = {
            **self._package_lineage(),
            "recipe": self.cfg.recipe,
            "steps": steps,  # the step reached: train.steps, or where train.max_seconds stopped it
            "max_seconds": self.cfg.train.max_seconds,
            "stopped_by": "max_seconds" if stopped_by_time else "steps",
            "loss": self.cfg.train.loss,
            "ema_decay": self.cfg.train.ema_decay,
            "data_content_hash": self.data.meta.get("content_hash"),
        }
        for cb in self.callbacks:
            metadata.update(cb.package_metadata())
        return self.task.package_spec(PackageContents(
            arch=self.cfg.model.arch, kwargs=self.g_kwargs, image_shape=self.image_shape,
            latent_dim=self.cfg.model.latent_dim, num_classes=self.num_classes, class_names=self.data.classes,
            dataset_meta=self.dataset_meta, metadata=metadata))


# ----------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class _Domain:
    images: ResidentImages | StreamedImages  # uint8 (N, C, H, W) batches
    labels: torch.Tensor | None  # int64 (N,), for conditional generation
    batches: EpochBatches


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def make_optimizer(net: nn.Module, settings: OptimizerConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam (betas as set) or RMSprop (the original WGAN's), fused into one kernel per step on GPUs."""
    fused = (device.type == "cuda") or None
    if settings.kind == "rmsprop":
        return torch.optim.RMSprop(net.parameters(), lr=settings.lr)
    return torch.optim.Adam(net.parameters(), lr=settings.lr, betas=settings.betas, fused=fused)
