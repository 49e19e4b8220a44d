"""A GAN family that only the tests use (never shipped): a linear G (z → image through one Linear and a Tanh) and a
linear D (image → one logit), trained by the shared adversarial step. tests/test_new_family.py registers it to show
that a family is one module plus one catalogue entry: it trains, packages, evaluates, registers and serves through
the retrain flow with no other edit."""

from __future__ import annotations

import math

import torch
from torch import nn

from gan_core.config.catalogue import GENERATION, FamilyInfo, Supports
from gan_core.models.step import AdversarialStep

ENTRY = FamilyInfo("linear", module="linear_family", task=GENERATION,
                   supports=Supports(conditional=False, cond_modes=(), spectral_norm=False))
"""Its catalogue entry: no labels and no spectral norm (its D has neither), every loss, any resolution."""


class Generator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int, num_classes: int = 0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes  # what the package loader and sampling read
        self.image_shape = (channels, resolution, resolution)
        self.net = nn.Sequential(nn.Linear(latent_dim, math.prod(self.image_shape)), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)  # (B, C, H, W) in [-1, 1]


class Discriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, width: int, num_classes: int = 0,
                 cond_mode: str = "projection", spectral_norm: bool = False):
        super().__init__()
        self.net = nn.Linear(channels * resolution * resolution, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x.flatten(1)).flatten()  # (B,) logits


TrainingStep = AdversarialStep
