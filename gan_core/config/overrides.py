"""Dotted overrides (`train.steps=200`) as the command line and flows give them.

Override values are literal strings, converted to the field's type by validation (`train.steps=200` → 200,
`train.compile=true` → True, `train.g_optimizer.lr=2e-4` → 0.0002), except where they are explicit YAML:
    null or ~                   None
    a plain decimal integer     int (so Literal[1, 3] fields accept `data.channels=3`)
    [a, b] / {k: v}             a YAML flow list / mapping (the whole value, on one line)
    'text' / "text"             the string inside the quotes (`'null'`, `'[x]'` stay strings)
Nothing else goes through YAML, so `data.source=folder:/data/shots #2` keeps its ` #2` (YAML would drop it as
a comment) and `registry.experiment=2024` stays a name. A repeated key: the last override wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from gan_core.errors import ConfigError


def parse_overrides(overrides: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """`["train.steps=200"]` or `{"train.steps": 200}` → `{"train.steps": 200}`; values as in the module docstring.

    A key repeated in the list keeps its last value (as on a command line)."""
    if not overrides:
        return {}
    items = overrides.items() if isinstance(overrides, Mapping) else (_split(item) for item in overrides)
    parsed: dict[str, Any] = {}
    for key, value in items:
        parsed[_check_key(key)] = value
    return parsed


_KEY = re.compile(r"[^.\s]+(\.[^.\s]+)*")


_INTEGER = re.compile(r"0|-?[1-9][0-9]*")  # only spellings that an int prints back exactly (no 007, +5, 1_000)


_NULLS = ("null", "Null", "NULL", "~")


def _split(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad override {item!r}; expected key=value, e.g. train.steps=200")
    return key.strip(), _parse_value(key.strip(), raw)


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ConfigError(
            f"bad override key {key!r}; expected dotted names without spaces or empty parts, e.g. train.steps"
        )
    return key


def _parse_value(key: str, raw: str) -> Any:
    """One override value: a literal string unless it is explicit YAML (null, an integer, a flow list/mapping,
    a quoted string). `key` only names the override in errors."""
    text = raw.strip()
    if "\n" in raw or "\r" in raw:
        return raw  # YAML would fold or drop lines (a comment line inside a list), so multi-line stays literal
    if text in _NULLS:
        return None
    if _INTEGER.fullmatch(text):
        return int(text)
    quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
    flow = len(text) >= 2 and text[0] + text[-1] in ("[]", "{}")
    if not (quoted or flow):
        return raw
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        # e.g. `[a, b #c]`: the comment ate the closing bracket. Refuse rather than guess what was meant.
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"override {key}={raw!r} is not valid YAML ({problem}); quote a list item or string that holds "
            "' #', ',' or brackets, e.g. [a, 'b #2'] or \"x #2\""
        ) from None


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}  # a missing or empty (`train:` with nothing under it) section
        child = node[part]
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value
