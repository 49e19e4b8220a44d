"""The networks: the vanilla MLP GAN and DCGAN, each optionally conditional, built by name.

    G = build_generator("dcgan", latent_dim=64, channels=1, resolution=32, width=64, num_classes=0)
    D = build_discriminator("dcgan", channels=1, resolution=32, width=64, norm="batch")
    images = G(torch.randn(8, 64))            # (8, 1, 32, 32) in [-1, 1]
    logits = D(images)                        # (8,) raw logits: no sigmoid, so D is also the WGAN critic

The keyword arguments are plain JSON values: the generator package stores them in generator.json and
`gan_core.package.load_generator` rebuilds the network with `build_generator(arch, **kwargs)`.
DCGAN follows pytorch/examples' dcgan (ConvTranspose + BatchNorm + ReLU, Tanh output; D Conv + LeakyReLU).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from gan_core.config import ModelConfig
from gan_core.errors import UserError

# DCGAN grows from a 4×4 (or 7×7) seed by doublings; these are the sides that reaches with ≥ 2 doublings.
DCGAN_RESOLUTIONS = (16, 28, 32, 64, 128)
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


class _LabelInput(nn.Module):
    """Concatenates a learned label embedding to the latent: (B, Z) + (B,) → (B, 2Z). Identity when unconditional."""

    def __init__(self, latent_dim: int, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None

    @property
    def out_dim(self) -> int:
        return self.embed.embedding_dim * 2 if self.embed is not None else 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            return z
        if labels is None:
            raise ValueError("this generator is conditional: pass labels (B,) with the latents")
        return torch.cat([z, self.embed(labels)], dim=1)


# ----------------------------------------------------------------------------- generators
class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int, num_classes: int = 0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        seed, ups = _dcgan_plan(resolution)
        self.label_input = _LabelInput(latent_dim, num_classes)
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


class MLPGenerator(nn.Module):
    """The vanilla GAN generator: Linear–LeakyReLU layers widening ×2, Tanh output."""

    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int, num_classes: int = 0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.image_shape = (channels, resolution, resolution)
        self.label_input = _LabelInput(latent_dim, num_classes)
        in_dim = self.label_input.out_dim or latent_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, width),
            nn.LeakyReLU(0.2, True),
            nn.Linear(width, width * 2),
            nn.LeakyReLU(0.2, True),
            nn.Linear(width * 2, width * 4),
            nn.LeakyReLU(0.2, True),
            nn.Linear(width * 4, math.prod(self.image_shape)),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.label_input(z, labels)).view(-1, *self.image_shape)


# ----------------------------------------------------------------------------- discriminators
class _ConditionalHead(nn.Module):
    """Maps D's features (B, F) to a logit (B,); with classes, adds the projection term <embed(y), features>.

    Projection discriminator (Miyato & Koyama 2018): logit = w·φ(x) + embed(y)·φ(x).
    """

    def __init__(self, features: int, num_classes: int, projection: bool):
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if projection else None

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        logit = self.linear(features).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is conditional: pass labels (B,) with the images")
            logit = logit + (self.embed(labels) * features).sum(dim=1)
        return logit


def _concat_labels(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """concat mode: one-hot label planes appended to the image, (B, C, H, W) → (B, C + K, H, W)."""
    if labels is None:
        raise ValueError("this discriminator is conditional: pass labels (B,) with the images")
    onehot = nn.functional.one_hot(labels, num_classes).to(x.dtype)  # (B, K)
    planes = onehot[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
    return torch.cat([x, planes], dim=1)


class DCGANDiscriminator(nn.Module):
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
        sn = _spectral_norm if spectral_norm else (lambda m: m)
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
            self.head: nn.Module = _ConditionalHead(ch, num_classes, projection=True)
            self.head.linear = sn(self.head.linear)
        else:
            self.head = sn(nn.Conv2d(ch, 1, seed, 1, 0, bias=False))  # (B, 1, 1, 1), as in pytorch/examples
        _init_dcgan(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.concat:
            x = _concat_labels(x, labels, self.num_classes)
        h = self.features(x)
        if isinstance(self.head, _ConditionalHead):
            return self.head(h.sum(dim=(2, 3)), labels)
        return self.head(h).flatten()  # (B,)


def _norm(kind: DNorm, ch: int) -> list[nn.Module]:
    """BatchNorm as in DCGAN; LayerNorm (GroupNorm with one group) where a gradient penalty is used."""
    if kind == "batch":
        return [nn.BatchNorm2d(ch)]
    if kind == "layer":
        return [nn.GroupNorm(1, ch)]
    return []


class MLPDiscriminator(nn.Module):
    """The vanilla GAN discriminator: Linear–LeakyReLU layers narrowing ÷2, one logit out."""

    def __init__(
        self,
        channels: int,
        resolution: int,
        width: int,
        num_classes: int = 0,
        cond_mode: Literal["projection", "concat"] = "projection",
        spectral_norm: bool = False,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.concat = bool(num_classes) and cond_mode == "concat"
        sn = _spectral_norm if spectral_norm else (lambda m: m)
        in_dim = channels * resolution * resolution + (num_classes if self.concat else 0)
        self.features = nn.Sequential(
            sn(nn.Linear(in_dim, width * 4)),
            nn.LeakyReLU(0.2, True),
            sn(nn.Linear(width * 4, width * 2)),
            nn.LeakyReLU(0.2, True),
            sn(nn.Linear(width * 2, width)),
            nn.LeakyReLU(0.2, True),
        )
        self.head = _ConditionalHead(width, num_classes, projection=bool(num_classes) and not self.concat)
        self.head.linear = sn(self.head.linear)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = x.flatten(1)  # (B, C*H*W)
        if self.concat:
            if labels is None:
                raise ValueError("this discriminator is conditional: pass labels (B,) with the images")
            h = torch.cat([h, nn.functional.one_hot(labels, self.num_classes).to(h.dtype)], dim=1)
        return self.head(self.features(h), labels)


# ----------------------------------------------------------------------------- by name
_GENERATORS: dict[str, type[nn.Module]] = {"dcgan": DCGANGenerator, "mlp": MLPGenerator}
_DISCRIMINATORS: dict[str, type[nn.Module]] = {"dcgan": DCGANDiscriminator, "mlp": MLPDiscriminator}


def build_generator(arch: str, **kwargs: Any) -> nn.Module:
    """G for `arch` (mlp | dcgan): kwargs latent_dim, channels, resolution, width, num_classes."""
    if arch not in _GENERATORS:
        raise UserError(f"unknown architecture {arch!r}; expected one of {sorted(_GENERATORS)}")
    return _GENERATORS[arch](**kwargs)


def build_discriminator(arch: str, **kwargs: Any) -> nn.Module:
    """D for `arch` (mlp | dcgan): kwargs channels, resolution, width, num_classes, cond_mode, spectral_norm
    and, for dcgan, norm (batch | layer | none). Outputs logits (B,)."""
    if arch not in _DISCRIMINATORS:
        raise UserError(f"unknown architecture {arch!r}; expected one of {sorted(_DISCRIMINATORS)}")
    return _DISCRIMINATORS[arch](**kwargs)


def generator_kwargs(model: ModelConfig, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
    """build_generator kwargs (JSON values) for this model config and data shape (C, H, W)."""
    _check_square(image_shape)
    return {
        "latent_dim": model.latent_dim,
        "channels": image_shape[0],
        "resolution": image_shape[1],
        "width": model.g_width,
        "num_classes": num_classes if model.conditional else 0,
    }


def discriminator_kwargs(
    model: ModelConfig, loss: str, image_shape: tuple[int, int, int], num_classes: int
) -> dict[str, Any]:
    """build_discriminator kwargs. BatchNorm couples samples in a batch, which breaks the per-sample gradient
    penalty of wgan-gp, so that loss gets LayerNorm; spectral norm replaces normalisation altogether."""
    _check_square(image_shape)
    kwargs: dict[str, Any] = {
        "channels": image_shape[0],
        "resolution": image_shape[1],
        "width": model.d_width,
        "num_classes": num_classes if model.conditional else 0,
        "cond_mode": model.cond_mode,
        "spectral_norm": model.spectral_norm,
    }
    if model.arch == "dcgan":
        kwargs["norm"] = "none" if model.spectral_norm else "layer" if loss == "wgan-gp" else "batch"
    return kwargs


def _check_square(image_shape: tuple[int, int, int]) -> None:
    if image_shape[1] != image_shape[2]:
        raise UserError(f"images must be square, got {image_shape[1]}x{image_shape[2]}; re-run prepare")
