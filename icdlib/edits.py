"""DISC21-style image edits that log exact PixTrace steps.

An edit chain is a list of plain, JSON-serialisable dicts (*specs*)::

    [{"op": "rotate", "degrees": 30, "expand": True},
     {"op": "text", "text": "lol", "x": 0.1, "y": 0.7, "size": 0.12, ...}]

:func:`apply` replays a chain on a PIL RGB image and returns the edited image together
with a :class:`icdlib.pixtrace.Trace` from the input frame to the output frame.
Every op is registered in :data:`OPS` with a typed parameter table (:class:`Param`):
the table validates specs (bad input raises ``ValueError`` naming the op and the
parameter) and lets user interfaces build controls generically.

Conventions
-----------
* Pixels: continuous ``(x, y)``, pixel (col c, row r) covers ``[c, c+1) x [r, r+1)``,
  centre ``(c + 0.5, r + 0.5)``; sizes are ``(width, height)``. Rotations, affine,
  perspective and object warps go through :func:`icdlib.warps.warp`, which hands
  Pillow the exact inverse of the logged matrix (Pillow samples at output pixel
  centres; ``tests/test_exactness.py`` checks it); crops, pastes and paddings use
  whole-pixel offsets and resizes the exact size ratio.
* Relative parameters: positions, lengths and areas are fractions of the current
  image size, so a chain means the same thing at any resolution.
* Randomness an op needs (donor images, polygon shapes, noise) comes from an integer
  ``seed`` stored in the spec; replaying a spec gives identical bytes.
* Occlusion: :func:`apply` tracks the source's share (blend weight) of every output
  pixel through the chain; a pixel is untraceable once that share is
  <= 1 - ``EditConfig.occlusion_threshold``. A single layer of opacity >= threshold
  hides what it covers; translucent layers compound (0.4 over 0.4 leaves 0.36).
* Families: ``geometric``, ``composite``, ``overlay`` and ``photometric``; photometric
  ops change appearance only and log no step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from icdlib.pixtrace import Step, Trace

FAMILIES = ("geometric", "composite", "overlay", "photometric")
REQUIRED = object()  # sentinel: the parameter has no default and must be given


@dataclass(frozen=True)
class Param:
    """One parameter of an op.

    Attributes:
        name: key in the spec dict.
        kind: ``"float" | "int" | "bool" | "choice" | "color" | "text" | "floats"``.
        low, high: inclusive bounds for numbers (``floats``: bounds of every entry).
        default: value used when the spec omits the key; :data:`REQUIRED` if none.
        choices: allowed values of a ``choice`` parameter.
        length: number of entries of a ``floats`` parameter.
        doc: one line: meaning, unit and convention.
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    default: Any = REQUIRED
    choices: tuple = ()
    length: int = 0
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Op:
    """A registered edit: ``fn(image, params, ctx) -> (image, [Step, ...])``."""

    name: str
    family: str
    fn: Callable
    params: tuple[Param, ...]
    doc: str = ""

    def defaults(self) -> dict[str, Any]:
        """Defaults of the optional parameters (required ones are absent)."""
        return {p.name: p.default for p in self.params if not p.required}


OPS: dict[str, Op] = {}


def register(name: str, family: str, *params: Param):
    """Decorator adding ``fn`` to :data:`OPS` under ``name``."""
    if family not in FAMILIES:
        raise ValueError(f"register {name}: unknown family {family!r}; expected one of {FAMILIES}")

    def deco(fn):
        if name in OPS:
            raise ValueError(f"register: op {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        OPS[name] = Op(name, family, fn, tuple(params), doc[0] if doc else "")
        return fn

    return deco


def list_ops(family: str | None = None) -> list[str]:
    """Names of the registered ops (optionally of one family), sorted."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"list_ops: unknown family {family!r}; expected one of {FAMILIES}")
    return sorted(n for n, op in OPS.items() if family is None or op.family == family)


# ------------------------------------------------------------------ shared parameters
def color_param(name: str = "color", default=(0, 0, 0), doc: str = "RGB 0..255") -> Param:
    return Param(name, "color", 0, 255, default=tuple(default), doc=doc)


def opacity_param(default: Any = 1.0) -> Param:
    return Param("opacity", "float", 0.0, 1.0, default, doc="opacity of the pasted layer, 0..1")


SEED = Param("seed", "int", 0, 2**63 - 1, doc="seed of the op's own random draws (donors, shapes)")
RESAMPLE = Param(
    "resample", "choice", default="bilinear", choices=("nearest", "bilinear", "bicubic"),
    doc="interpolation of the warp",
)
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


# ------------------------------------------------------------------ validation
def _check_value(op: str, p: Param, v: Any) -> Any:
    where = f"{op}: parameter {p.name!r}"
    if p.kind in ("float", "int"):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{where} must be a number, got {v!r}")
        if not math.isfinite(float(v)):
            raise ValueError(f"{where} must be finite, got {v!r}")
        if p.kind == "int":
            if not isinstance(v, (int, np.integer)) and not float(v).is_integer():
                raise ValueError(f"{where} must be an integer, got {v!r}")
            v = int(v)
        else:
            v = float(v)
        if (p.low is not None and v < p.low) or (p.high is not None and v > p.high):
            raise ValueError(f"{where}={v!r} is out of range [{p.low}, {p.high}]")
        return v
    if p.kind == "bool":
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"{where} must be true/false, got {v!r}")
        return bool(v)
    if p.kind == "choice":
        if v not in p.choices:
            raise ValueError(f"{where}={v!r} is not one of {p.choices}")
        return v
    if p.kind == "text":
        if not isinstance(v, str):
            raise ValueError(f"{where} must be a string, got {v!r}")
        return v
    if p.kind in ("color", "floats"):
        n = 3 if p.kind == "color" else p.length
        if not isinstance(v, (list, tuple, np.ndarray)) or len(v) != n:
            raise ValueError(f"{where} must be a list of {n} numbers, got {v!r}")
        sub = Param(p.name, "int" if p.kind == "color" else "float", p.low, p.high)
        return tuple(_check_value(op, sub, x) for x in v)
    raise ValueError(f"{where}: unknown parameter kind {p.kind!r}")


def validate(spec: dict) -> tuple[Op, dict[str, Any]]:
    """Check one spec against the registry; return the op and its full parameter dict.

    Raises ``ValueError`` naming the op and the parameter on an unknown op, an unknown
    or missing key, a wrong type or an out-of-range value.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"edit spec must be a dict with an 'op' key, got {spec!r}")
    name = spec.get("op")
    if name not in OPS:
        raise ValueError(f"unknown edit op {name!r}; known ops: {', '.join(list_ops())}")
    op = OPS[name]
    known = {p.name for p in op.params}
    unknown = sorted(set(spec) - known - {"op"})
    if unknown:
        raise ValueError(
            f"{name}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    params = {}
    for p in op.params:
        if p.name not in spec:
            if p.required:
                raise ValueError(f"{name}: missing required parameter {p.name!r}")
            params[p.name] = p.default
        else:
            params[p.name] = _check_value(name, p, spec[p.name])
    return op, params


def complete(spec: dict) -> dict:
    """The spec with every optional parameter written out (JSON-friendly lists)."""
    op, params = validate(spec)
    out = {"op": op.name}
    for k, v in params.items():
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


# ------------------------------------------------------------------ context and apply
@dataclass(frozen=True)
class Context:
    """What an op may use besides its parameters.

    Attributes:
        donors: ``None`` (procedural donors), a callable ``seed -> PIL image``, or a
            sequence of PIL images indexed by ``seed % len``.
        occlusion_threshold: opacity from which covered pixels become untraceable.
    """

    donors: Any = None
    occlusion_threshold: float = 0.5
    state: dict = field(default_factory=dict)  # per-op scratch: "weight" in, "weight_out" out

    def weight(self) -> np.ndarray:
        """``[H, W]`` float32 share of the source in every pixel of the op's input."""
        return self.state["weight"]

    def covered(self, weight_out: np.ndarray) -> np.ndarray | None:
        """Record the op's output source weight; return the step mask it implies.

        The mask (True = traceable) is ``weight_out > 1 - threshold``, or ``None`` when
        it hides nothing beyond what was already untraceable or off the source.
        """
        self.state["weight_out"] = weight_out
        visible = weight_out > 1.0 - self.occlusion_threshold
        return None if not ((weight_out > 0) & ~visible).any() else visible

    def donor(self, seed: int, size: tuple[int, int]) -> Image.Image:
        """An RGB donor image of exactly ``size`` (w, h), chosen by ``seed``.

        Caller-supplied donors are centre-cropped to the aspect ratio and resized
        (bilinear), so the output geometry never depends on the donor's own size.
        """
        from icdlib.donors import cover_resize, procedural_donor

        if self.donors is None:
            return procedural_donor(seed, size)
        if callable(self.donors):
            img = self.donors(seed)
        elif isinstance(self.donors, Sequence) and len(self.donors) > 0:
            img = self.donors[seed % len(self.donors)]
        else:
            raise ValueError(f"donors must be None, a callable or a non-empty sequence, got {self.donors!r}")
        if not isinstance(img, Image.Image):
            raise ValueError(f"donors: seed {seed} gave {type(img).__name__}, expected a PIL image")
        return cover_resize(img.convert("RGB"), size)


def apply(
    image: Image.Image,
    specs: Sequence[dict],
    donors: Any = None,
    config: "EditConfig | None" = None,
) -> tuple[Image.Image, Trace]:
    """Apply an edit chain and trace it.

    Args:
        image: PIL image (converted to RGB), the *source*.
        specs: list of spec dicts (see the module docstring and :data:`OPS`).
        donors: foreign images for composite ops (see :class:`Context`); default: render
            them procedurally from each spec's ``seed``.
        config: :class:`EditConfig`; only ``occlusion_threshold`` is read here.
    Returns:
        ``(edited RGB image, Trace)`` with ``trace.source_size == image.size`` and
        ``trace.size == edited.size``.
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"apply: image must be a PIL image, got {type(image).__name__}")
    if isinstance(specs, dict) or not isinstance(specs, Sequence):
        raise ValueError(f"apply: specs must be a list of dicts, got {type(specs).__name__}")
    cfg = config if config is not None else EditConfig()
    ctx = Context(donors=donors, occlusion_threshold=cfg.occlusion_threshold)
    img = image.convert("RGB")
    steps: list[Step] = []
    # Share of the source in every pixel. Translucent layers compound (two layers at
    # 0.4 leave 0.36 of the source), so occlusion is judged on this running weight.
    weight = np.ones((img.height, img.width), np.float32)
    for i, spec in enumerate(specs):
        op, params = validate(spec)
        before = img.size
        ctx.state.clear()
        ctx.state["weight"] = weight
        img, new = op.fn(img, params, ctx)
        if "weight_out" in ctx.state:
            weight = ctx.state["weight_out"]
        else:
            for st in new:
                weight = warp_weight(weight, st.matrix, st.out_size)
        for st in new:
            if st.in_size != (steps[-1].out_size if steps else image.size):
                raise AssertionError(f"{op.name}: step sizes do not chain (edit #{i})")
        if not new and img.size != before:
            raise AssertionError(f"{op.name}: size changed without a step (edit #{i})")
        steps.extend(new)
    trace = Trace(image.size, steps)
    if trace.size != img.size:
        raise AssertionError(f"trace size {trace.size} != image size {img.size}")
    return img, trace


def warp_weight(weight: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Carry a ``[H, W]`` float map through ``matrix`` (input -> output points) onto
    ``out_size``, sampling the nearest input pixel at each output pixel centre, 0 outside."""
    inv = np.linalg.inv(matrix)
    inv = inv / inv[2, 2]
    out = Image.fromarray(np.asarray(weight, np.float32), "F").transform(
        tuple(out_size), Image.Transform.PERSPECTIVE, tuple(inv.ravel()[:8]),
        resample=Image.Resampling.NEAREST, fillcolor=0.0,
    )
    return np.asarray(out, np.float32)


# Registration: importing these modules fills OPS (they import from this module).
from icdlib.chains import EditConfig, sample_chain  # noqa: E402
from icdlib import warps, composites, overlays, photometric  # noqa: E402,F401

__all__ = [
    "FAMILIES", "OPS", "Op", "Param", "Context", "EditConfig", "apply", "complete",
    "list_ops", "register", "sample_chain", "validate",
]
