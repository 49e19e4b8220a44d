"""load_config: params file < recipe < overrides, validated into one Config, or one ConfigError line.

    cfg = load_config("params.yaml", ["train.steps=200", "data.source=digits"])
    cfg = load_config("params.yaml", ["recipe=conditional"])   # configs/recipes/conditional.yaml over params.yaml
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gan_core.config.files import read_params_file
from gan_core.config.overrides import parse_overrides, set_dotted
from gan_core.config.recipes import merge_tree, read_recipe
from gan_core.config.schema import Config
from gan_core.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")

_short = reprlib.Repr()  # error messages quote the bad value, bounded: it may be a huge string or an anchor bomb
_short.maxstring = _short.maxother = 80
_short.maxlevel = 1
MAX_PROBLEMS = 5
SECRET_KEYS = ("notify.webhook_env",)
"""Keys whose bad value is not quoted back: a user who wrote a webhook URL there wrote a secret."""
"""A config error lists at most this many problems (then how many more), so the line stays readable."""


def _describe(err: Mapping[str, Any]) -> str:
    path = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    msg = err["msg"].removeprefix("Value error, ")
    if not path:  # a check across sections (Config._task_consistent): its message names the keys
        return msg
    if path.startswith(SECRET_KEYS):  # what was written there may be the secret itself (a webhook URL's path)
        return f"{path}: {msg}"
    return f"{path}: {msg} (got {_short.repr(err.get('input'))})"


def load_config(
    params: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
) -> Config:
    """Load params.yaml (or `params`), apply the recipe it or an override names, then the dotted overrides, and
    validate; raise ConfigError on any problem. Precedence: params file < recipe < overrides."""
    path = Path(params) if params is not None else DEFAULT_PARAMS
    tree = read_params_file(path) if params is not None or path.exists() else {}
    parsed = parse_overrides(overrides)
    name = parsed.get("recipe", tree.get("recipe"))
    if name is not None:
        merge_tree(tree, read_recipe(name))
        tree["recipe"] = name
    for key, value in parsed.items():
        set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        errors = e.errors()
        problems = "; ".join(_describe(err) for err in errors[:MAX_PROBLEMS])
        more = f"; and {len(errors) - MAX_PROBLEMS} more" if len(errors) > MAX_PROBLEMS else ""
        raise ConfigError(f"{path}: {problems}{more}") from None
