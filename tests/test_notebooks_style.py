"""Every notebook narrates: a header naming the paper's part it reproduces, prose before its
results, the one-call preamble, and no code of its own (no def/class)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_CODE_RUN = 2  # at most this many code cells in a row: a markdown cell says what the next results show
SECTION = re.compile(r"method\.md s\.\d+")  # the method notes' section, e.g. "method.md s.2"
PREAMBLE = re.compile(r"^(?:P = )?setup\((?:params_file)?\)", re.MULTILINE)
LEFTOVERS = ("pio.renderers", "locate(", "import plotly.io")  # what setup() replaced


def _code(cell) -> ast.Module:
    """A code cell's AST (IPython magics and shell lines left out)."""
    return ast.parse("\n".join(ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))))


def _literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def style_problems(nb) -> list[str]:
    """Every way ``nb`` breaks the notebook style; empty when it follows it."""
    problems = []
    cells = nb.cells
    head = cells[0] if cells else None
    if head is None or head.cell_type != "markdown" or not head.source.startswith("# "):
        problems.append("the first cell is no markdown header ('# title')")
    elif "**Paper:**" not in head.source or not SECTION.search(head.source):
        problems.append("the header names no part of the paper ('**Paper:** ...' with a 'method.md s.N' section)")
    code = [c for c in cells if c.cell_type == "code"]
    if not code or "parameters" not in code[0].metadata.get("tags", []):
        problems.append("the first code cell is not the one tagged 'parameters'")
    elif not all(isinstance(n, ast.Assign) and _literal(n.value) for n in _code(code[0]).body):
        problems.append("the parameters cell holds more than literal assignments")
    if (len(code) < 2 or not PREAMBLE.search(code[1].source)
            or "from icdlib.pipeline.notebook import setup" not in code[1].source):
        problems.append("the cell after the parameters does not call the preamble setup() of icdlib.pipeline.notebook")
    run = longest = 0
    for c in cells:
        run = run + 1 if c.cell_type == "code" else 0
        longest = max(longest, run)
    if longest > MAX_CODE_RUN:
        problems.append(f"{longest} code cells in a row (at most {MAX_CODE_RUN} without a markdown cell)")
    for i, c in enumerate(cells):
        if c.cell_type != "code":
            continue
        kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        defs = [n.name for n in ast.walk(_code(c)) if isinstance(n, kinds)]
        if defs:
            problems.append(f"cell {i} defines {defs} (notebooks call icdlib, they hold no def/class)")
        left = [s for s in LEFTOVERS if s in c.source]
        if left:
            problems.append(f"cell {i} repeats the preamble ({', '.join(left)}): call setup() instead")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_notebook_style(path):
    assert style_problems(nbformat.read(path, as_version=4)) == []


def _good():
    params = new_code_cell('params_file = "params.yaml"', metadata={"tags": ["parameters"]})
    return new_notebook(cells=[
        new_markdown_cell("# 9. A stage\n\n**Paper:** the PixTrace section (method.md s.2)."), params,
        new_code_cell("from icdlib.pipeline.notebook import setup\n\nP = setup(params_file)"),
        new_markdown_cell("What the next table shows."), new_code_cell("1 + 1")])


def test_style_check_passes_a_notebook_that_follows_it():
    assert style_problems(_good()) == []


@pytest.mark.parametrize("breakage,problem", [
    (lambda nb: nb.cells[0].update(source="# 9. A stage\n\nNo reference."), "names no part of the paper"),
    (lambda nb: nb.cells[0].update(source="**Paper:** method.md s.2, but no title"), "no markdown header"),
    (lambda nb: nb.cells.insert(3, new_code_cell("x = 1")), "3 code cells in a row"),
    (lambda nb: nb.cells[4].update(source="def f():\n    return 1"), "defines ['f']"),
    (lambda nb: nb.cells[4].update(source="class C:\n    pass"), "defines ['C']"),
    (lambda nb: nb.cells[2].update(source="from icdlib.params import locate\n\nP = locate(params_file)"),
     "does not call the preamble"),
    (lambda nb: nb.cells[4].update(source='import plotly.io as pio\npio.renderers.default = "png"'),
     "repeats the preamble"),
    (lambda nb: nb.cells[1].metadata.update(tags=[]), "not the one tagged 'parameters'"),
    (lambda nb: nb.cells[1].update(source="import os\nparams_file = 'params.yaml'"), "more than literal"),
    (lambda nb: nb.cells[1].update(source="params_file = str(1)"), "more than literal"),
], ids=["no-paper", "no-title", "code-run", "def", "class", "locate", "renderer", "untagged", "import", "call"])
def test_style_check_names_each_breakage(breakage, problem):
    nb = _good()
    breakage(nb)
    assert any(problem in p for p in style_problems(nb)), style_problems(nb)
