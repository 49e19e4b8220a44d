"""What the families share: how a label enters G (one-hot beside the latent) and D (projection or concat),
and optional spectral norm on D's layers."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def maybe_spectral_norm(enabled: bool) -> Callable[[nn.Module], nn.Module]:
    """spectral_norm when enabled, else the identity: `sn = maybe_spectral_norm(flag); sn(nn.Conv2d(...))`."""
    return spectral_norm if enabled else (lambda m: m)


class LabelInput(nn.Module):
    """Concatenates the one-hot label to the latent: (B, Z) + (B,) → (B, Z + K). Identity when unconditional.

    One-hot, not a learned N(0, 1) embedding of Z dims: that carried as much input energy as z, and G drew each
    class nearly the same whatever z (conditional DCGAN on mnist5k, 2,000 steps: fid_lenet 174 with speckled
    strokes; one-hot: 3.4, class_accuracy 0.99; seed 1: 122 against 5.2).
    """

    def __init__(self, latent_dim: int, num_classes: int):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes

    @property
    def out_dim(self) -> int:
        return self.latent_dim + self.num_classes if self.num_classes else 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if not self.num_classes:
            return z
        if labels is None:
            raise ValueError("this generator is conditional: pass labels (B,) with the latents")
        return torch.cat([z, nn.functional.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)


class ConditionalHead(nn.Module):
    """Maps D's features (B, F) to a logit (B,); with classes, adds the projection term <embed(y), features>.

    Projection discriminator (Miyato & Koyama 2018): logit = w·φ(x) + embed(y)·φ(x).
    The class embedding starts at the scale of the DCGAN init (N(0, 0.02), as w), not nn.Embedding's N(0, 1): at
    N(0, 1) the projection term starts ~50× larger than w·φ(x), so D separates real from fake through the label
    path in a few steps and G's gradient saturates (measured: D(x) logit +11.9, D(G(z)) −7.3, fid_lenet 680).
    """

    def __init__(self, features: int, num_classes: int, projection: bool):
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if projection else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        logit = self.linear(features).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is conditional: pass labels (B,) with the images")
            logit = logit + (self.embed(labels) * features).sum(dim=1)
        return logit


def concat_labels(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """concat mode: one-hot label planes appended to the image, (B, C, H, W) → (B, C + K, H, W)."""
    if labels is None:
        raise ValueError("this discriminator is conditional: pass labels (B,) with the images")
    onehot = nn.functional.one_hot(labels, num_classes).to(x.dtype)  # (B, K)
    planes = onehot[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
    return torch.cat([x, planes], dim=1)
