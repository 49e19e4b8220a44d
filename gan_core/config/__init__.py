"""Typed configuration: one pydantic tree loaded from params.yaml, with dotted overrides and named recipes.

    cfg = load_config("params.yaml", ["train.steps=200", "data.source=digits"])
    cfg = load_config("params.yaml", ["recipe=conditional"])   # configs/recipes/conditional.yaml over params.yaml

schema (the sections and their documented fields), files (reading a params file), overrides (dotted key=value),
recipes (configs/recipes/<name>.yaml) and loading (load_config: params file < recipe < overrides).
"""

from gan_core.config.loading import DEFAULT_PARAMS, MAX_PROBLEMS, load_config
from gan_core.config.overrides import parse_overrides
from gan_core.config.recipes import RECIPE_REGISTRY_KEYS, RECIPE_SECTIONS, read_recipe, recipe_names, recipes_dir
from gan_core.config.schema import (
    ClassifierConfig,
    Config,
    DataConfig,
    EncoderConfig,
    EvalConfig,
    GateConfig,
    ModelConfig,
    NotifyConfig,
    OptimizerConfig,
    RegistryConfig,
    Seed,
    Threshold,
    TrainConfig,
)
from gan_core.errors import ConfigError

__all__ = [
    "DEFAULT_PARAMS", "MAX_PROBLEMS", "RECIPE_REGISTRY_KEYS", "RECIPE_SECTIONS", "ClassifierConfig", "Config",
    "ConfigError", "DataConfig", "EncoderConfig", "EvalConfig", "GateConfig", "ModelConfig", "NotifyConfig",
    "OptimizerConfig", "RegistryConfig", "Seed", "Threshold", "TrainConfig", "load_config", "parse_overrides",
    "read_recipe", "recipe_names", "recipes_dir",
]
