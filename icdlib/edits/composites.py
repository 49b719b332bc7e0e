"""Composite edits: the source pasted onto donors, donors pasted over it, masked
objects, collages and meme/screenshot frames.

Blending is ``out = a * top + (1 - a) * bottom`` with a per-pixel alpha in [0, 1].
The source's share of each pixel is tracked through the chain (``Context.weight``):
it is multiplied by ``1 - a`` when foreign content goes on top and by ``a`` when the
source is the top layer, and pixels whose share drops to ``1 - occlusion_threshold``
or below become untraceable. Donors come from :meth:`Context.donor`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image, ImageDraw

from icdlib.edits.registry import RESAMPLE, SEED, Param, color_param, opacity_param, register
from icdlib.pixtrace import Step
from icdlib.edits import raster as R
from icdlib.edits import warps as W
from icdlib.edits.text import draw_text_centered

FRAC = dict(low=0.0, high=1.0)


def nonzero_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(left, top, right, bottom)`` of the pixels where ``alpha`` ``[H, W]`` is non-zero
    (None: nowhere)."""
    cols = np.flatnonzero(alpha.any(0))
    if len(cols) == 0:
        return None
    rows = np.flatnonzero(alpha.any(1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def blend(bottom, top, alpha: np.ndarray, box=None) -> np.ndarray:
    """``alpha * top + (1 - alpha) * bottom`` as a new ``[H, W, 3]`` uint8 array; ``alpha``
    ``[H, W]`` float in [0, 1], ``bottom`` an RGB PIL image or ``[H, W, 3]`` uint8 array.

    ``top`` is an RGB image or array of the same size, an ``[h, w, 3]`` array of the box
    only, or an RGB colour. Only the box where ``alpha`` is non-zero (``box``, default
    :func:`nonzero_box`) is computed: elsewhere ``rint(0 * top + 1 * bottom)`` is
    ``bottom`` exactly, so the pixels are those of the whole-image formula.
    """
    bottom = R.rgb_array(bottom)
    out = bottom.copy()
    box = nonzero_box(alpha) if box is None else box
    if box is None:
        return out
    left, t0, right, b0 = box
    a = np.ascontiguousarray(alpha[t0:b0, left:right], dtype=np.float32)
    rest = np.subtract(1, a)
    if isinstance(top, Image.Image) or (np.ndim(top) == 3 and top.shape[:2] == bottom.shape[:2]):
        tops = cv2.split(np.ascontiguousarray(R.rgb_array(top)[t0:b0, left:right]))
    elif np.ndim(top) == 3:  # already the box
        tops = cv2.split(np.ascontiguousarray(top))
    else:  # a plain colour
        tops = [np.float32(v) for v in top]
    # one channel plane at a time (contiguous float32 planes run numpy's vector loops),
    # each the same float32 operations as a * t + (1 - a) * b
    planes = []
    for band, t in zip(cv2.split(np.ascontiguousarray(bottom[t0:b0, left:right])), tops):
        v = a * np.asarray(t, np.float32)
        v += rest * band.astype(np.float32)
        np.rint(v, out=v)
        planes.append(np.clip(v, 0, 255, out=v).astype(np.uint8))
    out[t0:b0, left:right] = cv2.merge(planes)
    return out


def blend_flat(bottom: np.ndarray, color, mask: np.ndarray, opacity: float) -> np.ndarray:
    """:func:`blend` of a plain ``color`` over ``bottom`` with alpha ``opacity`` where
    ``mask`` (``[H, W]`` bool) is set and 0 elsewhere, by table lookup.

    With one alpha value each channel's result depends on the bottom value alone, so a
    256-entry table per channel, built with :func:`blend`'s float32 operations in its
    order, gives the same pixels.
    """
    a = np.float32(opacity)
    levels = np.arange(256, dtype=np.float32)
    table = np.empty((1, 256, 3), np.uint8)
    for c, t in enumerate(color):
        v = a * np.float32(t)
        v = v + np.subtract(1, a) * levels
        table[0, :, c] = np.clip(np.rint(v), 0, 255)
    out = bottom.copy()
    cv2.copyTo(cv2.LUT(bottom, table), mask.view(np.uint8), out)
    return out


def _pil_blend(bottom: np.ndarray, top: np.ndarray, opacity: float) -> np.ndarray:
    """Pillow's ``Image.blend`` of two same-size ``[h, w, 3]`` uint8 arrays (its own
    rounding: ``bottom + opacity * (top - bottom)`` truncated), as an array."""
    return np.asarray(Image.blend(R.rgb_image(bottom), R.rgb_image(top), opacity))


def occlusion_step(img, alpha: np.ndarray, ctx, name: str) -> list[Step]:
    """Occlusion step for foreign content drawn over the image (PIL or array) with ``alpha`` [H, W]."""
    before = ctx.weight()
    left = np.subtract(1.0, alpha)
    mask = ctx.covered(np.multiply(before, left, out=left), before)  # an opaque hard-edged layer leaves weight 0
    return [] if mask is None else [Step.occlusion(R.size_of(img), mask, name=name)]


def carried_weight(ctx, matrix: np.ndarray, out_size) -> np.ndarray:
    """The source weight of the op's input moved through ``matrix`` onto ``out_size``."""
    return W.warp_weight(ctx.weight(), matrix, out_size)


def rect_box(size, area: float, ratio: float, x: float, y: float) -> tuple[int, int, int, int]:
    """Integer box ``(left, top, width, height)`` of ``area`` (fraction of ``size``'s
    area) and width/height ``ratio``, clipped to the canvas, placed at relative
    position ``(x, y)`` of the free range."""
    w, h = size
    a = area * w * h
    bw = min(w, max(1, int(round(math.sqrt(a * ratio)))))
    bh = min(h, max(1, int(round(math.sqrt(a / ratio)))))
    return int(round(x * (w - bw))), int(round(y * (h - bh))), bw, bh


# ------------------------------------------------------------------ source on top
@register(
    "paste_onto", "composite",
    Param("canvas_w", "float", 1.0, 4.0, doc="canvas width / image width"),
    Param("canvas_h", "float", 1.0, 4.0, doc="canvas height / image height"),
    Param("area", "float", 0.01, 1.0, doc="share of the canvas area the image covers (clipped to fit)"),
    Param("x", "float", **FRAC, doc="position in the free horizontal range"),
    Param("y", "float", **FRAC, doc="position in the free vertical range"),
    opacity_param(),
    Param("background", "choice", default="donor", choices=("donor", "color"), doc="canvas content"),
    color_param("color", doc="canvas colour when background='color'"),
    SEED,
    RESAMPLE,
    arrays=True,
)
def paste_onto(img, p, ctx):
    """Scale the image and paste it, with opacity, onto a larger donor or plain canvas."""
    w, h = R.size_of(img)
    cw, ch = max(1, int(round(p["canvas_w"] * w))), max(1, int(round(p["canvas_h"] * h)))
    s = min(math.sqrt(p["area"] * cw * ch / (w * h)), cw / w, ch / h)
    pw, ph = max(1, min(cw, int(round(s * w)))), max(1, min(ch, int(round(s * h))))
    left, top = int(round(p["x"] * (cw - pw))), int(round(p["y"] * (ch - ph)))
    if p["background"] == "donor":
        out = ctx.donor_array(p["seed"], (cw, ch))  # a new array: drawn on in place
    else:
        out = np.full((ch, cw, 3), p["color"], np.uint8)
    resized = R.resize_array(img, (pw, ph), p["resample"])
    inside = out[top : top + ph, left : left + pw]
    inside[...] = _pil_blend(inside, resized, p["opacity"])
    alpha = np.zeros((ch, cw), np.float32)
    alpha[top : top + ph, left : left + pw] = p["opacity"]
    m = W.translate(left, top) @ W.scaling(pw / w, ph / h)
    mask = ctx.covered(carried_weight(ctx, m, (cw, ch)) * alpha)
    return out, [Step(m, (w, h), (cw, ch), mask=mask, name="paste_onto")]


def _object_alpha(size, p) -> Image.Image:
    """``L`` image on the source canvas: 255 inside the object's shape, else 0."""
    w, h = size
    left, t = p["box_x"] * w, p["box_y"] * h
    r, b = left + p["box_w"] * w, t + p["box_h"] * h
    alpha = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(alpha)
    if p["shape"] == "ellipse":
        draw.ellipse((left, t, r, b), fill=255)
    else:  # a random blob-like polygon inside the box: jittered angles and radii
        rng = np.random.default_rng(p["seed"])
        n = int(rng.integers(6, 12))
        ang = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n)
        rad = rng.uniform(0.75, 1.0, n)
        cx, cy, rx, ry = (left + r) / 2, (t + b) / 2, (r - left) / 2, (b - t) / 2
        pts = [(cx + rx * q * math.cos(a), cy + ry * q * math.sin(a)) for a, q in zip(ang, rad)]
        draw.polygon(pts, fill=255)
    return alpha


@register(
    "paste_object", "composite",
    Param("shape", "choice", default="ellipse", choices=("ellipse", "polygon"), doc="object mask shape"),
    Param("box_x", "float", **FRAC, doc="object box left, fraction of the width"),
    Param("box_y", "float", **FRAC, doc="object box top, fraction of the height"),
    Param("box_w", "float", 0.05, 1.0, doc="object box width, fraction of the width"),
    Param("box_h", "float", 0.05, 1.0, doc="object box height, fraction of the height"),
    Param("degrees", "float", -360.0, 360.0, default=0.0, doc="object rotation, counter-clockwise"),
    Param("scale", "float", 0.1, 4.0, default=1.0, doc="object zoom (1: source pixel size)"),
    Param("x", "float", **FRAC, doc="object centre on the canvas, fraction of the canvas width"),
    Param("y", "float", **FRAC, doc="object centre on the canvas, fraction of the canvas height"),
    Param("canvas_w", "float", 0.25, 4.0, default=1.0, doc="canvas width / image width"),
    Param("canvas_h", "float", 0.25, 4.0, default=1.0, doc="canvas height / image height"),
    opacity_param(),
    SEED,
    RESAMPLE,
    arrays=True,
)
def paste_object(img, p, ctx):
    """Cut a masked object (ellipse or random polygon), transform it, paste it on a donor."""
    w, h = R.size_of(img)
    for k, lim in (("box_x", "box_w"), ("box_y", "box_h")):
        if p[k] + p[lim] > 1.0 + 1e-9:
            raise ValueError(f"paste_object: object box leaves the image: {k} + {lim} = {p[k] + p[lim]:.4g} > 1")
    cw, ch = max(1, int(round(p["canvas_w"] * w))), max(1, int(round(p["canvas_h"] * h)))
    centre = ((p["box_x"] + p["box_w"] / 2) * w, (p["box_y"] + p["box_h"] / 2) * h)
    m = (W.translate(p["x"] * cw, p["y"] * ch) @ W.rotation(p["degrees"])
         @ W.scaling(p["scale"], p["scale"]) @ W.translate(-centre[0], -centre[1]))
    moved = R.warp_array(img, m, (cw, ch), p["resample"], (0, 0, 0))
    alpha = W.warp_band(_object_alpha((w, h), p), m, (cw, ch)) / 255.0 * p["opacity"]
    out = blend(ctx.donor_array(p["seed"], (cw, ch)), moved, alpha)
    mask = ctx.covered(carried_weight(ctx, m, (cw, ch)) * alpha)
    return out, [Step(m, (w, h), (cw, ch), mask=mask, name="paste_object")]


@register(
    "collage", "composite",
    Param("rows", "int", 1, 4, doc="grid rows"),
    Param("cols", "int", 1, 4, doc="grid columns"),
    Param("index", "int", 0, 15, doc="row-major tile holding the image"),
    Param("tile_scale", "float", 0.1, 2.0, default=0.5, doc="tile size / image size"),
    Param("gap", "float", 0.0, 0.5, default=0.02, doc="gap between tiles, fraction of the tile width"),
    color_param("color", default=(255, 255, 255), doc="gap colour"),
    SEED,
    RESAMPLE,
    arrays=True,
)
def collage(img, p, ctx):
    """A rows x cols mosaic; one tile is the image, the others are donors."""
    rows, cols, idx = p["rows"], p["cols"], p["index"]
    if rows * cols < 2:
        raise ValueError(f"collage: parameters 'rows'={rows}, 'cols'={cols} give a single tile; need >= 2")
    if idx >= rows * cols:
        raise ValueError(f"collage: parameter 'index'={idx} is outside the {rows}x{cols} grid")
    w, h = R.size_of(img)
    tw, th = max(1, int(round(p["tile_scale"] * w))), max(1, int(round(p["tile_scale"] * h)))
    g = int(round(p["gap"] * tw))
    size = (cols * tw + (cols + 1) * g, rows * th + (rows + 1) * g)
    out = np.full((size[1], size[0], 3), p["color"], np.uint8)
    seeds = np.random.SeedSequence(p["seed"]).generate_state(rows * cols, np.uint64)
    for k in range(rows * cols):
        x0, y0 = g + (k % cols) * (tw + g), g + (k // cols) * (th + g)
        tile = (R.resize_array(img, (tw, th), p["resample"]) if k == idx
                else ctx.donor_array(int(seeds[k] >> 1), (tw, th)))
        out[y0 : y0 + th, x0 : x0 + tw] = tile
    x0, y0 = g + (idx % cols) * (tw + g), g + (idx // cols) * (th + g)
    m = W.translate(x0, y0) @ W.scaling(tw / w, th / h)
    return out, [Step(m, (w, h), size, name="collage")]


@register(
    "frame", "composite",
    Param("style", "choice", default="meme", choices=("meme", "screenshot"), doc="frame look"),
    Param("top", "float", 0.0, 0.45, doc="top bar height, fraction of the height"),
    Param("bottom", "float", 0.0, 0.45, doc="bottom bar height, fraction of the height"),
    Param("border", "float", 0.0, 0.25, default=0.0, doc="side margin, fraction of the width"),
    Param("text_top", "text", default="", doc="caption in the top bar"),
    Param("text_bottom", "text", default="", doc="caption in the bottom bar"),
    color_param("bar_color", default=(255, 255, 255), doc="bar colour"),
    color_param("text_color", default=(0, 0, 0), doc="caption colour"),
    RESAMPLE,
    arrays=True,
)
def frame(img, p, ctx):
    """Shrink the image into a same-size frame with caption bars (meme or screenshot)."""
    w, h = R.size_of(img)
    tb, bb, bd = int(round(p["top"] * h)), int(round(p["bottom"] * h)), int(round(p["border"] * w))
    iw, ih = w - 2 * bd, h - tb - bb
    if iw < 1 or ih < 1:
        raise ValueError(f"frame: parameters 'top'/'bottom'/'border' leave no room at size {(w, h)}")
    s = min(iw / w, ih / h)
    pw, ph = max(1, int(round(s * w))), max(1, int(round(s * h)))
    left, top = bd + (iw - pw) // 2, tb + (ih - ph) // 2
    inner = R.resize_array(img, (pw, ph), p["resample"])
    m = W.translate(left, top) @ W.scaling(pw / w, ph / h)
    steps = [Step(m, (w, h), (w, h), name="frame")]
    dots = p["style"] == "screenshot" and tb >= 4
    captions = [(t, y0, bh) for t, y0, bh in ((p["text_top"], 0, tb), (p["text_bottom"], h - bb, bb)) if t and bh >= 4]
    if not (dots or captions):  # nothing to draw: stay an array
        out = np.full((h, w, 3), p["bar_color"], np.uint8)
        out[top : top + ph, left : left + pw] = inner
        return out, steps
    out = Image.new("RGB", (w, h), tuple(p["bar_color"]))
    out.paste(R.rgb_image(inner), (left, top))
    draw = ImageDraw.Draw(out)
    if dots:
        r = max(1, tb // 5)
        for k, col in enumerate(((237, 106, 94), (245, 191, 79), (98, 197, 84))):
            cx = bd + 2 * r + k * 3 * r
            draw.ellipse((cx - r, tb / 2 - r, cx + r, tb / 2 + r), fill=col)
    for text, y0, bh in captions:
        draw_text_centered(draw, text, (w / 2, y0 + bh / 2), int(bh * 0.6), tuple(p["text_color"]), w)
    return out, steps
