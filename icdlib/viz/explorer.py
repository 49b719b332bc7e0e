"""Interactive PixTrace explorer: pick a source, build an edit chain, inspect the traces.

:class:`Explorer` ties ipywidgets controls to plotly ``FigureWidget`` views built from
the static figures of :mod:`icdlib.viz.figures`. Every control change recomputes the edited
image(s) with :func:`icdlib.edits.apply`, the query -> reference overlap with
:func:`icdlib.pixtrace.overlap`, and redraws. Clicking a query patch (or calling
:meth:`Explorer.select_patch`) shows which reference patches it overlaps, with ratios;
with a descriptor checkpoint loaded, the model's patch affinity for that patch sits
next to PixTrace's ground-truth row, and the pair's descriptor cosine (and matcher
score, with a matcher checkpoint) are shown. The ``benchmark`` source opens a built benchmark's copy
query beside its reference, with its recorded chain and exact trace (:mod:`icdlib.viz.queries`).

All widgets and figures are attributes, so code and tests drive it as a user would::

    ex = Explorer()
    ex.controls.seed.value = 3
    ex.random_button.click()
    ex.select_patch(5)

Pixel convention as in :mod:`icdlib.pixtrace`; sizes are ``(width, height)``.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
from types import SimpleNamespace
from typing import Any

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

from icdlib import edits
from icdlib.checkpoints import load_model
from icdlib.data import PROCEDURAL_KINDS, SPLIT_DIRS, Disc21, load_image, render, to_rgb8
from icdlib.models import preprocess
from icdlib.pixtrace import Mapping, Trace, overlap, transfer
from icdlib.viz import figures
from icdlib.viz.affinity import fit_size, map_patch, patch_affinity, resized_trace
from icdlib.viz.chain_widgets import ChainEditor
from icdlib.viz.config import BENCHMARKS, SOURCE_MODES, VizConfig
from icdlib.viz.queries import CopySource

def replace_figure(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Show static figure ``fig`` in ``widget`` (traces and layout replaced)."""
    widget.data = ()
    widget.add_traces(list(fig.data))
    widget.layout = fig.layout


# ---------------------------------------------------------------------- explorer
class Explorer:
    """ipywidgets + plotly explorer of edits, PixTrace overlaps and model affinities.

    Attributes (all public, for driving from code):
        controls: namespace of source/patch/mode widgets (``mode``, ``kind``, ``seed``,
            ``size``, ``disc21_root``, ``disc21_split``, ``disc21_index``, ``upload``, ``benchmark``,
            ``benchmark_copy``, ``patch``, ``copy_vs_copy``, ``chain_seed``, ``families``, ``descriptor``,
            ``matcher``); changing ``chain_seed``/``families`` takes effect on the random button.
        query_chain, reference_chain: :class:`icdlib.viz.chain_widgets.ChainEditor`.
        random_button, load_button: buttons (random chain; load checkpoints).
        images_fig, trace_fig, correspondence_fig, patch_fig, matrix_fig,
        affinity_fig: ``go.FigureWidget`` views. scores, status: ``W.HTML``.
        source, query, reference: PIL images; query_trace, reference_trace: traces;
        overlap: ``float32 [Nq, Nr + 1]`` numpy; selected: the query patch index.
        export_button, chain_json: export the chain(s) as JSON into a text area.
        widget: the whole UI, a ``W.Tab`` (display it in a notebook).
    """

    def __init__(self, config: VizConfig = VizConfig()):
        self.config = config
        self.selected = 0
        self.models: dict[str, tuple] = {}
        self._model_cache: dict[str, tuple] = {}
        self._hold = False
        self.copies = CopySource()  # the benchmark source's copy query
        c = config
        self.controls = SimpleNamespace(
            mode=W.ToggleButtons(options=SOURCE_MODES, value="procedural", description="source"),
            kind=W.Dropdown(options=PROCEDURAL_KINDS, value=c.source_kind, description="kind"),
            seed=W.IntText(value=c.seed, description="seed"),
            size=W.IntSlider(value=c.size, min=64, max=512, step=16, description="size (px)",
                             continuous_update=False),
            disc21_root=W.Text(value=c.disc21_root, description="DISC21 root"),
            disc21_split=W.Dropdown(options=list(SPLIT_DIRS), description="split"),
            disc21_index=W.IntText(value=0, description="image #"),
            upload=W.FileUpload(accept="image/*", multiple=False, description="upload"),
            benchmark=W.Dropdown(options=BENCHMARKS, description="benchmark"),
            benchmark_copy=W.IntText(value=0, description="copy #"),
            patch=W.Dropdown(options=list(c.patch_choices), value=c.patch, description="patch"),
            copy_vs_copy=W.Checkbox(value=False, description="copy vs copy"),
            chain_seed=W.IntText(value=c.chain_seed, description="chain seed"),
            families=W.SelectMultiple(options=edits.FAMILIES, value=edits.FAMILIES, rows=4,
                                      description="families"),
            descriptor=W.Text(value=c.descriptor, description="descriptor",
                              placeholder="checkpoint path"),
            matcher=W.Text(value=c.matcher, description="matcher", placeholder="checkpoint path"),
        )
        self.query_chain = ChainEditor("query edits", on_change=self.refresh)
        self.reference_chain = ChainEditor("reference edits", on_change=self.refresh)
        self.random_button = W.Button(description="random chain", icon="random")
        self.load_button = W.Button(description="load models", icon="upload")
        self.export_button = W.Button(description="export chain (JSON)", icon="download")
        self.chain_json = W.Textarea(layout=W.Layout(width="98%", height="90px"))
        self.export_button.on_click(lambda _: self.export_chain())
        self.random_button.on_click(lambda _: self.random_chain())
        self.load_button.on_click(lambda _: self.load_models())
        self.scores = W.HTML()
        self.status = W.HTML()
        self.images_fig = go.FigureWidget()
        self.trace_fig = go.FigureWidget()
        self.correspondence_fig = go.FigureWidget()
        self.patch_fig = go.FigureWidget()
        self.matrix_fig = go.FigureWidget()
        self.affinity_fig = go.FigureWidget()
        for w in vars(self.controls).values():
            if w not in (self.controls.descriptor, self.controls.matcher,
                         self.controls.chain_seed, self.controls.families):
                w.observe(lambda _: self.refresh(), names="value")
        self.widget = self._layout()
        with self.hold():
            if c.random_chain:
                self.random_chain()
        if c.descriptor or c.matcher:
            self.load_models()
        else:
            self.refresh()

    # ------------------------------------------------------------------ state
    @contextlib.contextmanager
    def hold(self):
        """Suspend refreshes while several controls change; call :meth:`refresh` after."""
        outer, self._hold = self._hold, True
        try:
            yield self
        finally:
            self._hold = outer

    def load_source(self) -> Image.Image:
        """The source image of the current source mode, RGB, longer side = ``size`` (``benchmark``: the
        reference of the copy query that ``benchmark`` and ``benchmark_copy`` name, as stored)."""
        c = self.controls
        if c.mode.value == "benchmark":
            return self.copies.get(self.config.benchmark_root(c.benchmark.value), c.benchmark_copy.value,
                                   c.benchmark.value).reference
        if c.mode.value == "procedural":
            return render(c.kind.value, int(c.seed.value), int(c.size.value))
        if c.mode.value == "disc21":
            if not c.disc21_root.value:
                raise ValueError("explorer: source 'disc21' needs the DISC21 root folder")
            items = Disc21(c.disc21_root.value).images(c.disc21_split.value)
            i = int(c.disc21_index.value)
            if not 0 <= i < len(items):
                raise ValueError(f"explorer: disc21_index {i} outside 0..{len(items) - 1} "
                                 f"of split {c.disc21_split.value}")
            return fit_size(load_image(items[i][1]), int(c.size.value))
        files = c.upload.value
        if not files:
            raise ValueError("explorer: source 'upload' needs an uploaded image file")
        item = files[0]
        try:
            img = Image.open(io.BytesIO(bytes(item["content"])))
            img.load()
        except Exception as e:  # PIL raises several types for undecodable bytes
            raise ValueError(f"explorer: cannot decode uploaded file {item.get('name')!r}: {e}") from e
        return fit_size(to_rgb8(img), int(c.size.value))

    def compute(self) -> None:
        """Recompute source, edited images, traces and the overlap from the controls."""
        self.source = self.load_source()
        with self.hold():  # a newly chosen copy query brings its recorded chain
            copy = self.copies.sync(self.query_chain if self.controls.mode.value == "benchmark" else None)
        if copy is not None and CopySource.recorded(copy, self.query_chain.specs()):
            self.query, self.query_trace = copy.query, copy.trace  # the stored query the models scored
        else:
            self.query, self.query_trace = edits.apply(self.source, self.query_chain.specs())
        if self.controls.copy_vs_copy.value:
            self.reference, self.reference_trace = edits.apply(self.source, self.reference_chain.specs())
        else:
            self.reference, self.reference_trace = self.source, Trace(self.source.size)
        self.overlap = overlap(self.query_trace, self.reference_trace,
                               int(self.controls.patch.value)).numpy()
        self.selected = min(self.selected, self.overlap.shape[0] - 1)
        self._model_cache = {}

    def refresh(self) -> None:
        """Recompute and redraw everything (no-op inside :meth:`hold`)."""
        if self._hold:
            return
        self.reference_chain.widget.layout.display = (
            None if self.controls.copy_vs_copy.value else "none")
        try:
            self.compute()
        except (ValueError, FileNotFoundError) as e:
            self.status.value = f"<b style='color:#c00'>{html.escape(str(e))}</b>"
            return
        self.status.value = ""
        self.draw()

    # ------------------------------------------------------------------ drawing
    def draw(self) -> None:
        """Rebuild every figure widget from the current state."""
        copy = self.controls.copy_vs_copy.value
        imgs = [self.source, self.query] + ([self.reference] if copy else [])
        titles = ["source", f"query {self.query.size}"] + (
            [f"reference {self.reference.size}"] if copy else [])
        replace_figure(self.images_fig, figures.images_figure(imgs, titles))
        replace_figure(self.trace_fig, figures.trace_figure(self.query_trace, "query"))
        replace_figure(self.correspondence_fig, figures.correspondence_figure(
            self.query, self.reference, self.transfer(), self.config.correspondence_grid))
        patch = int(self.controls.patch.value)
        replace_figure(self.patch_fig, figures.patch_overlap_figure(
            self.query, self.reference, self.overlap, patch, self.selected))
        self.patch_fig.data[1].on_click(self._on_patch_event)
        if self.config.select_on_hover:
            self.patch_fig.data[1].on_hover(self._on_patch_event)
        replace_figure(self.matrix_fig, figures.overlap_matrix_figure(self.overlap, self.selected))
        self.draw_model()

    def transfer(self) -> Mapping:
        """Exact query -> reference mapping of the current pair (through the source)."""
        return transfer(self.query_trace, self.reference_trace)

    def _on_patch_event(self, trace, points, state) -> None:
        if points.xs:
            i = figures.patch_of_point(points.xs[0], points.ys[0], self.query.size,
                                       int(self.controls.patch.value))
            if i is not None:
                self.select_patch(i)

    def select_patch(self, index: int) -> None:
        """Highlight query patch ``index`` and show its overlap (and affinity) row."""
        n = self.overlap.shape[0]
        if not 0 <= int(index) < n:
            raise ValueError(f"select_patch: patch index {index} outside 0..{n - 1}")
        self.selected = int(index)
        patch = int(self.controls.patch.value)
        ox, oy = figures.patch_outline(self.selected, self.query.size, patch)
        hm = figures.row_heatmap(self.overlap[self.selected, :-1], self.reference.size, patch)
        with self.patch_fig.batch_update():
            self.patch_fig.data[3].x, self.patch_fig.data[3].y = ox, oy
            self.patch_fig.data[6].z, self.patch_fig.data[6].text = hm["z"], hm["text"]
            self.patch_fig.layout.annotations[1].text = figures.overlap_title(
                self.overlap, self.selected)
        with self.matrix_fig.batch_update():
            self.matrix_fig.layout.shapes[1].y0 = self.selected - 0.5
            self.matrix_fig.layout.shapes[1].y1 = self.selected + 0.5
        self.draw_model()

    def highlighted_ratios(self) -> np.ndarray:
        """``float [Nr]`` ratios shown over the reference grid (0 where not overlapped)."""
        return np.nan_to_num(np.asarray(self.patch_fig.data[6].z, dtype=np.float64)).reshape(-1)

    def random_chain(self) -> None:
        """Fill the query chain (and the reference chain, seed + 1) with sampled edits."""
        seed = int(self.controls.chain_seed.value)
        families = list(self.controls.families.value)
        if not families:
            self.status.value = "<b style='color:#c00'>random chain: pick at least one family</b>"
            return
        with self.hold():
            self.query_chain.set_specs(edits.sample_chain(seed, families))
            self.reference_chain.set_specs(edits.sample_chain(seed + 1, families))
        self.refresh()

    def export_chain(self) -> str:
        """The current chain(s) as JSON (also shown in ``chain_json``): ``{"query": [spec, ...],
        "reference": [...] or null}``, specs as :func:`icdlib.edits.apply` takes them."""
        copy = self.controls.copy_vs_copy.value
        text = json.dumps({"query": self.query_chain.specs(),
                           "reference": self.reference_chain.specs() if copy else None}, indent=1)
        self.chain_json.value = text
        return text

    # ------------------------------------------------------------------ models
    def load_models(self) -> None:
        """Load the descriptor/matcher checkpoints named in the path fields.

        A checkpoint whose kind does not match its field is reported in ``status``.
        """
        self.models, self._model_cache = {}, {}
        try:
            for kind in ("descriptor", "matcher"):
                path = getattr(self.controls, kind).value.strip()
                if path:
                    model, meta = load_model(path, what="explorer checkpoint")
                    if meta.get("kind") != kind:
                        raise ValueError(f"explorer: {path} holds a {meta.get('kind')} "
                                         f"checkpoint, not a {kind}")
                    self.models[kind] = (model, meta)
        except (ValueError, FileNotFoundError) as e:
            self.models = {}
            self.refresh()
            self.status.value = f"<b style='color:#c00'>{html.escape(str(e))}</b>"
            return
        self.refresh()

    def model_scores(self) -> dict[str, Any]:
        """Model outputs for the current pair and selected patch (empty without models).

        Returns a dict with ``cosine`` (descriptor cosine of query vs reference) and/or
        ``matcher`` (sigmoid of the matcher logit), and, from the descriptor's patch
        tokens (the matcher's fused tokens when only a matcher is loaded): ``affinity``
        (``float32 [Nr]`` on the model grid, :func:`patch_affinity`), ``target``
        (``float32 [Nr + 1]``: PixTrace's overlap row of the same model patch, both
        images resized to the model input), ``patch`` (that model patch), ``size`` and
        ``model_patch`` (input side and patch side, px) and ``tokens_from``.
        """
        out: dict[str, Any] = {}
        for kind in ("descriptor", "matcher"):
            if kind not in self.models:
                continue
            score, q_tok, r_tok, target, s, p = self._model_pass(kind)
            out["cosine" if kind == "descriptor" else "matcher"] = score
            if "affinity" in out:
                continue
            j = map_patch(self.selected, self.query.size, int(self.controls.patch.value), (s, s), p)
            out.update(affinity=patch_affinity(q_tok, r_tok, j, self.config.affinity_scale).numpy(),
                       target=target[j].numpy(), patch=j, size=s, model_patch=p, tokens_from=kind)
        return out

    def _model_pass(self, kind: str):
        """One forward pass of model ``kind`` on the current pair, cached until it changes.

        Returns ``(score, q_tokens [N, C], r_tokens [N, C], overlap [N, N + 1] on the
        model grid, input side, patch side)``.
        """
        if kind not in self._model_cache:
            model = self.models[kind][0]
            s, p = model.config.img_size, model.config.patch_size
            x = preprocess([self.query, self.reference], s)
            with torch.no_grad():
                if kind == "descriptor":
                    desc, tokens = model.forward_with_tokens(x)
                    score = float(torch.dot(desc[0], desc[1]))  # unit-norm descriptors
                    q_tok, r_tok = tokens[0], tokens[1]
                else:
                    logit, q_tok, r_tok = model.forward_with_tokens(x[:1], x[1:])
                    score = float(torch.sigmoid(logit[0]))
                    q_tok, r_tok = q_tok[0], r_tok[0]
            target = overlap(resized_trace(self.query_trace, (s, s)),
                             resized_trace(self.reference_trace, (s, s)), p)
            self._model_cache[kind] = (score, q_tok, r_tok, target, s, p)
        return self._model_cache[kind]

    def draw_model(self) -> None:
        """Update the affinity figure and the score line."""
        if not self.models:
            self.scores.value = "<i>no checkpoint loaded</i>"
            replace_figure(self.affinity_fig, go.Figure())
            return
        out = self.model_scores()
        parts = []
        if "cosine" in out:
            parts.append(f"descriptor cosine <b>{out['cosine']:.3f}</b>")
        if "matcher" in out:
            parts.append(f"matcher score <b>{out['matcher']:.3f}</b>")
        self.scores.value = " &nbsp; ".join(parts)
        s = out["size"]
        replace_figure(self.affinity_fig, figures.affinity_figure(
            self.reference.resize((s, s), Image.BICUBIC), out["affinity"], out["target"],
            out["model_patch"], out["patch"],
            subtitle=f"{out['tokens_from']} tokens, {s}px, tau={self.config.affinity_scale:g}"))

    # ------------------------------------------------------------------ layout
    def _layout(self) -> W.Widget:
        c = self.controls
        for ed in (self.query_chain, self.reference_chain):
            ed.rows_box.layout = W.Layout(max_height="360px", overflow="auto")
        source = W.VBox([c.mode, W.HBox([c.kind, c.seed]), c.size, c.disc21_root,
                         W.HBox([c.disc21_split, c.disc21_index]), c.upload, W.HBox([c.benchmark, c.benchmark_copy])])
        chain = W.VBox([W.HBox([c.chain_seed, self.random_button]), c.families,
                        W.HBox([c.copy_vs_copy, c.patch])])
        model = W.HBox([c.descriptor, c.matcher, self.load_button])
        tabs = W.Tab(children=[
            W.VBox([W.HBox([source, chain]), self.query_chain.widget, self.reference_chain.widget, self.status,
                    W.HBox([self.export_button]), self.chain_json, self.images_fig]),
            W.VBox([self.trace_fig, self.correspondence_fig]),
            W.VBox([self.patch_fig, self.matrix_fig]),
            W.VBox([model, self.scores, self.affinity_fig])])
        for i, title in enumerate(("edit chain", "trace", "patch overlap", "model")):
            tabs.set_title(i, title)
        return tabs

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
