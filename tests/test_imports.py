"""The import graph of cofre_jax: no cycles, and the config package is a leaf.

Imports are read from the source with `ast` (module level and inside functions alike,
relative imports resolved), so a cycle that only a lazy import hides is still found.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "cofre_jax"


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The cofre_jax module `name` denotes: itself, or the package it lies in when it
    names an attribute (`from cofre_jax.fixed_point import solve`); None outside."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [_resolve(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from a import b`: the submodule a.b when there is one, else a itself.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else _resolve(base)
                for alias in node.names
            ]
        found.update(t for t in targets if t and t != module)
    return found


def _ancestors(module: str) -> list[str]:
    """Packages whose __init__ runs before `module` (cofre_jax.a for cofre_jax.a.b)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


GRAPH = {module: _imports(module) for module in MODULES}


def _cycle() -> list[str] | None:
    """One cycle of GRAPH as a path [m0, m1, ..., m0], or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(GRAPH, WHITE)
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        color[module] = GREY
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if color[target] == GREY:
                return [*stack[stack.index(target) :], target]
            if color[target] == WHITE:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        color[module] = BLACK
        return None

    for module in sorted(GRAPH):
        if color[module] == WHITE:
            found = visit(module)
            if found:
                return found
    return None


def test_walker_sees_known_edges():
    # Guards the walker itself: a module-level, a function-level and a package import.
    assert "cofre_jax.config.typed" in GRAPH["cofre_jax.diffusion"]
    assert "cofre_jax.train" in GRAPH["cofre_jax.modes.common"]  # inside train()
    assert "cofre_jax.fixed_point.solvers" in GRAPH["cofre_jax.fixed_point"]
    assert len(MODULES) > 40


def test_no_import_cycles():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_config_package_is_a_leaf():
    config = [m for m in MODULES if m == "cofre_jax.config" or m.startswith("cofre_jax.config.")]
    assert "cofre_jax.config.typed" in config
    outside = {
        f"{module} -> {target}"
        for module in config
        for target in GRAPH[module]
        if target not in config and target not in _ancestors(module)
    }
    assert not outside, f"cofre_jax/config imports other cofre_jax modules: {sorted(outside)}"


def test_configs_and_benchmarks_edit_no_import_path():
    """configs/ is a package (`from configs import base`) and the benchmarks import the
    installed packages: neither edits sys.path, and no benchmark imports from tests/."""
    offenders = []
    for folder in ("configs", "benchmarks"):
        for path in sorted((ROOT / folder).glob("*.py")):
            text = path.read_text()
            if "sys.path" in text:
                offenders.append(f"{folder}/{path.name}: sys.path")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("test"):
                    offenders.append(f"{folder}/{path.name}: from {node.module}")
    assert not offenders, offenders
