"""What the loop does differently per task kind (gan_core.config.catalogue.TASKS): which image sets the family's
step reads, and what the package it writes says. gan_core.packaging.PACKAGES writes that package.

    task = TRAINING[family.task]
    image_sets, meta = task.load(cfg)    # generation: {"": every image}; translation: {"a": ..., "b": ...}
    spec = task.package_spec(contents)   # generator.json's / translator.json's fields (format added on save)

A new task kind adds one entry in TRAINING.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gan_core.config import Config
from gan_core.config.catalogue import GENERATION, TRANSLATION
from gan_core.data import PreparedDataset, holdout_split, load_domains, load_prepared, read_meta

ImageSets = dict[str, PreparedDataset]
"""The image sets a step reads, by domain: "" for generation's one set, "a" and "b" for translation's domains."""


@dataclass(frozen=True)
class PackageContents:
    """What a trained package is made of, whatever its kind."""

    arch: str
    kwargs: dict[str, Any]  # the generator's constructor arguments (JSON values)
    image_shape: tuple[int, int, int]  # (C, H, W)
    latent_dim: int
    num_classes: int  # 0 = unconditional
    class_names: list[str] | None  # of the first image set
    dataset_meta: dict[str, Any]  # the prepared dataset's meta.json
    metadata: dict[str, Any]  # lineage, steps, loss, ... (gan_core.training.loop)


@dataclass(frozen=True)
class TrainingTask:
    load: Callable[[Config], tuple[ImageSets, dict[str, Any]]]
    """The image sets the step trains on and the dataset meta a run reports, from cfg.data.prepared_dir."""
    package_spec: Callable[[PackageContents], dict[str, Any]]


def _load_images(cfg: Config) -> tuple[ImageSets, dict[str, Any]]:
    data = load_prepared(cfg.data.prepared_dir)
    return {"": data}, data.meta


def _load_domains(cfg: Config) -> tuple[ImageSets, dict[str, Any]]:
    """Both domains less their held-out tails, which are evaluation's (train.holdout_fraction)."""
    domains = load_domains(cfg.data.prepared_dir)
    training = {name: holdout_split(d, cfg.train.holdout_fraction)[0] for name, d in domains.items()}
    return training, read_meta(cfg.data.prepared_dir)


def _generator_spec(c: PackageContents) -> dict[str, Any]:
    return {"arch": c.arch, "kwargs": c.kwargs, "latent_dim": c.latent_dim, "image_shape": list(c.image_shape),
            "num_classes": c.num_classes, "class_names": c.class_names if c.num_classes else None,
            "metadata": c.metadata}


def _translator_spec(c: PackageContents) -> dict[str, Any]:
    domains = {name: {"source": meta["source"], "classes": meta.get("classes")}
               for name, meta in c.dataset_meta["domains"].items()}
    return {"arch": c.arch, "kwargs": c.kwargs, "image_shape": list(c.image_shape), "domains": domains,
            "metadata": c.metadata}


TRAINING: dict[str, TrainingTask] = {
    GENERATION: TrainingTask(load=_load_images, package_spec=_generator_spec),
    TRANSLATION: TrainingTask(load=_load_domains, package_spec=_translator_spec),
}
