"""The icdlib import graph, read from the source with ``ast`` (shared by the architecture
and pipeline tests)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "icdlib"


def module_name(path: Path) -> str:
    parts = ("icdlib",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(nodes) -> set[str]:
    """Every icdlib module that these AST nodes import (``from icdlib.x import y`` names
    module ``icdlib.x.y`` when that is a module, else ``icdlib.x``)."""
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("icdlib")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("icdlib"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES}


def imports_of(path: Path) -> set[str]:
    """The icdlib modules a file imports, at any depth (function-level imports included)."""
    return imported_modules(ast.walk(ast.parse(path.read_text())))


def with_parents(module: str) -> set[str]:
    """``module`` and every package whose ``__init__`` importing it runs."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)


def module_level_imports_of(path: Path) -> set[str]:
    """The icdlib modules a file imports when it is imported (function bodies left out)."""
    tree = ast.parse(path.read_text())
    nodes = [n for top in tree.body for n in ([top] + (top.body if isinstance(top, (ast.If, ast.Try)) else []))]
    return imported_modules(nodes)


def closure(modules: set[str]) -> set[str]:
    """Every module whose code a caller of ``modules`` may run: the modules and everything
    they import (function-level imports included, as their functions are called), plus
    the packages whose ``__init__`` importing them executes. A package reached only as a
    parent runs its module-level code alone (``icdlib.compare``'s lazy import does not
    make every stage depend on the viz code)."""
    called, executed, todo = set(), set(), list(modules)
    while todo:
        m = todo.pop()
        if m in called:
            continue
        called.add(m)
        todo += imports_of(MODULES[m]) - called
        for parent in with_parents(m) - {m} - executed - called:
            executed.add(parent)
            todo += module_level_imports_of(MODULES[parent]) - called
    return called | executed


def source_file(module: str) -> str:
    """``icdlib/...py`` path of a module, relative to the repository root."""
    return str(MODULES[module].relative_to(ROOT))


def script(folder: str, name: str):
    """``<folder>/<name>.py`` loaded as a module named ``<folder>_<name>`` (the benchmarks and
    experiments are scripts, not packages; registered in ``sys.modules`` so that their
    dataclasses resolve their annotations)."""
    import importlib.util
    import sys

    module = f"{folder}_{name}"
    if module not in sys.modules:
        spec = importlib.util.spec_from_file_location(module, ROOT / folder / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[module] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[module]
            raise
    return sys.modules[module]


def benchmark(name: str):
    """``benchmarks/<name>.py`` (a speed benchmark) loaded as a module."""
    return script("benchmarks", name)


def experiment(name: str):
    """``experiments/<name>.py`` (a research experiment) loaded as a module."""
    return script("experiments", name)
