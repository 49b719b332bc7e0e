"""The package's shape: imports run one way (no cycles, function-level imports included),
packages sit in layers, and no module passes 400 lines."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _imports import MODULES, ROOT, imports_of

# Lower layers never import higher ones (docs/architecture.md draws this).
LAYERS = [
    {"params", "isc_csv", "locks", "atomic", "digest"},  # foundations: params, ISC21 CSV, locks, atomic writes, sha256
    {"pixtrace"},
    {"edits"},
    {"data", "models", "losses"},
    {"checkpoints"},
    {"eval"},
    {"train"},
    {"pipeline", "viz"},
    {"metrics", "evaluate", "profile", "export", "search", "__init__"},  # thin entry points
]
MAX_LINES = 400


GRAPH = {m: imports_of(p) - {m} for m, p in MODULES.items()}


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its package is in no layer of LAYERS")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_sees_a_function_level_cycle(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from icdlib.params import load_params\n")
    assert "icdlib.params" in imports_of(a)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_subpackage_modules_never_import_their_own_package():
    bad = [f"{m} imports {n}" for m, deps in GRAPH.items() for n in deps
           if MODULES[m].name != "__init__.py" and n in MODULES and MODULES[n].name == "__init__.py"
           and m.startswith(n + ".")]
    assert not bad, bad


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_layers(module):
    up = sorted(n for n in GRAPH[module] if layer(n) > layer(module))
    assert not up, f"{module} (layer {layer(module)}) imports higher layers: {up}"


def test_no_module_over_400_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def private(name: str) -> bool:
    """``_name`` but not ``__dunder__``."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(path, own: str) -> list[str]:
    """Another icdlib module's ``_private`` names that the file at ``path`` (module ``own``) reads:
    ``from icdlib.x import _name`` and ``m._name`` / ``icdlib.x._name`` on an imported module."""
    tree = ast.parse(path.read_text())
    found, modules = [], {}  # local name -> the icdlib module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("icdlib"):
            for a in node.names:
                if private(a.name) and node.module != own:
                    found.append(f"line {node.lineno}: from {node.module} import {a.name}")
                if f"{node.module}.{a.name}" in MODULES:
                    modules[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("icdlib"):  # binds the alias to the module, or the name icdlib to the package
                    modules[a.asname or "icdlib"] = a.name if a.asname else "icdlib"
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and private(node.attr)):
            continue
        chain, base = [], node.value
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id in modules:
            target = ".".join([modules[base.id], *reversed(chain)])
            if target in MODULES and target != own:
                found.append(f"line {node.lineno}: {target}.{node.attr}")
    return found


def test_no_module_reads_another_modules_private_names():
    bad = {m: uses for m, p in MODULES.items() if (uses := private_uses(p, m))}
    assert not bad, f"make these public or move them to the module that uses them: {bad}"


def test_private_name_check_sees_imports_and_attributes(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import icdlib.pixtrace.trace\nfrom icdlib.train import loop as L\n"
                 "from icdlib.pixtrace.trace import _lin, __doc__\nfrom icdlib.data import pairs\n"
                 "def g():\n    return L._optimizer, icdlib.pixtrace.trace._snap, pairs.collate, pairs.__name__\n")
    assert private_uses(f, "icdlib.other") == [
        "line 3: from icdlib.pixtrace.trace import _lin", "line 6: icdlib.train.loop._optimizer",
        "line 6: icdlib.pixtrace.trace._snap"]
    assert private_uses(f, "icdlib.pixtrace.trace") == ["line 6: icdlib.train.loop._optimizer"]


def ruff_executable() -> str | None:
    """The ruff of the Python running the tests (its venv's ``bin``), else one on ``PATH``."""
    here = Path(sys.executable).parent / "ruff"
    return str(here) if here.is_file() else shutil.which("ruff")


def test_ruff_finds_nothing_under_the_line_length_and_rules_of_pyproject():
    ruff = ruff_executable()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]'): line length and lint rules unchecked")
    done = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
