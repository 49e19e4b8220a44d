"""gan_core: everything about GANs — config, data, networks, losses, training, evaluation, the generator package.

    import gan_core
    G = gan_core.load_generator("models:/ganops-generator@champion", device="cuda")
    G_AB = gan_core.load_translator("models:/ganops-translator@champion", direction="a2b")

Never imports Prefect: orchestration lives in `flows/`.
"""

from typing import Any

from gan_core.config import Config, ConfigError, load_config
from gan_core.errors import UserError

__all__ = ["Config", "ConfigError", "UserError", "load_config", "load_generator", "load_translator"]


def __getattr__(name: str) -> Any:
    # Imported lazily: torch costs seconds to import, and `python -m gan_core prepare --help` should not pay it.
    if name == "load_generator":
        from gan_core.packaging.generator import load_generator

        return load_generator
    if name == "load_translator":
        from gan_core.packaging.translator import load_translator

        return load_translator
    raise AttributeError(f"module 'gan_core' has no attribute {name!r}")
