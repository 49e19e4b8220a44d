"""The base of every config section (schema's and each family's own, gan_core.config.catalogue): unknown keys are
refused, so a typo fails at load time with its key path instead of being silently ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # coerce_numbers_to_str: a name written as a number (`experiment: 2024`) is that name, not a type error.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)
