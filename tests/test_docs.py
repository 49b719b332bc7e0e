"""README.md and docs/*.md say only what runs: code blocks execute, links resolve, commands exist.

- Every ```python block runs, each in a fresh namespace in its own temporary working
  directory (holding a copy of the committed ``reports/tables/``, as a finished run leaves
  it), within ``BLOCK_BUDGET_S`` seconds. Its top-level imports run first, outside the
  budget: a cold ``import torch`` alone takes seconds on a loaded machine.
- A block that needs the full pipeline or files a reader brings is skipped only when the
  line before it is ``<!-- not-run: REASON -->`` with a reason.
- Every relative link (``[text](path)``, ``![alt](path)``) points to an existing file.
- Every ``python -m icdlib.X`` in a shell block or an inline code span names a module
  that exists, and every ``make T`` a target of the Makefile.
- README.md stays a front door: at most ``README_MAX_LINES`` lines.
"""

from __future__ import annotations

import ast
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 170
BLOCK_BUDGET_S = 20.0  # tiny models on stand-in images: 1-5 s each on 2 busy cores
SHELL_LANGS = ("bash", "sh", "shell", "console", "")

FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"^<!--\s*not-run:(.*?)-->\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
MODULE = re.compile(r"(?:^|\s)-m\s+(icdlib(?:\.\w+)*)")
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+([A-Za-z][\w-]*)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, when the block is marked not-run

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one Markdown file, with their not-run markers."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = [ln for ln in text[: m.start()].splitlines() if ln.strip()]
        marker = NOT_RUN.match(before[-1].strip()) if before else None
        out.append(Block(path, line, m.group(1).lower(), m.group(2), marker.group(1).strip() if marker else None))
    return out


ALL_BLOCKS = [b for p in DOCS for b in blocks(p)]
PYTHON = [b for b in ALL_BLOCKS if b.lang == "python"]


def _run_with_budget(code: str, name: str, budget: float) -> float:
    """Execute ``code`` in a fresh namespace; its imports first, untimed; the rest within ``budget`` s."""
    tree = ast.parse(code, name)
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(imports, type_ignores=[]), name, "exec"), {"__name__": "__docs__"})

    def expire(signum, frame):
        raise TimeoutError(f"{name}: ran past its budget of {budget:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, budget)
    t0 = time.perf_counter()
    try:
        exec(compile(tree, name, "exec"), {"__name__": "__docs__"})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return time.perf_counter() - t0


def test_docs_have_python_examples_to_run():
    assert len([b for b in PYTHON if b.not_run is None]) >= 5, "README and docs lost their runnable examples"
    readme = [b for b in PYTHON if b.path.name == "README.md" and b.path.parent == ROOT]
    assert len(readme) >= 3 and all(b.not_run is None for b in readme), "every README example runs"


@pytest.mark.parametrize("block", [b for b in PYTHON if b.not_run is None], ids=lambda b: b.where)
def test_python_block_runs_at_tiny_size(block, tmp_path, monkeypatch):
    shutil.copytree(ROOT / "reports" / "tables", tmp_path / "reports" / "tables")
    monkeypatch.chdir(tmp_path)
    _run_with_budget(block.code, block.where, BLOCK_BUDGET_S)


def test_block_over_its_budget_is_stopped():
    with pytest.raises(TimeoutError, match="budget of 0.2 s"):
        _run_with_budget("import time\nwhile True:\n    time.sleep(0.01)\n", "loop", 0.2)


def test_every_skipped_block_gives_a_reason():
    for b in ALL_BLOCKS:
        if b.not_run is not None:
            assert b.not_run, f"{b.where}: <!-- not-run: --> without a reason"
            assert b.lang == "python", f"{b.where}: not-run marks a {b.lang or 'plain'} block; only python blocks run"
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, ln in enumerate(lines):
            if ln.strip().startswith("<!-- not-run"):
                nxt = next((x for x in lines[i + 1:] if x.strip()), "")
                assert NOT_RUN.match(ln.strip()), f"{path.name}:{i + 1}: malformed marker {ln.strip()!r}"
                assert nxt.startswith("```python"), f"{path.name}:{i + 1}: not-run marker before no python block"


def _links(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)  # links inside code blocks are code
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(text)]


def test_every_relative_link_points_to_an_existing_file():
    missing = []
    for path in DOCS:
        for line, target in _links(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            if not (path.parent / target.split("#", 1)[0]).exists():
                missing.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not missing, "links to missing files:\n" + "\n".join(missing)


def _commands(path: Path) -> list[tuple[str, str]]:
    """``(where, text)`` of every shell block and inline code span of ``path``."""
    out = [(b.where, b.code) for b in blocks(path) if b.lang in SHELL_LANGS]
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    out += [(f"{path.relative_to(ROOT)} (inline)", m.group(1)) for m in INLINE_CODE.finditer(text)]
    return out


def _module_exists(name: str) -> bool:
    parts = name.split(".")
    base = ROOT.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.MULTILINE)}


def test_every_named_command_exists():
    targets = _make_targets()
    assert {"repro", "test", "test-min", "bench"} <= targets
    bad, seen_modules, seen_targets = [], set(), set()
    for path in DOCS:
        for where, text in _commands(path):
            for m in MODULE.finditer(text):
                seen_modules.add(m.group(1))
                if not _module_exists(m.group(1)):
                    bad.append(f"{where}: python -m {m.group(1)}: no such module")
            for m in MAKE.finditer(text):
                seen_targets.add(m.group(1))
                if m.group(1) not in targets:
                    bad.append(f"{where}: make {m.group(1)}: no such target in the Makefile")
    assert not bad, "\n".join(bad)
    assert {"icdlib.profile", "icdlib.search"} <= seen_modules  # the checks found the README's commands
    assert {"repro", "test"} <= seen_targets


def test_command_checks_catch_a_missing_module_and_target():
    assert _module_exists("icdlib.search") and _module_exists("icdlib.data")
    assert not _module_exists("icdlib.serach")
    found = [m.group(1) for m in MODULE.finditer("torchrun --nproc_per_node=8 -m icdlib.train --arm x")]
    assert found == ["icdlib.train"]
    assert [m.group(1) for m in MAKE.finditer("cd x && make repro; make tset")] == ["repro", "tset"]
    assert "tset" not in _make_targets()


def test_readme_keeps_the_two_commands_and_fits_its_line_budget():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    n = len(text.splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; the front door keeps to {README_MAX_LINES}"
    first = next(b for b in blocks(ROOT / "README.md") if b.lang == "bash")
    assert re.search(r"^make repro\b", first.code, re.MULTILINE)
    assert re.search(r"^make test\b", first.code, re.MULTILINE)


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not list {page.name}"
