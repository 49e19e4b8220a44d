"""Packages: a trained network as safetensors + JSON, saved atomically and loaded without unpickling anything. One
kind of package per task kind (gan_core.config.catalogue.TASKS): generators (generation: generator.json, module
generator) and translators (translation: translator.json, module translator).

    PACKAGES[task].save(network, spec, out_dir)     # what training writes for a family of that task kind
    package_task(package_dir)                       # "generation" | "translation": which spec file is there
    read_package_spec(package_dir)                  # its spec file, checked, whichever kind it is

A new task kind adds its module here and one entry in PACKAGES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from gan_core.config.catalogue import GENERATION, TASKS, TRANSLATION
from gan_core.packaging import generator, translator


@dataclass(frozen=True)
class PackageKind:
    """How a package of one task kind is written and its spec read."""

    save: Callable[[nn.Module, dict[str, Any], str | Path], Path]
    """save(network, spec, out_dir): the weights and the spec file, atomically."""
    read_spec: Callable[[str | Path], dict[str, Any]]
    """The spec file of a package directory, checked (UserError naming the file otherwise)."""


PACKAGES: dict[str, PackageKind] = {
    GENERATION: PackageKind(generator.save_generator, generator.read_spec),
    TRANSLATION: PackageKind(translator.save_translator, translator.read_translator_spec),
}


def package_task(package_dir: str | Path) -> str:
    """The task kind of the package in `package_dir`, by the spec file it holds; generation when it holds none
    (reading its spec then says that generator.json is missing)."""
    found = [task for task, kind in TASKS.items() if (Path(package_dir) / kind.spec_file).is_file()]
    return found[0] if found else GENERATION


def read_package_spec(package_dir: str | Path) -> dict[str, Any]:
    """generator.json or translator.json, checked."""
    return PACKAGES[package_task(package_dir)].read_spec(package_dir)


__all__ = ["PACKAGES", "PackageKind", "package_task", "read_package_spec"]
