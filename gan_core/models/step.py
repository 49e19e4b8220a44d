"""The family interface: how one family trains one step, and what it may use of the loop. The loop
(gan_core.training.loop) owns everything else — data, device, AMP, EMA, DDP, checkpoints, callbacks, the divergence
guard, progress and resume — and offers a step only what `Loop` lists.

    step = family(arch).TrainingStep(loop)        # gan_core.models.family
    out = step(k)                                 # one G update (k = 1, 2, ...) and its D updates → StepOutput
    step.metrics()                                # the family's own numbers for the log window (r1, pl, ...)
    step.state_dict() / step.load_state_dict()    # what a checkpoint must hold beyond networks and optimizers
    images, per_row = step.sample_grid(G)         # the sample grid of G (the loop passes its EMA copy)

As stylegan2-ada-pytorch splits training_loop.py from loss.py, and pytorch-CycleGAN-and-pix2pix's models define
`optimize_parameters` for one shared loop: AdversarialStep is the step of the MLP GAN and DCGAN (n_critic D
updates, then one G update through the updated D, with any loss of gan_core.models.losses), and families override its
phases — the fake batch (`generate`), D's regularisers (`d_regularizer`) and G's (`g_regularizer`). A family of
another task (cyclegan: image → image, two G and two D packed as one G and one D module) writes its own class with
the FamilyStep methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from gan_core.config import Config
from gan_core.device import Runtime
from gan_core.models.losses import discriminator_loss, generator_loss, gradient_penalty


@dataclass
class StepOutput:
    """What the loop books after a step: losses and mean D logits (device tensors, no host sync), and the last
    real and fake batches (for the diversity signal)."""

    d_loss: torch.Tensor
    g_loss: torch.Tensor
    d_real: torch.Tensor  # D's logits on the last real batch (B,)
    d_fake: torch.Tensor  # D's logits on the last fake batch (B,)
    real: torch.Tensor
    fake: torch.Tensor


class Loop(Protocol):
    """What a family's training step may use of the loop (gan_core.training.loop.Trainer provides it): the contract
    a family author reads first. Anything else of the loop is its own business."""

    cfg: Config
    """The settings (read only): train.* for the loss, weights and schedules, model.* for latent_dim."""
    device: torch.device
    runtime: Runtime
    """`runtime.autocast()` around forward passes (bf16 on CUDA)."""
    G: nn.Module
    """The generator: its parameters, `requires_grad_`, and a family's own submodules (stylegan2's mapping)."""
    D: nn.Module
    G_step: nn.Module
    """G for forward passes in training: a torch.compile'd view of G when train.compile is on, else G."""
    D_step: nn.Module
    opt_g: torch.optim.Optimizer
    """G's optimizer, to pass to optimize(); its learning rate moves only through scale_learning_rates()."""
    opt_d: torch.optim.Optimizer
    noise: torch.Generator
    """Every random draw of a step (z, penalties, mixing, pools): reseeded per step, so a resumed run draws alike."""
    grid_z: torch.Tensor
    """The fixed latents (64, Z) of every sample grid, and their labels (64,) for a conditional G."""
    grid_labels: torch.Tensor | None
    grid_images: dict[str, torch.Tensor]
    """Translation: the fixed real images of each domain ("a", "b") in every sample grid."""

    def real_batch(self, k: int, domain: str = "") -> tuple[torch.Tensor, torch.Tensor | None]:
        """The k-th real batch of this rank: images in [-1, 1] (B, C, H, W) and labels (B,) or None."""
        ...

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees of a batch (DiffAugment or ADA; the identity when off)."""
        ...

    def optimize(self, net: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimizer step of `net` on `loss`, gradients averaged over ranks."""
        ...

    def observe_real_logits(self, logits: torch.Tensor) -> None:
        """D's logits on a real batch, once per step (ADA steers by them)."""
        ...

    def scale_learning_rates(self, scale: float) -> None:
        """Both optimizers' learning rates set to `scale` × their configured rate (a schedule)."""
        ...

    def sync_buffers(self) -> None:
        """G's and D's buffers (BatchNorm running stats) made rank 0's on every rank, as DDP does; no-op alone."""
        ...

    def judge(self, domain: str) -> nn.Module:
        """The judge of `domain` ("a", "b"): a classifier of its classes that the `classifier` step trains beside
        evaluation's (gan_core.packaging.classifier), frozen: eval mode, no gradients to its weights, on the training
        device. `.classify(x)`: images (B, C, H, W) in [-1, 1], any side → logits (B, K), with gradients to x.
        A family that reads judges makes gan_core.training.identity.judged_by name the setting that turns them on,
        so that a different judge is a different training."""
        ...


class FamilyStep(Protocol):
    """What the loop calls on a family's training step."""

    def __init__(self, loop: Loop) -> None: ...
    def __call__(self, step: int) -> StepOutput: ...
    def metrics(self) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def sample_grid(self, G: torch.nn.Module) -> tuple[torch.Tensor, int]: ...


class AdversarialStep:
    """n_critic D updates (real up, fake down), then one G update through the updated D."""

    r1_gamma_default = 0.0  # families with R1 by default (stylegan2) override this

    def __init__(self, loop: Loop):
        self.loop = loop
        self.tc = loop.cfg.train
        self.r1_gamma = self.tc.r1_gamma if self.tc.r1_gamma is not None else self.r1_gamma_default
        self._r1 = torch.zeros((), device=loop.device)  # the last R1 penalty, for the log

    # ------------------------------------------------------------------------- phases a family may override
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None, step: int) -> torch.Tensor:
        """The fake batch (B, C, H, W) for latents z (B, Z)."""
        return self.loop.G_step(z, labels)

    def d_regularizer(self, step: int, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None,
                      seen: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor | None:
        """Added to D's loss (`seen`: the real and fake images as D was shown them, augmented).

        wgan-gp's gradient penalty, between the images D was shown: with augmentation the critic's loss is a WGAN
        between the augmented distributions, so that is where its Lipschitz bound belongs (no reference combines
        GP with DiffAugment/ADA; without augmentation `seen` is the plain batch, as in gan_mnist.py).

        Lazy R1 when r1_gamma > 0: every r1_every steps, × r1_every so its strength is an every-step penalty's
        (stylegan2-ada's gain = D_reg_interval), w.r.t. the image before augmentation with D run through it (its
        loss.py). It is added to that step's D loss, where the reference runs a separate Dreg optimizer step and
        so scales Adam's lr by k/(k+1) and its betas to the power k/(k+1) (k = r1_every) to keep D's rate over k
        steps. Folded in, there is no extra step to correct for: D's lr is train.d_optimizer.lr as set, ≈ 6 % above
        the reference's main-step lr at k = 16 (16/17 of the paper's lr matches it exactly)."""
        loop, tc = self.loop, self.tc
        penalty = None
        if tc.loss == "wgan-gp":
            # Through the uncompiled D: torch.compile does not support the double backward.
            penalty = tc.gp_weight * gradient_penalty(loop.D, seen[0], seen[1].detach(), labels, loop.noise)
        if self.r1_gamma > 0 and step % tc.r1_every == 0:
            r1 = r1_penalty(loop.D, real.detach(), labels, loop.augment)
            self._r1 = r1.detach()
            term = (self.r1_gamma / 2) * r1 * tc.r1_every
            penalty = term if penalty is None else penalty + term
        return penalty

    def g_regularizer(self, step: int, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Added to G's loss (stylegan2's path-length regulariser)."""
        return None

    def after_d_update(self) -> None:
        """wgan: clip every critic weight to ±clip_value (the original WGAN's Lipschitz constraint)."""
        if self.tc.loss == "wgan":
            with torch.no_grad():
                for p in self.loop.D.parameters():
                    p.clamp_(-self.tc.clip_value, self.tc.clip_value)

    def after_g_update(self, step: int) -> None:
        """Once per step, after G's optimizer step."""

    def metrics(self) -> dict[str, float]:
        """The family's own numbers for this log window (one host sync, at log time)."""
        return {"r1_penalty": float(self._r1)} if self.r1_gamma > 0 else {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    @torch.no_grad()
    def sample_grid(self, G: torch.nn.Module) -> tuple[torch.Tensor, int]:
        """G's images for the loop's fixed latents (and cycled labels), 8 per row."""
        return G(self.loop.grid_z, self.loop.grid_labels), 8

    # ------------------------------------------------------------------------- the step
    def __call__(self, step: int) -> StepOutput:
        loop, tc = self.loop, self.tc
        batch = tc.batch_size

        # ---- D update(s): real up, fake down; fake is detached so only D learns here.
        loop.D.requires_grad_(True)
        real_logits = []  # D's logits on every real batch of the step: what ADA reads
        for i in range(tc.n_critic):
            real, labels = loop.real_batch((step - 1) * tc.n_critic + i)
            z = torch.randn(batch, loop.cfg.model.latent_dim, device=loop.device, generator=loop.noise)  # (B, Z)
            # Fake images take the real batch's labels: the class mix G is trained on matches the data's.
            with loop.runtime.autocast():
                fake = self.generate(z, labels, step)  # (B, C, H, W)
                seen = (loop.augment(real), loop.augment(fake.detach()))  # what D is shown
                d_real = loop.D_step(seen[0], labels)  # (B,) logits
                d_fake = loop.D_step(seen[1], labels)
                d_loss = discriminator_loss(tc.loss, d_real, d_fake)
            penalty = self.d_regularizer(step, real, fake, labels, seen)
            if penalty is not None:
                d_loss = d_loss + penalty
            loop.optimize(loop.D, loop.opt_d, d_loss)
            self.after_d_update()
            real_logits.append(d_real.detach())
        loop.observe_real_logits(torch.cat(real_logits))

        # ---- G update: the same fake, through the updated D; D's weights are frozen so no D grads are computed.
        loop.D.requires_grad_(False)
        with loop.runtime.autocast():
            g_loss = generator_loss(tc.loss, loop.D_step(loop.augment(fake), labels))
        penalty = self.g_regularizer(step, z, labels)
        loop.optimize(loop.G, loop.opt_g, g_loss if penalty is None else g_loss + penalty)
        self.after_g_update(step)
        # BatchNorm running stats saw only this rank's batches (D's in both passes): take rank 0's, as DDP does.
        loop.sync_buffers()
        return StepOutput(d_loss.detach(), g_loss.detach(), d_real.detach(), d_fake.detach(), real, fake.detach())


def r1_penalty(
    discriminator: torch.nn.Module,
    real: torch.Tensor,
    labels: torch.Tensor | None,
    augment: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[‖∇ₓD(aug(x))‖²] on real images x, in fp32 (a double backward; no autocast)."""
    real = real.float().requires_grad_(True)
    seen = augment(real)
    out = discriminator(seen, labels) if labels is not None else discriminator(seen)
    (grad,) = torch.autograd.grad(out.float().sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()
