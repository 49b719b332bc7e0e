"""Output-size bounds of the edit ops, so that a chain is refused before it allocates.

:func:`size_bound` gives, for one op and its validated parameters, an upper bound on the
``(width, height)`` it produces from an input of ``size``; :func:`icdlib.edits.apply`
refuses an op whose bound passes ``EditConfig.max_pixels`` before running it. Ops not
listed keep the size of their input (photometric and overlay ops, crops, warps on the
same canvas). Each bound adds a pixel for rounding.
"""

from __future__ import annotations

import math
from typing import Any, Callable

Size = tuple[int, int]


def _scale(p, w, h):
    return math.ceil(p["factor"] * w) + 1, math.ceil(p["factor"] * h) + 1


def _aspect(p, w, h):
    r = math.sqrt(p["ratio"])
    return math.ceil(w * r) + 1, math.ceil(h / r) + 1


def _rotate(p, w, h):
    return (w + h + 2, w + h + 2) if p.get("expand") else (w, h)


def _pad(p, w, h):
    return (math.ceil(w * (1 + p["left"] + p["right"])) + 2,
            math.ceil(h * (1 + p["top"] + p["bottom"])) + 2)


def _collage(p, w, h):
    tw, th = math.ceil(p["tile_scale"] * w) + 1, math.ceil(p["tile_scale"] * h) + 1
    g = math.ceil(p["gap"] * tw) + 1
    return p["cols"] * tw + (p["cols"] + 1) * g, p["rows"] * th + (p["rows"] + 1) * g


BOUNDS: dict[str, Callable[[dict[str, Any], int, int], Size]] = {
    "resize": lambda p, w, h: (p["width"], p["height"]),
    "scale": _scale,
    "aspect": _aspect,
    "rotate": _rotate,
    "pad": _pad,
    "pad_square": lambda p, w, h: (max(w, h) + 1, max(w, h) + 1),
    "paste_onto": lambda p, w, h: (math.ceil(p["canvas_w"] * w) + 1, math.ceil(p["canvas_h"] * h) + 1),
    "paste_object": lambda p, w, h: (math.ceil(p["canvas_w"] * w) + 1, math.ceil(p["canvas_h"] * h) + 1),
    "collage": _collage,
}


def size_bound(op: str, params: dict[str, Any], size: Size) -> Size:
    """An upper bound on the ``(width, height)`` op ``op`` makes from an input of ``size``."""
    w, h = size
    fn = BOUNDS.get(op)
    return fn(params, w, h) if fn is not None else (w, h)
