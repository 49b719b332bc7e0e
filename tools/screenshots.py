"""Pictures of the product, taken from a finished pipeline run: ``reports/screenshots/*.png``.

Run it from the repository root once ``dvc repro`` has finished (``make screenshots RUN=DIR``)::

    python tools/screenshots.py --run RUN_DIR [--out reports/screenshots] [--copy N]

``RUN_DIR`` is the folder where the pipeline ran: its ``params.yaml``, the benchmark built
under ``paths.data`` (with ``manifest.json``), and the evaluate stage's
``reports/eval/results.json`` with the CopyNCE descriptor checkpoint and predictions it names.
The real explorer notebook is served by JupyterLab and driven in headless Chromium
(``tools/browser_session.py``, shared with ``tests/browser/``); the search gallery is
``python -m icdlib.search``'s ``index.html``. It writes:

- ``explorer.png``: a copy query of the run's benchmark beside its source, the trace's
  correspondences drawn over the pair (tab *trace*) above the patch overlap of one query
  patch and the overlap matrix (tab *patch overlap*);
- ``results_browser.png``: the *results* tab on the CopyNCE descriptor's predictions: a
  query and its top references with scores and copy marks;
- ``results_affinity.png``: the descriptor's patch affinity on that query and its best reference;
- ``search.png``: the search gallery of some of the benchmark's copy queries against its references.

Scratch goes to ``paths.runs/screenshots`` of the run (the evaluation folder the results tab
opens, the search's outputs). No machine path is shown: the kernel starts in ``RUN_DIR``,
every path handed to the widgets is relative to it, and each page's text (input values
included) is checked for the run's, the repository's, the home and the scratch folders
before its picture is kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__:  # imported as tools.screenshots (the tests)
    from tools.browser_session import (CHROMIUM, chromium_page, jupyter_lab, kernel_execute, missing_requirement,
                                       run_notebook, wait_for)
else:  # run as a script: python tools/screenshots.py puts tools/ first on sys.path
    from browser_session import (CHROMIUM, chromium_page, jupyter_lab, kernel_execute, missing_requirement,
                                 run_notebook, wait_for)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explorer.ipynb"
NAMES = ("explorer.png", "results_browser.png", "results_affinity.png", "search.png")
ROW = "CopyNCE descriptor"  # the evaluate stage's row whose checkpoint and predictions are shown
SEARCH_QUERIES = 8  # copy queries in the search gallery
SEARCH_K = 5  # matches shown per query
TABS = {"trace": 1, "patch overlap": 2, "results": 4}  # the explorer's tab indices
# every text the page shows: rendered text and the values of its inputs
PAGE_TEXT_JS = """() => [document.body.innerText,
    ...Array.from(document.querySelectorAll('input, textarea, select')).map(e => e.value)].join('\\n')"""
PLOT_TITLE_JS = """(part) => Array.from(document.querySelectorAll('.js-plotly-plot'))
    .some(p => p.getBoundingClientRect().width > 0 && Array.from(p.querySelectorAll('.gtitle, .annotation-text'))
        .some(t => t.textContent.includes(part)))"""
HITS_JS = """() => { const h = Array.from(document.querySelectorAll('img.hit, img.query'));
    return h.length > 1 && h.every(i => i.complete && i.naturalWidth > 0); }"""
EXPLORER_WIDGET = ".jp-OutputArea-output .widget-tab"
# the right edge of what the widget's visible tab draws: its tabs, plot areas, texts and colour bars
CONTENT_RIGHT_JS = """(sel) => Math.max(0, ...Array.from(document.querySelector(sel).querySelectorAll(
    '.lm-TabBar-tab, .js-plotly-plot .cartesianlayer, .js-plotly-plot .infolayer, .js-plotly-plot text'))
    .map(e => e.getBoundingClientRect()).filter(r => r.width > 0 && r.height > 0).map(r => r.right))"""


class ScreenshotError(Exception):
    """What stops the pictures, said in one line (no traceback)."""


@dataclass(frozen=True)
class RunInputs:
    """What the pictures read from a finished run; every path relative to ``root``."""

    root: Path
    data: str  # the built benchmark (paths.data)
    split: str  # the evaluated query split
    ground_truth: str | None
    descriptor: str  # the CopyNCE descriptor checkpoint
    predictions: str  # its plain predictions on ``split``
    scratch: str  # paths.runs/screenshots

    def path(self, rel: str) -> Path:
        return self.root / rel


@dataclass(frozen=True)
class Shot:
    """One picture written and the page text seen when it was taken."""

    path: Path
    text: str


def read_run(run: str | Path) -> RunInputs:
    """The inputs of the pictures in run folder ``run``; ``ScreenshotError`` naming what is missing."""
    from icdlib.pipeline.stage import Stage

    root = Path(run).resolve()
    if not root.is_dir():
        raise ScreenshotError(f"no run folder at {run}")
    params = root / "params.yaml"
    if not params.is_file():
        raise ScreenshotError(f"{params} not found: --run names the folder where the pipeline ran")
    try:
        st = Stage(params)
    except (ValueError, TypeError, OSError) as e:
        raise ScreenshotError(f"{params}: {e}") from None
    results = st.path("reports", "eval", "results.json")
    if not results.is_file():
        raise ScreenshotError(f"{results} not found: the run has no evaluate results (dvc repro evaluate)")
    try:
        res = json.loads(results.read_text())
        row = res["rows"][ROW]
        descriptor, predictions, split = row["checkpoint"], row["plain"]["predictions"], res["split"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ScreenshotError(f"{results}: no {ROW!r} row with a checkpoint and plain predictions ({e!r})") from None
    data = st.path("data")
    for need in (data / "manifest.json", root / descriptor, root / predictions):
        if not need.is_file():
            raise ScreenshotError(f"{need} not found (named by {results.name} or params.yaml of {root})")
    return RunInputs(root, st.relative(data), split, res.get("ground_truth"), descriptor, predictions,
                     st.relative(st.path("runs", "screenshots")))


def write_eval_folder(inp: RunInputs) -> str:
    """The evaluation folder the results tab opens (``python -m icdlib.evaluate --out`` layout, its
    paths relative to the run root), written under the scratch folder; returns its relative path."""
    from icdlib import atomic
    from icdlib.eval.engine import EVAL_CONFIG

    rel = f"{inp.scratch}/eval"
    folder = inp.path(rel)
    atomic.write_bytes(folder / "predictions.csv", inp.path(inp.predictions).read_bytes())
    atomic.write_json(folder / EVAL_CONFIG, {
        "data": inp.data, "split": inp.split, "ground_truth": inp.ground_truth, "descriptor": inp.descriptor,
        "predictions": inp.predictions, "note": "written by tools/screenshots.py from the evaluate stage's results"})
    return rel


def benchmark(inp: RunInputs):
    """The run's benchmark (:class:`icdlib.data.Disc21`) with the evaluation's ground truth."""
    from icdlib.data import Disc21

    return Disc21(inp.path(inp.data), ground_truth=inp.path(inp.ground_truth) if inp.ground_truth else None)


def pick_query(inp: RunInputs) -> int:
    """Index (in the results tab's "all queries" view) of the first query whose best reference is a
    true copy; else the first copy query; else 0."""
    from icdlib.eval.metrics import read_predictions
    from icdlib.viz.results import EvalRun

    copies: dict[str, set[str]] = {}
    for q, r in benchmark(inp).ground_truth(inp.split):
        copies.setdefault(q, set()).update([r] if r is not None else [])
    run = EvalRun(read_predictions(inp.path(inp.predictions)), copies, {}, {})
    queries = run.queries()
    for i, q in enumerate(queries):
        top = run.top(q, 1)
        if len(top) and bool(top["copy"].iloc[0]):
            return i
    return next((i for i, q in enumerate(queries) if run.copies.get(q)), 0)


def set_parameters(notebook: dict, values: dict[str, str]) -> dict:
    """``notebook`` with the literals of its ``parameters`` cell replaced (each line ``name = ...``
    keeps its comment); ``ScreenshotError`` when a name is not there."""
    cell = next(c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    src = "".join(cell["source"])
    for name, value in values.items():
        src, n = re.subn(rf"^{name} = [^#\n]*?(\s*#.*)?$", lambda m: f"{name} = {value!r}{m.group(1) or ''}",
                         src, flags=re.MULTILINE)
        if n != 1:
            raise ScreenshotError(f"{NOTEBOOK.name}: no parameter {name!r} in its parameters cell")
    cell["source"] = src.splitlines(True)
    return notebook


def search_gallery(inp: RunInputs, n_queries: int = SEARCH_QUERIES) -> Path:
    """``python -m icdlib.search``'s ``index.html`` for ``n_queries`` copy queries of the evaluated split
    against every reference, red frames at the score of 90 % precision on the evaluation."""
    from icdlib.eval.calibration import threshold_at_precision
    from icdlib.eval.cli import eval_config
    from icdlib.eval.folder_search import run_search
    from icdlib.eval.gallery import write_gallery
    from icdlib.eval.metrics import evaluate_files

    ds = benchmark(inp)
    copies = sorted({q for q, r in ds.ground_truth(inp.split) if r is not None})[:n_queries]
    paths = dict(ds.images(inp.split))
    out = inp.path(f"{inp.scratch}/search")
    shutil.rmtree(out, ignore_errors=True)
    queries = out / "queries"
    queries.mkdir(parents=True)
    for q in copies:
        shutil.copyfile(paths[q], queries / Path(paths[q]).name)
    threshold, note = None, ""
    gt = ds.gt_file(inp.split)
    if gt is not None:
        _, curve = evaluate_files(inp.path(inp.predictions), gt)
        threshold, _ = threshold_at_precision(curve, 0.9)
        if threshold is not None:
            note = f"threshold: the score of 90 % precision of the {ROW} on {inp.split}"
    cfg = dataclasses.replace(eval_config(inp.root / "params.yaml"), k=SEARCH_K)
    res = run_search(queries, inp.path(inp.descriptor), out / "search", inp.path(inp.data) / "reference_images",
                     cfg=cfg)
    return write_gallery(out / "index.html", res.matches, res.query_paths, res.reference_paths, threshold,
                         title=f"icdlib search: {len(copies)} queries of {inp.data}/{inp.split}", note=note)


def forbidden(root: Path) -> list[str]:
    """Machine paths no picture may show: the run's (``root``), the repository's, the home and temp folders."""
    found = {str(root), str(root.resolve()), str(ROOT), str(Path(tempfile.gettempdir()).resolve()), str(Path.home())}
    return sorted(s for s in found if len(s) > 1)


def check_paths(text: str, paths: list[str], what: str) -> str:
    """``text``, when none of ``paths`` is in it; else ``ScreenshotError`` quoting the line that shows one."""
    for s in paths:
        if s in text:
            line = next(ln for ln in text.splitlines() if s in ln)
            raise ScreenshotError(f"{what}: the page shows a machine path ({s}): {line.strip()[:200]}")
    return text


def page_text(page, inp: RunInputs, what: str) -> str:
    """The page's text and input values; ``ScreenshotError`` when it shows a machine path."""
    return check_paths(page.evaluate(PAGE_TEXT_JS), forbidden(inp.root), what)


def save(out: Path, name: str, png: bytes, text: str) -> Shot:
    from icdlib import atomic

    return Shot(atomic.write_bytes(out / name, png), text)


def stack(pngs: list[bytes]) -> bytes:
    """PNGs one above the other on white, left-aligned."""
    from PIL import Image

    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    canvas = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def clip(page, widget, top: float, bottom: float, trim: bool = True) -> bytes:
    """The explorer widget's pixels between page heights ``top`` and ``bottom``; ``trim``: only up to
    the right edge of what its visible tab draws (the figures leave the widget's right side blank)."""
    box = widget.bounding_box()
    right = box["x"] + box["width"]
    if trim:
        right = min(right, page.evaluate(CONTENT_RIGHT_JS, EXPLORER_WIDGET) + 16)
    return page.screenshot(clip={"x": box["x"], "y": top, "width": right - box["x"], "height": bottom - top})


def explorer_shots(page, inp: RunInputs, out: Path, copy: int, query: int) -> dict[str, Shot]:
    """explorer.png, results_browser.png and results_affinity.png from the explorer notebook's page."""
    page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
    widget = page.locator(EXPLORER_WIDGET).first
    widget.wait_for()
    kernel_execute(page, f"""
with explorer.hold():
    explorer.controls.benchmark.value = "embedded"
    explorer.controls.benchmark_copy.value = {int(copy)}
    explorer.controls.mode.value = "benchmark"
explorer.refresh()
assert not explorer.status.value, explorer.status.value
overlap = explorer.overlap  # a traced patch that spreads over the most reference patches, the central one
spread = (overlap[:, :-1] > 0.01).sum(1) * (overlap[:, -1] < 0.5)
best = spread.nonzero()[0] if spread.max() == 0 else (spread == spread.max()).nonzero()[0]
explorer.select_patch(int(best[len(best) // 2]) if len(best) else 0)
explorer.widget.selected_index = {TABS["trace"]}""")
    wait_for(page, PLOT_TITLE_JS, "query points trace into the reference", "the trace tab's correspondences")
    page.wait_for_timeout(1000)  # let plotly paint
    widget.evaluate("e => e.scrollIntoView({block: 'start'})")
    bar = widget.locator(".lm-TabBar").first.bounding_box()
    pair = widget.locator(".js-plotly-plot", has_text="query points trace into").first.bounding_box()
    parts = [clip(page, widget, bar["y"], bar["y"] + bar["height"]),  # the tab bar, then the pair and its trace
             clip(page, widget, pair["y"], pair["y"] + pair["height"])]
    text = page_text(page, inp, "explorer, tab trace")
    kernel_execute(page, f"explorer.widget.selected_index = {TABS['patch overlap']}")
    wait_for(page, PLOT_TITLE_JS, "overlap matrix [", "the patch overlap tab's matrix")
    page.wait_for_timeout(1000)
    box = widget.bounding_box()
    parts.append(clip(page, widget, bar["y"] + bar["height"] + 2, box["y"] + box["height"]))  # no tab-bar line
    text += "\n" + page_text(page, inp, "explorer, tab patch overlap")
    shots = {"explorer.png": save(out, "explorer.png", stack(parts), text)}

    kernel_execute(page, f"explorer.results.controls.query.value = {int(query)}\n"
                         f"explorer.widget.selected_index = {TABS['results']}")
    wait_for(page, HITS_JS, None, "the results tab's thumbnails")
    page.wait_for_timeout(500)
    button = widget.get_by_role("button", name="patch affinity").bounding_box()  # the last row above the figures
    shots["results_browser.png"] = save(out, "results_browser.png",
                                        clip(page, widget, bar["y"], button["y"] + button["height"] + 8, trim=False),
                                        page_text(page, inp, "results tab"))
    kernel_execute(page, "explorer.results.draw_affinity()")
    title = f"{Path(inp.descriptor).name}: descriptor cosine"
    wait_for(page, PLOT_TITLE_JS, title, "the patch affinity of the query and its best reference")
    page.wait_for_timeout(1000)
    fig = page.locator(".js-plotly-plot", has_text=title).first
    fig.scroll_into_view_if_needed()
    shots["results_affinity.png"] = save(out, "results_affinity.png", fig.screenshot(),
                                         page_text(page, inp, "patch affinity"))
    return shots


def take_screenshots(run: str | Path, out: str | Path, chromium: str = CHROMIUM,
                     copy: int | None = None) -> dict[str, Shot]:
    """Write the four pictures of run folder ``run`` into ``out``; ``copy``: the benchmark copy query
    the explorer opens (default: the one of median traced share)."""
    from icdlib.viz.queries import typical_copy

    inp = read_run(run)
    why = missing_requirement(chromium)
    if why:
        raise ScreenshotError(why)
    out = Path(out)
    eval_rel = write_eval_folder(inp)
    query = pick_query(inp)
    copy = typical_copy(inp.path(inp.data)) if copy is None else int(copy)
    gallery = search_gallery(inp)
    notebook = set_parameters(json.loads(NOTEBOOK.read_text()), {
        "descriptor": inp.descriptor, "results": eval_rel, "embedded_root": inp.data})
    with tempfile.TemporaryDirectory(prefix="icdlib-screenshots-") as scratch:
        with jupyter_lab(notebook, NOTEBOOK.name, Path(scratch), kernel_dir=inp.root,
                         env={"ICDLIB_PARAMS": str(inp.root / "params.yaml")}) as lab:
            with chromium_page(chromium, width=1400, height=1800) as page:
                run_notebook(page, lab)
                page.locator(".lm-TabBar-tab", has_text="results").first.wait_for()
                shots = explorer_shots(page, inp, out, copy, query)
        with chromium_page(chromium, width=1200, height=900) as page:
            page.goto(gallery.as_uri())
            page.wait_for_load_state("load")
            wait_for(page, "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)", None,
                     "the search gallery's thumbnails")
            shots["search.png"] = save(out, "search.png", page.screenshot(), page_text(page, inp, "search gallery"))
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="the folder where the pipeline ran (params.yaml, data, reports)")
    ap.add_argument("--out", default=str(ROOT / "reports" / "screenshots"),
                    help="where the pictures go (default: reports/screenshots of this repository)")
    ap.add_argument("--copy", type=int, help="the benchmark copy query the explorer opens (default: a typical one)")
    ap.add_argument("--chromium", default=CHROMIUM, help="chromium executable")
    args = ap.parse_args(argv)
    try:
        shots = take_screenshots(args.run, args.out, args.chromium, args.copy)
    except (ScreenshotError, TimeoutError, RuntimeError) as e:  # a missing input, or a page that never drew
        print(f"screenshots: {e}", file=sys.stderr)
        return 2
    for name, shot in shots.items():
        print(f"{shot.path} ({shot.path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
