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


def closure(modules: set[str]) -> set[str]:
    """Every module that importing ``modules`` executes (imports and parent packages)."""
    todo, seen = set(modules), set()
    while todo:
        m = todo.pop()
        for n in with_parents(m) - seen:
            seen.add(n)
            todo |= imports_of(MODULES[n]) - seen
    return seen


def source_file(module: str) -> str:
    """``icdlib/...py`` path of a module, relative to the repository root."""
    return str(MODULES[module].relative_to(ROOT))
