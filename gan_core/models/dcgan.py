"""DCGAN, after pytorch/examples' dcgan: G is ConvTranspose + BatchNorm + ReLU with a Tanh output, grown from a
4×4 (or 7×7) seed by doublings; D is Conv + LeakyReLU, its norm chosen per loss (see discriminator_options)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from gan_core.config import ModelConfig
from gan_core.config.catalogue import family_info
from gan_core.errors import UserError
from gan_core.models.conditioning import ConditionalHead, LabelInput, concat_labels, maybe_spectral_norm
from gan_core.models.step import AdversarialStep

# DCGAN grows from a 4×4 (or 7×7) seed by doublings: the sides that reaches with ≥ 2 doublings (its catalogue entry).
DCGAN_RESOLUTIONS = family_info("dcgan").supports.resolutions or ()
DNorm = Literal["batch", "layer", "none"]


def _dcgan_plan(resolution: int) -> tuple[int, int]:
    """(seed side, number of ×2 upsamplings) for a DCGAN of this resolution."""
    if resolution not in DCGAN_RESOLUTIONS:
        allowed = ", ".join(str(r) for r in DCGAN_RESOLUTIONS)
        raise UserError(f"DCGAN cannot make {resolution}px images; data.resolution must be one of {allowed}")
    seed = 7 if resolution % 7 == 0 else 4
    return seed, int(math.log2(resolution // seed))


def _init_dcgan(module: nn.Module) -> None:
    """DCGAN paper init: conv weights ~ N(0, 0.02), norm scales ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int, num_classes: int = 0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        seed, ups = _dcgan_plan(resolution)
        self.label_input = LabelInput(latent_dim, num_classes)
        in_dim = self.label_input.out_dim or latent_dim
        ch = width * 2 ** (ups - 1)
        # (B, in, 1, 1) → (B, ch, seed, seed)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, ch, seed, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(ups - 1):  # each block doubles the side and halves the channels
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]  # (B, C, H, W)
        self.net = nn.Sequential(*layers)
        _init_dcgan(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.label_input(z, labels)
        return self.net(h[:, :, None, None])


class Discriminator(nn.Module):
    def __init__(
        self,
        channels: int,
        resolution: int,
        width: int,
        num_classes: int = 0,
        cond_mode: Literal["projection", "concat"] = "projection",
        norm: DNorm = "batch",
        spectral_norm: bool = False,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.concat = bool(num_classes) and cond_mode == "concat"
        seed, downs = _dcgan_plan(resolution)
        sn = maybe_spectral_norm(spectral_norm)
        in_ch = channels + (num_classes if self.concat else 0)
        # (B, C, H, W) → (B, width, H/2, W/2); no norm on the first layer, as in DCGAN.
        layers: list[nn.Module] = [sn(nn.Conv2d(in_ch, width, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, True)]
        ch = width
        for _ in range(downs - 1):
            layers += [sn(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False)), *_norm(norm, ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        self.features = nn.Sequential(*layers)  # (B, ch, seed, seed)
        if num_classes and not self.concat:
            # Projection needs a feature vector: the (B, ch) sum over the seed grid.
            self.head: nn.Module = ConditionalHead(ch, num_classes, projection=True)
            self.head.linear = sn(self.head.linear)
        else:
            self.head = sn(nn.Conv2d(ch, 1, seed, 1, 0, bias=False))  # (B, 1, 1, 1), as in pytorch/examples
        _init_dcgan(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.concat:
            x = concat_labels(x, labels, self.num_classes)
        h = self.features(x)
        if isinstance(self.head, ConditionalHead):
            return self.head(h.sum(dim=(2, 3)), labels)
        return self.head(h).flatten()  # (B,)


def _norm(kind: DNorm, ch: int) -> list[nn.Module]:
    """BatchNorm as in DCGAN; LayerNorm (GroupNorm with one group) where a gradient penalty is used."""
    if kind == "batch":
        return [nn.BatchNorm2d(ch)]
    if kind == "layer":
        return [nn.GroupNorm(1, ch)]
    return []


def discriminator_options(model: ModelConfig, loss: str) -> dict[str, Any]:
    """BatchNorm couples samples in a batch, which breaks the per-sample gradient penalty of wgan-gp, so that loss
    gets LayerNorm; spectral norm replaces normalisation altogether."""
    return {"norm": "none" if model.spectral_norm else "layer" if loss == "wgan-gp" else "batch"}


def generator_options(model: ModelConfig) -> dict[str, Any]:
    """No options beyond the shared ones."""
    return {}


# The standard step: n_critic D updates, then one G update, with any loss of gan_core.models.losses.
TrainingStep = AdversarialStep
