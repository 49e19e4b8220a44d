"""gan_core: everything about GANs — config, data, networks, losses, training, evaluation, the generator package.

Never imports Prefect: orchestration lives in `flows/`.
"""

from gan_core.config import Config, ConfigError, load_config
from gan_core.errors import UserError
from gan_core.package import load_generator

__all__ = ["Config", "ConfigError", "UserError", "load_config", "load_generator"]
