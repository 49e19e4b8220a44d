"""The families, one module each, registered by name in FAMILIES: adding a family is one new module and one line
here. A family module defines TASK ("generation": z [+ label] → image; "translation": image of domain A → B),
Generator, Discriminator, generator_options and discriminator_options (its own constructor arguments from the
config) and TrainingStep (its losses, regularisers and phase order: a gan_core.models.step.AdversarialStep or a subclass
for generation; cyclegan's own step for translation — any class with the gan_core.models.step.FamilyStep methods).

    G = build_generator("dcgan", latent_dim=64, channels=1, resolution=32, width=64, num_classes=0)
    D = build_discriminator("dcgan", channels=1, resolution=32, width=64, norm="batch")
    images = G(torch.randn(8, 64))            # (8, 1, 32, 32) in [-1, 1]
    logits = D(images)                        # (8,) raw logits: no sigmoid, so D is also the WGAN critic

The keyword arguments are plain JSON values: the generator package stores them in generator.json and
`gan_core.packaging.generator.load_generator` rebuilds the network with `build_generator(arch, **kwargs)`.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from torch import nn

from gan_core.config import ModelConfig
from gan_core.errors import UserError
from gan_core.models import cyclegan, dcgan, mlp, stylegan2
from gan_core.models.dcgan import DCGAN_RESOLUTIONS

FAMILIES: dict[str, ModuleType] = {"mlp": mlp, "dcgan": dcgan, "stylegan2": stylegan2, "cyclegan": cyclegan}

if TYPE_CHECKING:
    from gan_core.models.step import FamilyStep


def build_generator(arch: str, **kwargs: Any) -> nn.Module:
    """G for `arch`: kwargs latent_dim, channels, resolution, width, num_classes and the family's own
    (stylegan2: mapping_layers)."""
    return _family(arch).Generator(**kwargs)


def build_discriminator(arch: str, **kwargs: Any) -> nn.Module:
    """D for `arch`: kwargs channels, resolution, width, num_classes, cond_mode, spectral_norm and the family's
    own (dcgan: norm = batch | layer | none). Outputs logits (B,)."""
    return _family(arch).Discriminator(**kwargs)


def task(arch: str) -> str:
    """generation | translation."""
    return str(_family(arch).TASK)


def training_step(arch: str) -> type[FamilyStep]:
    """The family's training step class (gan_core.models.step): construct it with the trainer."""
    return _family(arch).TrainingStep


def _family(arch: str) -> ModuleType:
    if arch not in FAMILIES:
        raise UserError(f"unknown architecture {arch!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[arch]


def generator_kwargs(model: ModelConfig, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
    """build_generator kwargs (JSON values) for this model config and data shape (C, H, W)."""
    _check_square(image_shape)
    kwargs: dict[str, Any] = {"channels": image_shape[0], "resolution": image_shape[1], "width": model.g_width}
    if task(model.arch) == "generation":
        kwargs = {"latent_dim": model.latent_dim, **kwargs, "num_classes": num_classes if model.conditional else 0}
    return {**kwargs, **FAMILIES[model.arch].generator_options(model)}


def discriminator_kwargs(
    model: ModelConfig, loss: str, image_shape: tuple[int, int, int], num_classes: int
) -> dict[str, Any]:
    """build_discriminator kwargs: the shared ones plus the family's own (its discriminator_options)."""
    _check_square(image_shape)
    kwargs: dict[str, Any] = {"channels": image_shape[0], "resolution": image_shape[1], "width": model.d_width}
    if task(model.arch) == "generation":
        kwargs |= {"num_classes": num_classes if model.conditional else 0, "cond_mode": model.cond_mode,
                   "spectral_norm": model.spectral_norm}
    return {**kwargs, **FAMILIES[model.arch].discriminator_options(model, loss)}


def _check_square(image_shape: tuple[int, int, int]) -> None:
    if image_shape[1] != image_shape[2]:
        raise UserError(f"images must be square, got {image_shape[1]}x{image_shape[2]}; re-run prepare")


__all__ = ["FAMILIES", "DCGAN_RESOLUTIONS", "build_generator", "build_discriminator", "generator_kwargs",
           "discriminator_kwargs", "task", "training_step"]
