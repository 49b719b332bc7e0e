"""Results browser: step through an evaluation's queries, their hits, false positives and misses.

An evaluation folder is what ``python -m icdlib.evaluate --out DIR`` writes:
``predictions.csv`` and ``eval_config.json`` (benchmark root and query split, from which
the images and the ground truth are found; a ground-truth CSV may be given instead).
For each query :class:`ResultsBrowser` shows its top-k references as thumbnails with
scores, marks each as a true copy (green) or not (red), and lists the ground-truth
copies missing from its predictions ("missed", orange). Picking one of the pairs draws
the patch affinity of up to two descriptors, one above the other, on that real pair
(:func:`icdlib.viz.compare.compare`), e.g. an InfoNCE and a CopyNCE checkpoint.

Definitions, per query: a *false positive at rank 1* is a query whose best-scored
prediction is not a ground-truth copy (distractor queries included); a *missed copy* is
a ground-truth pair the predictions do not contain at all.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import ipywidgets as W
import pandas as pd
import plotly.graph_objects as go

from icdlib.data import Disc21
from icdlib.eval.engine import load_checkpoint
from icdlib.eval.gallery import thumbnail_uri
from icdlib.eval.metrics import read_predictions
from icdlib.viz.compare import compare
from icdlib.viz.explorer import Explorer, VizConfig

VIEWS = ("all queries", "false positive at rank 1", "missed copies")
MARKS = {True: ("#2ca02c", "copy"), False: ("#d62728", "not a copy"), None: ("#ff7f0e", "missed")}


@dataclass
class EvalRun:
    """An evaluation folder, read.

    Attributes:
        predictions: ``query_id, reference_id, score`` (higher = more likely a copy).
        copies: query id -> set of its ground-truth reference ids (empty: distractor).
        query_paths, reference_paths: id -> image file.
    """

    predictions: pd.DataFrame
    copies: dict[str, set[str]]
    query_paths: dict
    reference_paths: dict

    def top(self, query: str, k: int) -> pd.DataFrame:
        """``reference_id, score, rank, copy`` of the query's ``k`` best predictions."""
        p = self.predictions[self.predictions["query_id"] == query]
        p = p.sort_values("score", ascending=False, kind="stable").head(k).reset_index(drop=True)
        return p.assign(rank=range(1, len(p) + 1), copy=p["reference_id"].isin(self.copies.get(query, set())))

    def missed(self, query: str) -> list[str]:
        """Ground-truth references of ``query`` absent from its predictions, sorted."""
        got = set(self.predictions.loc[self.predictions["query_id"] == query, "reference_id"])
        return sorted(self.copies.get(query, set()) - got)

    def queries(self, view: str = "all queries") -> list[str]:
        """Query ids of a :data:`VIEWS` entry, sorted by id."""
        if view not in VIEWS:
            raise ValueError(f"results: view must be one of {VIEWS}, got {view!r}")
        qs = sorted(set(self.copies) | set(self.predictions["query_id"]))
        if view == "false positive at rank 1":
            best = self.predictions.sort_values("score", ascending=False, kind="stable").drop_duplicates("query_id")
            return [q for q, r in zip(best["query_id"], best["reference_id"]) if r not in self.copies.get(q, set())]
        if view == "missed copies":
            return [q for q in qs if self.missed(q)]
        return qs


def load_eval_run(folder: str | Path, ground_truth: str | Path | None = None) -> EvalRun:
    """Read an evaluation folder (``predictions.csv`` + ``eval_config.json``).

    Raises ``FileNotFoundError``/``ValueError`` naming the missing or malformed file.
    """
    folder = Path(folder)
    cfg_file = folder / "eval_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"results: {cfg_file} not found (an evaluation folder of python -m icdlib.evaluate)")
    try:
        cfg = json.loads(cfg_file.read_text())
        root, split = cfg["data"], cfg["split"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"results: {cfg_file} lacks the benchmark 'data' and 'split' ({e})") from e
    preds = read_predictions(folder / "predictions.csv")
    ds = Disc21(root, ground_truth=ground_truth or cfg.get("ground_truth"))
    rows = ds.ground_truth(split)
    copies: dict[str, set[str]] = {}
    for q, r in rows:
        copies.setdefault(q, set())
        if r is not None:
            copies[q].add(r)
    return EvalRun(preds, copies, dict(ds.images(split)), dict(ds.images("reference")))


class ResultsBrowser:
    """ipywidgets browser of one evaluation folder (see the module docstring).

    Attributes (public, for driving from code and tests):
        controls: ``folder``, ``ground_truth``, ``view``, ``query`` (slider, recomputes on
            release), ``k``, ``pair`` (the reference shown in the affinity panel),
            ``descriptor_a``, ``descriptor_b`` (checkpoint paths).
        load_button, prev_button, next_button, compare_button: buttons.
        run: the loaded :class:`EvalRun`; current: the query id shown.
        hits: ``W.HTML`` thumbnails; status: ``W.HTML``; affinity_a, affinity_b: figures.
        widget: the whole panel.
    """

    def __init__(self, folder: str = "", descriptor_a: str = "", descriptor_b: str = "", k: int = 5):
        self.run: EvalRun | None = None
        self.current: str | None = None
        self._models: dict[str, object] = {}
        self.controls = c = SimpleNamespace()
        c.folder = W.Text(value=folder, description="eval folder", placeholder="python -m icdlib.evaluate --out DIR")
        c.ground_truth = W.Text(description="ground truth", placeholder="(default: the benchmark's)")
        c.view = W.Dropdown(options=VIEWS, description="show")
        c.query = W.IntSlider(min=0, max=0, description="query #", continuous_update=False)
        c.k = W.IntSlider(value=k, min=1, max=20, description="top k", continuous_update=False)
        c.pair = W.Dropdown(options=[], description="pair")
        c.descriptor_a = W.Text(value=descriptor_a, description="model A", placeholder="descriptor checkpoint")
        c.descriptor_b = W.Text(value=descriptor_b, description="model B", placeholder="(optional)")
        self.load_button = W.Button(description="load", icon="folder-open")
        self.prev_button, self.next_button = W.Button(description="previous"), W.Button(description="next")
        self.compare_button = W.Button(description="patch affinity", icon="th")
        self.hits, self.status = W.HTML(), W.HTML()
        self.affinity_a, self.affinity_b = go.FigureWidget(), go.FigureWidget()
        self.affinity_box = W.VBox([self.affinity_a, self.affinity_b])  # stacked: 3 panels need the full width
        self.load_button.on_click(lambda _: self.load())
        self.prev_button.on_click(lambda _: self.step(-1))
        self.next_button.on_click(lambda _: self.step(1))
        self.compare_button.on_click(lambda _: self.draw_affinity())
        c.view.observe(lambda _: self._refilter(), names="value")
        for w in (c.query, c.k):
            w.observe(lambda _: self.show(), names="value")
        self.widget = W.VBox([
            W.HBox([c.folder, c.ground_truth, self.load_button]),
            W.HBox([c.view, c.query, self.prev_button, self.next_button, c.k]), self.status, self.hits,
            W.HBox([c.pair, c.descriptor_a, c.descriptor_b, self.compare_button]),
            self.affinity_box])
        if folder:
            self.load()

    def _error(self, e: Exception) -> None:
        self.status.value = f"<b style='color:#c00'>{html.escape(str(e))}</b>"

    def load(self) -> None:
        """Read the folder named in ``controls.folder`` and show its first query."""
        try:
            c = self.controls
            self.run = load_eval_run(c.folder.value.strip(), c.ground_truth.value.strip() or None)
        except (ValueError, FileNotFoundError) as e:
            self.run = None
            return self._error(e)
        self._refilter()

    def _refilter(self) -> None:
        if self.run is None:
            return
        self.shown = self.run.queries(self.controls.view.value)
        q = self.controls.query
        q.max = max(len(self.shown) - 1, 0)
        if q.value == 0:
            self.show()
        q.value = 0  # (re)draws through the observer when it changes

    def step(self, delta: int) -> None:
        """Previous (-1) or next (+1) query of the current view."""
        q = self.controls.query
        q.value = min(max(q.value + delta, 0), q.max)

    def show(self) -> None:
        """Draw the current query's top-k, its marks and its missed copies."""
        if self.run is None:
            return
        if not self.shown:
            self.current, self.hits.value = None, ""
            self.status.value = f"<i>no query in view {self.controls.view.value!r}</i>"
            return
        run, q = self.run, self.shown[self.controls.query.value]
        self.current = q
        top, missed = run.top(q, self.controls.k.value), run.missed(q)
        cells = [self._cell(run.query_paths.get(q), f"query {q}", "#333")]
        for m in top.itertuples():
            colour, word = MARKS[bool(m.copy)]
            cells.append(self._cell(run.reference_paths.get(m.reference_id),
                                    f"#{m.rank} {m.reference_id}<br><b>{m.score:.3f}</b> {word}", colour, "hit"))
        for r in missed:
            cells.append(self._cell(run.reference_paths.get(r), f"{r}<br>missed copy", MARKS[None][0], "missed"))
        self.hits.value = "<div style='display:flex;gap:8px;flex-wrap:wrap'>" + "".join(cells) + "</div>"
        kind = "distractor" if not run.copies.get(q) else f"{len(run.copies[q])} copy(ies)"
        self.status.value = (f"query {self.controls.query.value + 1} of {len(self.shown)} "
                             f"({html.escape(self.controls.view.value)}): {html.escape(q)}, {kind}")
        pairs = list(top["reference_id"]) + missed
        self.controls.pair.options = pairs
        self.controls.pair.value = pairs[0] if pairs else None

    @staticmethod
    def _cell(path, caption: str, colour: str, css: str = "query") -> str:
        try:
            img = f"<img class='{css}' src='{thumbnail_uri(path, 128)}' style='border:4px solid {colour}'>"
        except (FileNotFoundError, ValueError, TypeError):
            img = f"<div style='width:128px;height:96px;border:4px solid {colour}'>image not readable</div>"
        return (f"<figure style='margin:0;width:140px;font-size:11px;word-break:break-all'>{img}"
                f"<figcaption>{caption}</figcaption></figure>")

    def _model(self, path: str):
        if path not in self._models:
            self._models[path] = load_checkpoint(path, "descriptor")[0]
        return self._models[path]

    def draw_affinity(self) -> None:
        """Patch affinity of (current query, ``controls.pair``) under model A (and B)."""
        if self.run is None or self.current is None or not self.controls.pair.value:
            return self._error(ValueError("results: load a folder and pick a pair first"))
        q = self.run.query_paths[self.current]
        r = self.run.reference_paths.get(self.controls.pair.value)
        try:
            c = self.controls
            figs = []
            for field in (c.descriptor_a, c.descriptor_b):
                path = field.value.strip()
                if not path:
                    figs.append(go.FigureWidget())
                    continue
                res = compare(q, r, descriptor=self._model(path))
                title = f"{Path(path).name}: {res.figure.layout.title.text}"
                # a new widget per figure: plotly's front end lays multi-panel figures out
                # reliably only when they arrive whole, not when traces replace others
                figs.append(go.FigureWidget(res.figure.update_layout(title=title)))
            self.affinity_a, self.affinity_b = figs
            self.affinity_box.children = figs
        except (ValueError, FileNotFoundError) as e:
            self._error(e)


def explorer_with_results(config=None, folder: str = "", descriptor_a: str = "", descriptor_b: str = ""):
    """The explorer (:class:`icdlib.viz.explorer.Explorer`) with a "results" tab holding a
    :class:`ResultsBrowser` (as ``explorer.results``). ``config``: a ``VizConfig`` (default one)."""
    ex = Explorer(config if config is not None else VizConfig())
    ex.results = ResultsBrowser(folder, descriptor_a or ex.controls.descriptor.value, descriptor_b)
    ex.widget.children = tuple(ex.widget.children) + (ex.results.widget,)
    ex.widget.set_title(len(ex.widget.children) - 1, "results")
    return ex
