"""The families: one module each, listed in the torch-free catalogue (gan_core.config.catalogue), which names the
module, its task kind, what it supports and its own settings. `family(arch)` hands back all of a family:

    fam = family("dcgan")
    G = fam.Generator(**fam.generator_kwargs(cfg.model, (1, 32, 32), num_classes=0))
    D = fam.Discriminator(**fam.discriminator_kwargs(cfg.model, cfg.train.loss, (1, 32, 32), num_classes=0))
    step = fam.TrainingStep(loop)             # gan_core.models.step: the loop calls it once per G update
    fam.task, fam.info.supports               # generation | translation; what it accepts
    images = G(torch.randn(8, 64))            # (8, 1, 32, 32) in [-1, 1]
    logits = D(images)                        # (8,) raw logits: no sigmoid, so D is also the WGAN critic

A family module defines Generator, Discriminator and TrainingStep (its losses, regularisers and phase order: a
gan_core.models.step.AdversarialStep or a subclass for generation; any class with the FamilyStep methods, such as
cyclegan's, otherwise), and when it has constructor arguments of its own, generator_options(model) and
discriminator_options(model, loss) that read them from the config. The keyword arguments are plain JSON values: a
package stores them and `gan_core.packaging` rebuilds the network with `build_generator(arch, **kwargs)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from gan_core.config import ModelConfig
from gan_core.config.catalogue import GENERATION, TRANSLATION, FamilyInfo, family_info
from gan_core.errors import UserError
from gan_core.models.step import FamilyStep

ImageShape = tuple[int, int, int]  # (C, H, W)


@dataclass(frozen=True)
class Family:
    """One family's catalogue entry and code: its networks, their arguments from a config, its training step."""

    info: FamilyInfo
    Generator: type[nn.Module]
    Discriminator: type[nn.Module]
    TrainingStep: type[FamilyStep]
    generator_options: Callable[[ModelConfig], dict[str, Any]]
    """The family's own G arguments from model.* (stylegan2: mapping_layers)."""
    discriminator_options: Callable[[ModelConfig, str], dict[str, Any]]
    """The family's own D arguments from model.* and train.loss (dcgan: its norm); refuses what it cannot build."""

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def task(self) -> str:
        """generation | translation (gan_core.config.catalogue.TASKS)."""
        return self.info.task

    def generator_kwargs(self, model: ModelConfig, image_shape: ImageShape, num_classes: int) -> dict[str, Any]:
        """Generator kwargs (JSON values) for this model config and data shape (C, H, W): the task's shared ones
        plus the family's own."""
        _check_square(image_shape)
        shared = SHARED_ARGUMENTS[self.task].generator(model, image_shape, num_classes)
        return {**shared, **self.generator_options(model)}

    def discriminator_kwargs(
        self, model: ModelConfig, loss: str, image_shape: ImageShape, num_classes: int
    ) -> dict[str, Any]:
        """Discriminator kwargs: the task's shared ones plus the family's own."""
        _check_square(image_shape)
        shared = SHARED_ARGUMENTS[self.task].discriminator(model, image_shape, num_classes)
        return {**shared, **self.discriminator_options(model, loss)}


def family(arch: str) -> Family:
    """The family named `arch` (model.arch, or a package's arch): its module is imported from the catalogue entry,
    never from a name found elsewhere. UserError for an unknown name."""
    info = family_info(arch)
    module = importlib.import_module(info.module)
    return Family(
        info=info, Generator=module.Generator, Discriminator=module.Discriminator, TrainingStep=module.TrainingStep,
        generator_options=getattr(module, "generator_options", _no_generator_options),
        discriminator_options=getattr(module, "discriminator_options", _no_discriminator_options),
    )


def build_generator(arch: str, **kwargs: Any) -> nn.Module:
    """G for `arch` from its kwargs (as a package stores them): latent_dim, channels, resolution, width,
    num_classes and the family's own (stylegan2: mapping_layers)."""
    return family(arch).Generator(**kwargs)


def build_discriminator(arch: str, **kwargs: Any) -> nn.Module:
    """D for `arch`: kwargs channels, resolution, width, num_classes, cond_mode, spectral_norm and the family's
    own (dcgan: norm = batch | layer | none). Outputs logits (B,)."""
    return family(arch).Discriminator(**kwargs)


def _no_generator_options(model: ModelConfig) -> dict[str, Any]:
    return {}


def _no_discriminator_options(model: ModelConfig, loss: str) -> dict[str, Any]:
    return {}


def _check_square(image_shape: ImageShape) -> None:
    if image_shape[1] != image_shape[2]:
        raise UserError(f"images must be square, got {image_shape[1]}x{image_shape[2]}; re-run prepare")


# ----------------------------------------------------------------------------- per task kind: the shared arguments
@dataclass(frozen=True)
class SharedArguments:
    """The constructor arguments every family of a task kind takes, from the shared model.* settings."""

    generator: Callable[[ModelConfig, ImageShape, int], dict[str, Any]]
    discriminator: Callable[[ModelConfig, ImageShape, int], dict[str, Any]]


def _generation_generator(model: ModelConfig, shape: ImageShape, num_classes: int) -> dict[str, Any]:
    return {"latent_dim": model.latent_dim, "channels": shape[0], "resolution": shape[1], "width": model.g_width,
            "num_classes": num_classes if model.conditional else 0}


def _generation_discriminator(model: ModelConfig, shape: ImageShape, num_classes: int) -> dict[str, Any]:
    return {"channels": shape[0], "resolution": shape[1], "width": model.d_width,
            "num_classes": num_classes if model.conditional else 0, "cond_mode": model.cond_mode,
            "spectral_norm": model.spectral_norm}


def _translation_generator(model: ModelConfig, shape: ImageShape, num_classes: int) -> dict[str, Any]:
    return {"channels": shape[0], "resolution": shape[1], "width": model.g_width}


def _translation_discriminator(model: ModelConfig, shape: ImageShape, num_classes: int) -> dict[str, Any]:
    return {"channels": shape[0], "resolution": shape[1], "width": model.d_width}


SHARED_ARGUMENTS: dict[str, SharedArguments] = {
    GENERATION: SharedArguments(_generation_generator, _generation_discriminator),  # z [+ label] → image
    TRANSLATION: SharedArguments(_translation_generator, _translation_discriminator),  # image → image
}


__all__ = ["Family", "SHARED_ARGUMENTS", "build_discriminator", "build_generator", "family"]
