"""Reading a params file (params.yaml, a recipe): safe YAML, no key written twice, one-line errors naming the
file and the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gan_core.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (plain PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def read_params_file(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"params file {str(path)!r} is a directory; pass --params PATH to a YAML file")
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} does not exist; pass --params PATH to an existing YAML file")
    try:
        # Bytes, so PyYAML checks the encoding (UTF-8/16) and a bad byte is a YAML error, not a UnicodeDecodeError.
        tree = yaml.load(path.read_bytes(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no object tags
    except OSError as e:
        raise ConfigError(f"params file {str(path)!r} cannot be read ({e.strerror or type(e).__name__})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(e)})") from None
    if tree is None:
        return {}  # an empty file (or only comments): every default
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections (data, model, train, ...), got a {type(tree).__name__}"
        )
    # A section header with everything under it commented out (`train:`) means "all defaults", like a missing one;
    # `recipe: null` is a value, not a section.
    return {key: {} if value is None and key != "recipe" else value for key, value in tree.items()}


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.reader.ReaderError):
        if error.encoding == "unicode":
            return f"character {error.position} is a control character, which YAML does not allow"
        return f"byte {error.position} is not {error.encoding} text; save the file as UTF-8"
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if problem and mark is not None:
        return f"line {mark.line + 1}: {problem}"
    return str(error).splitlines()[0]
