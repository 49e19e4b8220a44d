"""Recipes: configs/recipes/<name>.yaml, a partial tree of model/train keys (and gate / registry.model_name for
a generator with another contract), named by the top-level `recipe` key of params.yaml or an override:
params file < recipe < overrides. recipe_names() lists them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gan_core.config.files import read_params_file
from gan_core.errors import ConfigError

RECIPE_SECTIONS = ("model", "train", "gate", "registry")
"""What a recipe may set: the settings that shape the weights (model, train: the training identity hashes them
resolved), and for a generator with another contract, the bar it must clear (gate) and the registered model it is
published under (registry.model_name only), so e.g. the conditional recipe never competes with the unconditional
champion for its alias."""


RECIPE_REGISTRY_KEYS = ("model_name",)


_RECIPE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def recipes_dir() -> Path:
    """configs/recipes of the project in the working directory (where params.yaml and dvc.yaml are), else of the
    checkout gan_core was imported from (an editable install run elsewhere, e.g. tests)."""
    here = Path("configs/recipes")
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "configs" / "recipes"


def recipe_names() -> list[str]:
    """The known recipes: the stems of configs/recipes/*.yaml."""
    folder = recipes_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def read_recipe(name: Any) -> dict[str, Any]:
    """configs/recipes/<name>.yaml as a partial tree of config keys; ConfigError (one line) for an unknown
    name or a file that sets anything but RECIPE_SECTIONS (of registry, only model_name)."""
    known = recipe_names()
    if not isinstance(name, str) or not _RECIPE_NAME.fullmatch(name) or name not in known:
        raise ConfigError(f"unknown recipe {name!r}; known recipes: {', '.join(known) or 'none'} "
                          f"(files in {recipes_dir()}), or recipe=null")
    path = recipes_dir() / f"{name}.yaml"
    tree = read_params_file(path)
    other = sorted(set(tree) - set(RECIPE_SECTIONS))
    registry = tree.get("registry") or {}
    if isinstance(registry, Mapping):
        other += [f"registry.{key}" for key in sorted(registry) if key not in RECIPE_REGISTRY_KEYS]
    if other:
        allowed = [s for s in RECIPE_SECTIONS if s != "registry"] + [f"registry.{k}" for k in RECIPE_REGISTRY_KEYS]
        raise ConfigError(f"{path}: a recipe sets only {', '.join(allowed[:-1])} and {allowed[-1]} keys, "
                          f"not {', '.join(other)}")
    return tree


def merge_tree(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Deep-merge `update` into `base`: mappings key by key (a recipe's train.g_optimizer.lr keeps the params
    file's betas), anything else replaced."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge_tree(base[key], value)
        else:
            base[key] = value
