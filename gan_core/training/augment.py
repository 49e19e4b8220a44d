"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image D sees, real and fake,
so D cannot memorise a small dataset while G still gets gradients through the augmentation.

    x = diff_augment(x, "color,translation,cutout", generator=g)   # (B, C, H, W) in [-1, 1] → same shape

Ported from mit-han-lab/data-efficient-gans (BSD-2-Clause, DiffAugment_pytorch.py), with an explicit
torch.Generator so a seeded run (and a resumed one) draws the same augmentations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.functional import pad

if TYPE_CHECKING:
    from gan_core.config import TrainConfig


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the comma-separated policy (color, translation, cutout) to a batch (B, C, H, W); '' is identity."""
    for name in filter(None, policy.split(",")):
        for fn in _AUGMENTS[name]:
            x = fn(x, generator)
    return x


def _rand(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """One uniform [0, 1) draw per image, (B, 1, 1, 1)."""
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device, generator=g)


def _brightness(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return x + (_rand(x, g) - 0.5)


def _saturation(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, g) * 2) + mean


def _contrast(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, g) + 0.5) + mean


def _translation(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its side, filling with zeros (mid-grey in [-1, 1])."""
    b, _, h, w = x.shape
    sx, sy = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device, generator=g)
    ty = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device, generator=g)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(h, device=x.device), torch.arange(w, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = pad(x, [1, 1, 1, 1])  # (B, C, H+2, W+2)
    return padded.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    """Zero a random square of `ratio` × the side in each image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device, generator=g)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device, generator=g)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(ch, device=x.device), torch.arange(cw, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + ox - ch // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy - cw // 2, min=0, max=w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


_AUGMENTS = {
    "color": (_brightness, _saturation, _contrast),
    "translation": (_translation,),
    "cutout": (_cutout,),
}


class AdaptiveAugment:
    """ADA (Karras et al. 2020, stylegan2-ada): augment what D sees with strength p, and steer p so that
    r_t = E[sign(D(real))] — how sure D is of the training images, a sign of overfitting — stays near `target`.

        ada = AdaptiveAugment.for_training(cfg.train, world_size, device, average)   # as the trainer builds it
        x = ada(x, generator)              # each operation applied to each image independently with probability p
        ada.observe(d_real_logits)         # once per step, all its real logits; every `interval` steps p moves by
                                           # ±batch_size·interval/(kimg·1000), batch_size the global batch

    As the paper's pipeline (its augment.py draws `rand(batch) < prob·p` per operation): each of the policy's
    operations — DiffAugment's brightness, saturation, contrast, translation and cutout — is applied to each image on
    its own draw, so an image passes untouched with probability (1 − p)^k for k operations (k = 5 for the whole
    policy). D then still sees the clean distribution with weight > 0 at any p < 1, which is what the paper's
    argument that such augmentations do not leak into G rests on. The operations are DiffAugment's, not the paper's
    18, so p values are not comparable with the paper's: its "p below ≈ 0.8 is safe" was measured on its own
    pipeline, not on this one.

    r_t is the share of real images D puts on the real side of a decision boundary at 0, minus the share it puts on
    the other side: a measure only where D's boundary is 0 (the config refuses ada with lsgan, wgan and wgan-gp).
    p lives on the device (no host sync); `state_dict` holds it and the pending signs, so a resumed run continues.
    Under DDP the sums of signs and counts are averaged over ranks before p moves, so r_t is the mean over every
    rank's images, as the reference's.
    """

    def __init__(self, policy: str, target: float, batch_size: int, interval: int, kimg: float,
                 device: torch.device, average: Callable[[torch.Tensor], torch.Tensor] = lambda t: t):
        """`batch_size`: real images D sees per step over all processes and critic updates (the reference's
        global batch); `interval`: steps between updates of p; `kimg`: thousands of images for p to go 0 → 1."""
        self.policy = policy or "color,translation,cutout"
        self.operations = [op for name in filter(None, self.policy.split(",")) for op in _AUGMENTS[name]]
        self.target, self.interval = target, interval
        self.adjust = batch_size * interval / (kimg * 1000)  # the most p moves per update
        self.average = average
        self.p = torch.zeros((), device=device)
        self._signs = torch.zeros(2, device=device)  # sum of sign(D(real)), count
        self._steps = 0

    @classmethod
    def for_training(cls, train: TrainConfig, world_size: int, device: torch.device,
                     average: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> AdaptiveAugment:
        """ADA as train.* sets it: a step shows D n_critic real batches of train.batch_size on each of
        world_size processes."""
        images_per_step = train.batch_size * train.n_critic * world_size
        return cls(train.diffaugment, train.ada_target, images_per_step, train.ada_interval, train.ada_kimg,
                   device, average)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        for op in self.operations:
            augmented = op(x, generator)
            chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator) < self.p  # (B, 1, 1, 1)
            x = torch.where(chosen, augmented, x)
        return x

    @torch.no_grad()
    def observe(self, real_logits: torch.Tensor) -> None:
        self._signs += torch.stack([real_logits.float().sign().sum(), real_logits.new_tensor(real_logits.numel(),
                                                                                           dtype=torch.float)])
        self._steps += 1
        if self._steps % self.interval == 0:
            total, count = self.average(self._signs).unbind()
            r_t = total / count.clamp_min(1)
            self.p = (self.p + (r_t - self.target).sign() * self.adjust).clamp(0.0, 1.0)
            self._signs.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p.detach().cpu(), "signs": self._signs.detach().cpu(), "steps": self._steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p = state["p"].to(self.p.device)
        self._signs = state["signs"].to(self._signs.device)
        self._steps = int(state["steps"])
