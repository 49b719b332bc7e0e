"""The edit registry: every op, its family and its typed parameter table.

Op modules (:mod:`~icdlib.edits.warps`, :mod:`~icdlib.edits.composites`,
:mod:`~icdlib.edits.overlays`, :mod:`~icdlib.edits.photometric`) register themselves
with :func:`register`; :func:`validate` checks a spec against the table and raises
``ValueError`` naming the op and the parameter.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image


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
    """A registered edit: ``fn(image, params, ctx) -> (image, [Step, ...])``.

    ``image`` is an RGB PIL image, or, for an op registered with ``arrays=True``, a
    read-only ``[H, W, 3]`` uint8 array; either kind may be returned (the engine converts
    between them only where consecutive ops differ, see :func:`icdlib.edits.apply`).
    """

    name: str
    family: str
    fn: Callable
    params: tuple[Param, ...]
    doc: str = ""
    arrays: bool = False

    def defaults(self) -> dict[str, Any]:
        """Defaults of the optional parameters (required ones are absent)."""
        return {p.name: p.default for p in self.params if not p.required}


OPS: dict[str, Op] = {}


def register(name: str, family: str, *params: Param, arrays: bool = False):
    """Decorator adding ``fn`` to :data:`OPS` under ``name``; ``arrays``: ``fn`` takes a
    ``[H, W, 3]`` uint8 array instead of a PIL image (see :class:`Op`)."""
    if family not in FAMILIES:
        raise ValueError(f"register {name}: unknown family {family!r}; expected one of {FAMILIES}")

    def deco(fn):
        if name in OPS:
            raise ValueError(f"register: op {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        OPS[name] = Op(name, family, fn, tuple(params), doc[0] if doc else "", bool(arrays))
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
    if p.kind in ("float", "int"):
        if type(v) is not float and (isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))):
            raise ValueError(f"{_where(op, p)} must be a number, got {v!r}")
        whole = isinstance(v, (int, np.integer))  # always finite, and may be too large for a float
        if not whole and not math.isfinite(v):
            raise ValueError(f"{_where(op, p)} must be finite, got {v!r}")
        if p.kind == "int":
            if not whole and not float(v).is_integer():
                raise ValueError(f"{_where(op, p)} must be an integer, got {v!r}")
            v = int(v)
        if (p.low is not None and v < p.low) or (p.high is not None and v > p.high):
            raise ValueError(f"{_where(op, p)}={v!r} is out of range [{p.low}, {p.high}]")
        return float(v) if p.kind == "float" and type(v) is not float else v
    if p.kind == "bool":
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"{_where(op, p)} must be true/false, got {v!r}")
        return bool(v)
    if p.kind == "choice":
        if v not in p.choices:
            raise ValueError(f"{_where(op, p)}={v!r} is not one of {p.choices}")
        return v
    if p.kind == "text":
        if not isinstance(v, str):
            raise ValueError(f"{_where(op, p)} must be a string, got {v!r}")
        return v
    if p.kind in ("color", "floats"):
        n = 3 if p.kind == "color" else p.length
        if not isinstance(v, (list, tuple, np.ndarray)) or len(v) != n:
            raise ValueError(f"{_where(op, p)} must be a list of {n} numbers, got {v!r}")
        sub = _element(p.name, "int" if p.kind == "color" else "float", p.low, p.high)
        return tuple(_check_value(op, sub, x) for x in v)
    raise ValueError(f"{_where(op, p)}: unknown parameter kind {p.kind!r}")


def _where(op: str, p: Param) -> str:
    return f"{op}: parameter {p.name!r}"


@functools.lru_cache(maxsize=256)
def _element(name: str, kind: str, low, high) -> Param:
    """The parameter each element of a colour or float list is checked as."""
    return Param(name, kind, low, high)


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
