"""gan_core's house plan, read from the source: no import circle between modules, and no module imports from a
higher floor than its own. Every import counts, wherever it is written (module level, inside a function, under
TYPE_CHECKING), and so do the family modules gan_core.models imports by their catalogue names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gan_core.config.catalogue import SHIPPED, family_info

REPO = Path(__file__).resolve().parents[1]
ROOT = "gan_core"
FLOORS: tuple[tuple[str, ...], ...] = (
    # shared by every stage
    ("gan_core.errors", "gan_core.redact", "gan_core.atomic", "gan_core.preflight", "gan_core.device"),
    ("gan_core.config",),
    ("gan_core.data",),
    ("gan_core.models",),
    ("gan_core.packaging",),
    ("gan_core.training",),
    ("gan_core.evaluation",),
    # The two top-level shims are serving's: models logged before gan_core was grouped by stage import them.
    ("gan_core.serving", "gan_core.mlflow_model", "gan_core.mlflow_translator"),
    ("gan_core.tracking",),
    ("gan_core.cli", "gan_core.__main__", ROOT),  # entry points, and the package's own lazy facade
)
"""Low to high: a module may import from its own floor and the floors below."""


def _modules() -> dict[str, Path]:
    """Dotted name → file, for every module of gan_core (a package by its own name)."""
    found = {}
    for path in sorted((REPO / ROOT).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The gan_core modules `name` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, the module mod.
            targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                           for alias in node.names)
    return {_module_of(t) for t in targets if t == ROOT or t.startswith(ROOT + ".")} - {name, None}


def _module_of(target: str) -> str | None:
    """The module `target` names (a module, or an attribute path inside one)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _graph() -> dict[str, set[str]]:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    # gan_core.models imports each family's module by its catalogue name (importlib): those are imports too.
    graph["gan_core.models"] |= {family_info(name).module for name in SHIPPED}
    return graph


def floor(module: str) -> int:
    for level, members in enumerate(FLOORS):
        for member in members:
            if module == member or (member != ROOT and module.startswith(member + ".")):
                return level
    raise LookupError(f"{module} is on no floor: add it (or its package) to FLOORS in tests/test_architecture.py")


def test_every_module_stands_on_a_floor() -> None:
    for name in MODULES:
        floor(name)
    for name in SHIPPED:  # a family's module is a models module, whatever the catalogue says
        assert family_info(name).module in MODULES and floor(family_info(name).module) == floor("gan_core.models")


def test_no_module_imports_from_a_higher_floor() -> None:
    upward = sorted(f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
                    for a, targets in _graph().items() for b in targets if floor(b) > floor(a))
    assert upward == []


def test_no_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = 2, path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            pytest.fail("import circle: " + " → ".join(cycle))


def test_the_checks_see_imports_in_functions_and_type_checking_blocks(tmp_path: Path) -> None:
    # The reader itself must not miss the imports a circle hides behind.
    assert "gan_core.packaging.generator" in _imports("gan_core", MODULES[ROOT])  # inside __getattr__
    assert "gan_core.models" in _imports("gan_core.packaging.generator", MODULES["gan_core.packaging.generator"])
    assert "gan_core.training.result" in _imports("gan_core.training.callbacks",
                                                 MODULES["gan_core.training.callbacks"])  # TYPE_CHECKING


def test_gan_core_never_imports_prefect() -> None:
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m == "prefect" or m.startswith("prefect.")}, name
