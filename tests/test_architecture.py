"""The package's shape: imports run one way (no cycles, function-level imports included),
packages sit in layers, and no module passes 400 lines."""

from __future__ import annotations

import pytest
from _imports import MODULES, imports_of

# Lower layers never import higher ones (docs/architecture.md draws this).
LAYERS = [
    {"params", "isc_csv", "locks"},  # foundations: params.yaml, the ISC21 CSV format, file locks
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
