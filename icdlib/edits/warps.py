"""Geometric edits: crop, resize, scale, flips, rotation, affine, perspective, padding.

Every op logs one :class:`~icdlib.pixtrace.Step` whose 3x3 matrix maps input-canvas
points to output-canvas points (pixel-centre convention, see :mod:`icdlib.edits`).
Warps are rendered by :func:`warp` from that same matrix, so image and trace agree
by construction; crops and paddings use integer pixel offsets. Resampling runs in
OpenCV (:mod:`icdlib.edits.raster`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from icdlib.edits import raster as R
from icdlib.edits.registry import RESAMPLE, Param, color_param, register
from icdlib.pixtrace import Step

Size = tuple[int, int]


# ------------------------------------------------------------------ matrices
def translate(tx: float, ty: float) -> np.ndarray:
    """(3, 3) float64: ``(x, y) -> (x + tx, y + ty)``."""
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def scaling(sx: float, sy: float) -> np.ndarray:
    """(3, 3) float64: ``(x, y) -> (sx x, sy y)`` about the origin (the top-left corner)."""
    return np.diag([sx, sy, 1.0])


def rotation(degrees: float) -> np.ndarray:
    """(3, 3) float64 rotation about the origin, counter-clockwise on screen (y down)."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(3, 3) projective matrix sending the 4 points ``src`` (4, 2) onto ``dst`` (4, 2)."""
    a, b = [], []
    for (x, y), (u, v) in zip(np.asarray(src, float), np.asarray(dst, float)):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        b.append(u)
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.append(v)
    h = np.linalg.solve(np.array(a), np.array(b))
    return np.append(h, 1.0).reshape(3, 3)


def warp(image: Image.Image, matrix: np.ndarray, out_size: Size, resample: str = "bilinear",
         fill=(0, 0, 0)) -> Image.Image:
    """Render ``image`` through ``matrix`` (input -> output points) onto ``out_size``.

    Every output pixel centre samples the input at the exact inverse image of that
    centre (OpenCV, :func:`icdlib.edits.raster.warp_array`, which states the
    convention); outside the input: ``fill``.
    """
    return R.warp_image(image, matrix, out_size, resample, fill)


def _warped(img: np.ndarray, matrix: np.ndarray, out_size: Size, p: dict) -> np.ndarray:
    """The array ``img`` through ``matrix`` with the op's ``resample`` and ``fill``."""
    return R.warp_array(img, matrix, out_size, p["resample"], tuple(p["fill"]))


def warp_band(band: Image.Image, matrix: np.ndarray, out_size: Size) -> np.ndarray:
    """One channel (mode ``L`` or ``F``) through ``matrix``, bilinear, 0 outside.

    Returns ``[H_out, W_out]`` float32 in the band's units.
    """
    return R.warp_array(np.asarray(band, np.float32), matrix, out_size, "bilinear", 0.0)


def _px(frac: float, length: int) -> int:
    return int(round(frac * length))


# ------------------------------------------------------------------ crops and resizes
FRAC = dict(low=0.0, high=1.0)


@register(
    "crop", "geometric",
    Param("left", "float", **FRAC, doc="left edge, fraction of the width"),
    Param("top", "float", **FRAC, doc="top edge, fraction of the height"),
    Param("width", "float", **FRAC, doc="box width, fraction of the width"),
    Param("height", "float", **FRAC, doc="box height, fraction of the height"),
    arrays=True,
)
def crop(img, p, ctx):
    """Keep the box; edges are rounded to whole pixels."""
    w, h = size = R.size_of(img)
    left, top = _px(p["left"], w), _px(p["top"], h)
    cw, ch = _px(p["width"], w), _px(p["height"], h)
    for key, v, lim in (("left", p["left"] + p["width"], "width"), ("top", p["top"] + p["height"], "height")):
        if v > 1.0 + 1e-9:
            raise ValueError(f"crop: box leaves the image: {key} + {lim} = {v:.4g} > 1")
    for key, v in (("width", cw), ("height", ch)):
        if v < 1:
            raise ValueError(f"crop: parameter {key!r}={p[key]} gives an empty box at size {size}")
    cw, ch = min(cw, w - left), min(ch, h - top)
    if cw < 1 or ch < 1:
        raise ValueError(f"crop: box at left={p['left']}, top={p['top']} is empty at size {size}")
    out = np.ascontiguousarray(img[top : top + ch, left : left + cw])
    return out, [Step(translate(-left, -top), size, (cw, ch), name="crop")]


def _resized(img, size: Size, name: str, resample: str = "bilinear", box=None):
    w, h = R.size_of(img)
    a = img
    if box is None:
        m = scaling(size[0] / w, size[1] / h)
    else:  # whole-pixel box: cut it, then resize
        left, t, r, b = box
        a = a[t:b, left:r]
        m = scaling(size[0] / (r - left), size[1] / (b - t)) @ translate(-left, -t)
    return R.resize_array(a, size, resample), [Step(m, (w, h), tuple(size), name=name)]


@register(
    "resize", "geometric",
    Param("width", "int", 1, 8192, doc="output width in pixels"),
    Param("height", "int", 1, 8192, doc="output height in pixels"),
    RESAMPLE,
    arrays=True,
)
def resize(img, p, ctx):
    """Resize to an absolute size (aspect ratio may change)."""
    return _resized(img, (p["width"], p["height"]), "resize", p["resample"])


@register(
    "scale", "geometric",
    Param("factor", "float", 0.02, 8.0, doc="uniform scale factor of both sides"),
    RESAMPLE,
    arrays=True,
)
def scale(img, p, ctx):
    """Resize both sides by ``factor`` (rounded to whole pixels, at least 1)."""
    w, h = R.size_of(img)
    size = (max(1, _px(p["factor"], w)), max(1, _px(p["factor"], h)))
    return _resized(img, size, "scale", p["resample"])


@register(
    "aspect", "geometric",
    Param("ratio", "float", 0.2, 5.0, doc="factor applied to width/height, area kept"),
    RESAMPLE,
    arrays=True,
)
def aspect(img, p, ctx):
    """Change the aspect ratio by ``ratio`` keeping the pixel area (a squash/stretch)."""
    w, h = R.size_of(img)
    r = math.sqrt(p["ratio"])
    size = (max(1, int(round(w * r))), max(1, int(round(h / r))))
    return _resized(img, size, "aspect", p["resample"])


@register(
    "random_resized_crop", "geometric",
    Param("area", "float", 0.01, 1.0, doc="box area, fraction of the image area"),
    Param("ratio", "float", 0.2, 5.0, doc="box width/height in pixels"),
    Param("x", "float", **FRAC, doc="box position in the free horizontal range, 0 left .. 1 right"),
    Param("y", "float", **FRAC, doc="box position in the free vertical range, 0 top .. 1 bottom"),
    RESAMPLE,
    arrays=True,
)
def random_resized_crop(img, p, ctx):
    """Crop a box of given area and aspect ratio, then resize it back to the input size."""
    w, h = R.size_of(img)
    a = p["area"] * w * h
    bw = min(w, max(1, int(round(math.sqrt(a * p["ratio"])))))
    bh = min(h, max(1, int(round(math.sqrt(a / p["ratio"])))))
    left, top = int(round(p["x"] * (w - bw))), int(round(p["y"] * (h - bh)))
    return _resized(img, (w, h), "random_resized_crop", p["resample"], box=(left, top, left + bw, top + bh))


# ------------------------------------------------------------------ flips and warps
@register("hflip", "geometric", arrays=True)
def hflip(img, p, ctx):
    """Mirror left-right: x -> W - x."""
    w, h = R.size_of(img)
    m = np.array([[-1.0, 0, w], [0, 1, 0], [0, 0, 1]])
    return cv2.flip(img, 1), [Step(m, (w, h), (w, h), name="hflip")]


@register("vflip", "geometric", arrays=True)
def vflip(img, p, ctx):
    """Mirror top-bottom: y -> H - y."""
    w, h = R.size_of(img)
    m = np.array([[1.0, 0, 0], [0, -1, h], [0, 0, 1]])
    return cv2.flip(img, 0), [Step(m, (w, h), (w, h), name="vflip")]


@register(
    "rotate", "geometric",
    Param("degrees", "float", -360.0, 360.0, doc="angle, counter-clockwise on screen"),
    Param("expand", "bool", default=False, doc="grow the canvas to hold the whole rotated image"),
    color_param("fill", doc="RGB 0..255 of uncovered canvas"),
    RESAMPLE,
    arrays=True,
)
def rotate(img, p, ctx):
    """Rotate about the image centre; with ``expand`` the canvas is the bounding box."""
    w, h = R.size_of(img)
    rot = rotation(p["degrees"])
    if p["expand"]:
        c, s = abs(rot[0, 0]), abs(rot[0, 1])
        out = (max(1, math.ceil(c * w + s * h - 1e-6)), max(1, math.ceil(s * w + c * h - 1e-6)))
    else:
        out = (w, h)
    m = translate(out[0] / 2, out[1] / 2) @ rot @ translate(-w / 2, -h / 2)
    return _warped(img, m, out, p), [Step(m, (w, h), out, name="rotate")]


@register(
    "affine", "geometric",
    Param("degrees", "float", -360.0, 360.0, default=0.0, doc="rotation, counter-clockwise"),
    Param("scale", "float", 0.05, 10.0, default=1.0, doc="uniform zoom about the centre"),
    Param("shear_x", "float", -75.0, 75.0, default=0.0, doc="horizontal shear angle, degrees"),
    Param("shear_y", "float", -75.0, 75.0, default=0.0, doc="vertical shear angle, degrees"),
    Param("translate_x", "float", -1.0, 1.0, default=0.0, doc="shift, fraction of the width"),
    Param("translate_y", "float", -1.0, 1.0, default=0.0, doc="shift, fraction of the height"),
    color_param("fill", doc="RGB 0..255 of uncovered canvas"),
    RESAMPLE,
    arrays=True,
)
def affine(img, p, ctx):
    """Shear, zoom, rotate about the centre, then shift; the canvas size is kept."""
    w, h = R.size_of(img)
    tx, ty = math.tan(math.radians(p["shear_x"])), math.tan(math.radians(p["shear_y"]))
    shear = np.array([[1.0, tx, 0], [ty, 1.0, 0], [0, 0, 1]])
    det = 1.0 - tx * ty
    if abs(det) < 1e-3:
        raise ValueError(
            f"affine: singular transform: shear_x={p['shear_x']} and shear_y={p['shear_y']} "
            f"give determinant {det:.3g}"
        )
    m = (
        translate(w / 2 + p["translate_x"] * w, h / 2 + p["translate_y"] * h)
        @ rotation(p["degrees"]) @ scaling(p["scale"], p["scale"]) @ shear @ translate(-w / 2, -h / 2)
    )
    return _warped(img, m, (w, h), p), [Step(m, (w, h), (w, h), name="affine")]


@register(
    "perspective", "geometric",
    Param("offsets", "floats", -0.45, 0.45, length=8,
          doc="corner moves (dx, dy) as fractions of (W, H), corners TL, TR, BR, BL"),
    color_param("fill", doc="RGB 0..255 of uncovered canvas"),
    RESAMPLE,
    arrays=True,
)
def perspective(img, p, ctx):
    """Move the four corners and warp projectively; the canvas size is kept."""
    w, h = R.size_of(img)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    dst = src + np.asarray(p["offsets"], float).reshape(4, 2) * [w, h]
    edges = np.roll(dst, -1, 0) - dst
    cross = edges[:, 0] * np.roll(edges, -1, 0)[:, 1] - edges[:, 1] * np.roll(edges, -1, 0)[:, 0]
    if not (cross > 1e-6 * w * h).all():
        raise ValueError(f"perspective: parameter 'offsets'={list(p['offsets'])} gives a non-convex quad")
    m = homography(src, dst)
    return _warped(img, m, (w, h), p), [Step(m, (w, h), (w, h), name="perspective")]


# ------------------------------------------------------------------ padding
def _padded(img, left: int, top: int, right: int, bottom: int, fill, name: str):
    w, h = R.size_of(img)
    out = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=tuple(int(v) for v in fill))
    return out, [Step(translate(left, top), (w, h), (w + left + right, h + top + bottom), name=name)]


@register(
    "pad", "geometric",
    Param("left", "float", 0.0, 2.0, doc="fraction of the width"),
    Param("top", "float", 0.0, 2.0, doc="fraction of the height"),
    Param("right", "float", 0.0, 2.0, doc="fraction of the width"),
    Param("bottom", "float", 0.0, 2.0, doc="fraction of the height"),
    color_param("color"),
    arrays=True,
)
def pad(img, p, ctx):
    """Add borders of the given relative widths (rounded to whole pixels)."""
    w, h = R.size_of(img)
    return _padded(img, _px(p["left"], w), _px(p["top"], h), _px(p["right"], w),
                   _px(p["bottom"], h), p["color"], "pad")


@register(
    "pad_square", "geometric",
    Param("position", "float", 0.0, 1.0, default=0.5, doc="where the image sits along the padded side"),
    color_param("color"),
    arrays=True,
)
def pad_square(img, p, ctx):
    """Pad the shorter side so the image becomes square."""
    w, h = R.size_of(img)
    extra = abs(w - h)
    a = int(round(p["position"] * extra))
    if w >= h:
        return _padded(img, 0, a, 0, extra - a, p["color"], "pad_square")
    return _padded(img, a, 0, extra - a, 0, p["color"], "pad_square")


def warp_weight(weight: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Carry a ``[H, W]`` float map through ``matrix`` (input -> output points) onto
    ``out_size``, sampling the nearest input pixel at each output pixel centre, 0 outside."""
    return R.warp_array(np.asarray(weight, np.float32), matrix, out_size, "nearest", 0.0)
