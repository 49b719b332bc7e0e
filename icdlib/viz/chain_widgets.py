"""ipywidgets editor of an edit chain, built generically from :data:`icdlib.edits.OPS`.

Each registered :class:`icdlib.edits.Param` becomes one control, chosen by its kind:

=========  =========================================================
kind       control
=========  =========================================================
float      ``FloatSlider`` over ``[low, high]`` (``FloatText`` if unbounded)
int        ``IntSlider`` over ``[low, high]``; ``IntText`` for seeds and wide ranges
bool       ``Checkbox``
choice     ``Dropdown`` of ``choices``
color      ``ColorPicker`` (spec value: RGB tuple 0..255)
text       ``Text``
floats     one ``BoundedFloatText`` per entry
=========  =========================================================

No op is special-cased, so an op added to the registry gets controls for free.
"""

from __future__ import annotations

from typing import Any, Callable

import ipywidgets as W
import numpy as np

from icdlib import edits
from icdlib.edits import SAMPLERS, EditConfig

WIDE_INT_RANGE = 10_000  # above this many values a slider is useless: use a text field
SLIDER_STEPS = 200  # float slider resolution over its range
_ITEM = W.Layout(width="300px")
_SMALL = W.Layout(width="34px")


class ParamControl:
    """One widget (or a row of them) holding the value of one op parameter.

    Attributes:
        param: the :class:`icdlib.edits.Param`; widget: the displayed widget.
    """

    def __init__(self, param: "edits.Param", value: Any):
        self.param = param
        p, style = param, {"description_width": "90px"}
        if p.kind in ("float", "int") and p.low is not None and p.high is not None and (
                p.kind == "float" or p.high - p.low <= WIDE_INT_RANGE):
            if p.kind == "float":
                step = (p.high - p.low) / SLIDER_STEPS
                self._parts = [W.FloatSlider(min=p.low, max=p.high, step=step, readout_format=".3g",
                                             continuous_update=False,
                                             description=p.name, style=style, layout=_ITEM)]
            else:
                self._parts = [W.IntSlider(min=int(p.low), max=int(p.high), description=p.name,
                                           continuous_update=False,
                                           style=style, layout=_ITEM)]
        elif p.kind == "float":
            self._parts = [W.FloatText(description=p.name, style=style, layout=_ITEM)]
        elif p.kind == "int":
            self._parts = [W.IntText(description=p.name, style=style, layout=_ITEM)]
        elif p.kind == "bool":
            self._parts = [W.Checkbox(description=p.name, indent=False, layout=_ITEM)]
        elif p.kind == "choice":
            self._parts = [W.Dropdown(options=list(p.choices), description=p.name, style=style,
                                      layout=_ITEM)]
        elif p.kind == "color":
            self._parts = [W.ColorPicker(description=p.name, style=style, layout=_ITEM)]
        elif p.kind == "text":
            self._parts = [W.Text(description=p.name, style=style, layout=_ITEM)]
        elif p.kind == "floats":
            self._parts = [W.BoundedFloatText(min=p.low, max=p.high, step=0.01,
                                              layout=W.Layout(width="70px"))
                           for _ in range(p.length)]
        else:
            raise ValueError(f"ParamControl: parameter {p.name!r} has unknown kind {p.kind!r}")
        if p.kind == "floats":
            self.widget = W.HBox([W.Label(p.name, layout=W.Layout(width="90px"))] + self._parts)
        else:
            self.widget = self._parts[0]
        self.widget.tooltip = p.doc
        self.set(value)

    def get(self) -> Any:
        """The value in spec form (RGB tuples for colours, lists for ``floats``)."""
        if self.param.kind == "color":
            h = self._parts[0].value.lstrip("#")
            return [int(h[k:k + 2], 16) for k in (0, 2, 4)]
        if self.param.kind == "floats":
            return [float(w.value) for w in self._parts]
        return self._parts[0].value

    def set(self, value: Any) -> None:
        if self.param.kind == "color":
            self._parts[0].value = "#" + "".join(f"{int(v):02x}" for v in value)
        elif self.param.kind == "floats":
            for w, v in zip(self._parts, value):
                w.value = float(v)
        else:
            self._parts[0].value = value

    def observe(self, callback: Callable[[], None]) -> None:
        for w in self._parts:
            w.observe(lambda _: callback(), names="value")


def default_spec(op_name: str, seed: int = 0) -> dict:
    """A valid, typical spec of ``op_name``, for the "add edit" button.

    Ops with a sampler in :data:`icdlib.edits.SAMPLERS` get a draw from it (seeded by
    ``seed``), so the new edit looks like one of a random chain. Other ops get their
    defaults, and required parameters a neutral pick: the lower bound for numbers (0
    for a seed), the first choice, white, ``"copy"``, False.
    """
    if op_name not in edits.OPS:
        raise ValueError(f"default_spec: unknown edit op {op_name!r}; known: {edits.list_ops()}")
    if op_name in SAMPLERS:
        spec, _ = SAMPLERS[op_name](np.random.default_rng(seed), EditConfig())
        return edits.complete(spec)
    spec: dict[str, Any] = {"op": op_name}
    for p in edits.OPS[op_name].params:
        if not p.required:
            continue
        if p.kind in ("float", "int"):
            low = p.low if p.low is not None else 0
            spec[p.name] = int(low) if p.kind == "int" else float(low)
        elif p.kind == "bool":
            spec[p.name] = False
        elif p.kind == "choice":
            spec[p.name] = p.choices[0]
        elif p.kind == "color":
            spec[p.name] = [255, 255, 255]
        elif p.kind == "text":
            spec[p.name] = "copy"
        elif p.kind == "floats":
            spec[p.name] = [max(p.low, min(p.high, 0.0))] * p.length
    return edits.complete(spec)


class EditRow:
    """Controls of one edit in a chain: its parameters and move/remove buttons."""

    def __init__(self, spec: dict, on_change: Callable[[], None]):
        op, params = edits.validate(spec)
        self.op = op.name
        self.params = {p.name: ParamControl(p, params[p.name]) for p in op.params}
        for ctl in self.params.values():
            ctl.observe(on_change)
        self.up = W.Button(icon="arrow-up", tooltip="move up", layout=_SMALL)
        self.down = W.Button(icon="arrow-down", tooltip="move down", layout=_SMALL)
        self.remove = W.Button(icon="trash", tooltip="remove", layout=_SMALL)
        title = W.HTML(f"<b>{op.name}</b> <small>({op.family}) {op.doc}</small>")
        self.widget = W.VBox(
            [W.HBox([self.up, self.down, self.remove, title]),
             W.HBox([c.widget for c in self.params.values()],
                    layout=W.Layout(flex_flow="row wrap", margin="0 0 0 40px"))],
            layout=W.Layout(border="1px solid #ddd", padding="2px", margin="2px 0"))

    def spec(self) -> dict:
        """The edit as a spec dict (validated by :func:`icdlib.edits.apply`)."""
        return {"op": self.op, **{k: c.get() for k, c in self.params.items()}}


class ChainEditor:
    """Add, remove, reorder and tune the edits of one chain.

    Attributes:
        rows: list of :class:`EditRow`, in order of application.
        op_picker: ``Dropdown`` of registered ops; add_button appends it; clear_button.
        rows_box: ``VBox`` of the rows' widgets; widget: the editor's ``VBox``.
    """

    def __init__(self, title: str, on_change: Callable[[], None]):
        self.on_change = on_change
        self.rows: list[EditRow] = []
        self.op_picker = W.Dropdown(options=edits.list_ops(), description="op",
                                    layout=W.Layout(width="220px"))
        self.add_button = W.Button(description="add edit", icon="plus")
        self.clear_button = W.Button(description="clear", icon="times")
        self.add_button.on_click(lambda _: self.add(self.op_picker.value))
        self.clear_button.on_click(lambda _: self.set_specs([]))
        self.rows_box = W.VBox()
        self.widget = W.VBox([W.HTML(f"<b>{title}</b>"),
                              W.HBox([self.op_picker, self.add_button, self.clear_button]),
                              self.rows_box])

    def specs(self) -> list[dict]:
        """The chain as a list of spec dicts."""
        return [row.spec() for row in self.rows]

    def set_specs(self, specs: list[dict]) -> None:
        """Replace the whole chain (one ``on_change`` call)."""
        self.rows = [self._row(s) for s in specs]
        self._changed()

    def add(self, spec: dict | str) -> None:
        """Append an edit: a spec dict, or an op name (filled by :func:`default_spec`,
        seeded by the chain's length so repeated adds differ)."""
        if isinstance(spec, str):
            spec = default_spec(spec, seed=len(self.rows))
        self.rows.append(self._row(spec))
        self._changed()

    def remove(self, index: int) -> None:
        """Drop edit ``index``."""
        self._check(index, "remove")
        del self.rows[index]
        self._changed()

    def move(self, index: int, delta: int) -> None:
        """Move edit ``index`` by ``delta`` places (clipped to the chain's ends)."""
        self._check(index, "move")
        j = min(max(index + delta, 0), len(self.rows) - 1)
        self.rows.insert(j, self.rows.pop(index))
        self._changed()

    def _check(self, index: int, what: str) -> None:
        if not 0 <= index < len(self.rows):
            raise ValueError(f"ChainEditor.{what}: edit index {index} outside 0..{len(self.rows) - 1}")

    def _row(self, spec: dict) -> EditRow:
        row = EditRow(spec, self.on_change)
        row.up.on_click(lambda _: self.move(self.rows.index(row), -1))
        row.down.on_click(lambda _: self.move(self.rows.index(row), +1))
        row.remove.on_click(lambda _: self.remove(self.rows.index(row)))
        return row

    def _changed(self) -> None:
        self.rows_box.children = [r.widget for r in self.rows]
        self.on_change()
