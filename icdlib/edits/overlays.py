"""Occluding overlays: text, emoji-like stickers, stripes, foreign images on top and
erased boxes.

Each overlay is drawn as an RGBA layer; its alpha times ``opacity`` is the covering
alpha ``a`` of every pixel, the result is ``a * layer + (1 - a) * image``, and pixels
with ``a >= occlusion_threshold`` are logged untraceable with
:meth:`icdlib.pixtrace.Step.occlusion`. Geometry is unchanged.
Text uses Pillow's built-in scalable font (``ImageFont.load_default(size=...)``).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from icdlib.edits import composites as C
from icdlib.edits.registry import SEED, Param, color_param, opacity_param, register
from icdlib.edits.text import font

FRAC = dict(low=0.0, high=1.0)


def _layer_blend(img: np.ndarray, layer: Image.Image | None, opacity: float, ctx, name: str, origin=(0, 0)):
    """Blend an RGBA ``layer`` whose top-left corner sits at ``origin`` (whole pixels, the
    layer inside the image; None: nothing drawn) over ``img`` and log occlusion.

    Only the box holding the layer's non-zero alpha is read and blended (alpha is 0
    elsewhere, which leaves the image as it is)."""
    h, w = img.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    box = None if layer is None else layer.getbbox(alpha_only=True)
    if box is None:
        return img.copy(), C.occlusion_step(img, alpha, ctx, name)
    rgba = np.asarray(layer.crop(box), np.float32)
    left, top, right, bottom = box[0] + origin[0], box[1] + origin[1], box[2] + origin[0], box[3] + origin[1]
    alpha[top:bottom, left:right] = rgba[..., 3] / 255.0 * opacity
    out = C.blend(img, rgba[..., :3], alpha, box=(left, top, right, bottom))  # RGB values as stored: whole numbers
    return out, C.occlusion_step(img, alpha, ctx, name)


_MEASURE = ImageDraw.Draw(Image.new("RGBA", (1, 1)))  # measures text boxes only: never drawn on

@register(
    "text", "overlay",
    Param("text", "text", doc="the string to draw"),
    Param("x", "float", **FRAC, doc="left of the text, fraction of the width"),
    Param("y", "float", **FRAC, doc="top of the text, fraction of the height"),
    Param("size", "float", 0.02, 0.6, doc="font size, fraction of the image height"),
    color_param("color", default=(255, 255, 255)),
    opacity_param(),
    arrays=True,
)
def text(img, p, ctx):
    """Draw a line of text (built-in font) with opacity."""
    h, w = img.shape[:2]
    x, y, f = p["x"] * w, p["y"] * h, font(p["size"] * h)
    # The layer covers the text's box (2 px to spare) inside the image, not the whole image.
    # Its corner is whole pixels left of and above (x, y), so the text is drawn at the same
    # fractional position, clipped by the image edges as before: the same pixels.
    bl, bt, br, bb = _MEASURE.textbbox((x, y), p["text"], font=f)
    left, top = max(0, min(math.floor(x), math.floor(bl)) - 2), max(0, min(math.floor(y), math.floor(bt)) - 2)
    right, bottom = min(w, math.ceil(br) + 2), min(h, math.ceil(bb) + 2)
    if right <= left or bottom <= top:
        return _layer_blend(img, None, p["opacity"], ctx, "text")
    layer = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((x - left, y - top), p["text"], font=f, fill=tuple(p["color"]) + (255,))
    return _layer_blend(img, layer, p["opacity"], ctx, "text", (left, top))


def _sticker_shape(kind: str, side: int, color) -> Image.Image:
    """A ``side`` x ``side`` RGBA emoji-like sticker drawn with ImageDraw."""
    s = side
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    col = tuple(color) + (255,)
    ink = (20, 20, 20, 255)
    if kind in ("circle", "face"):
        d.ellipse((0, 0, s - 1, s - 1), fill=col)
    if kind == "face":
        e = s * 0.09
        for cx in (0.35 * s, 0.65 * s):
            d.ellipse((cx - e, 0.38 * s - e, cx + e, 0.38 * s + e), fill=ink)
        d.arc((0.25 * s, 0.3 * s, 0.75 * s, 0.78 * s), 20, 160, fill=ink, width=max(1, s // 14))
    elif kind == "star":
        pts = []
        for k in range(10):
            r = s / 2 if k % 2 == 0 else s / 5
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((s / 2 + r * math.cos(a), s / 2 + r * math.sin(a)))
        d.polygon(pts, fill=col)
    elif kind == "heart":
        r = s / 4
        d.ellipse((0, 0.1 * s, 2 * r, 0.1 * s + 2 * r), fill=col)
        d.ellipse((s - 2 * r, 0.1 * s, s, 0.1 * s + 2 * r), fill=col)
        d.polygon([(0.02 * s, 0.1 * s + 1.3 * r), (s - 0.02 * s, 0.1 * s + 1.3 * r), (s / 2, 0.95 * s)], fill=col)
    return im


@register(
    "sticker", "overlay",
    Param("kind", "choice", choices=("circle", "face", "star", "heart"), doc="sticker shape"),
    Param("x", "float", **FRAC, doc="sticker centre, fraction of the width"),
    Param("y", "float", **FRAC, doc="sticker centre, fraction of the height"),
    Param("size", "float", 0.02, 1.0, doc="sticker side, fraction of the shorter image side"),
    Param("degrees", "float", -360.0, 360.0, default=0.0, doc="rotation, counter-clockwise"),
    color_param("color", default=(255, 204, 0)),
    opacity_param(),
    arrays=True,
)
def sticker(img, p, ctx):
    """Draw an emoji-like sticker (circle, smiley face, star, heart) with opacity."""
    h, w = img.shape[:2]
    side = max(2, int(round(p["size"] * min(w, h))))
    st = _sticker_shape(p["kind"], side, p["color"])
    if p["degrees"]:
        st = st.rotate(p["degrees"], resample=Image.Resampling.BILINEAR, expand=True)
    # the part of the sticker inside the image is the layer (pasting it on a transparent
    # full-size layer copies its pixels there)
    x0, y0 = int(round(p["x"] * w - st.width / 2)), int(round(p["y"] * h - st.height / 2))
    left, top = max(0, x0), max(0, y0)
    right, bottom = min(w, x0 + st.width), min(h, y0 + st.height)
    if right <= left or bottom <= top:
        return _layer_blend(img, None, p["opacity"], ctx, "sticker")
    layer = st.crop((left - x0, top - y0, right - x0, bottom - y0))
    return _layer_blend(img, layer, p["opacity"], ctx, "sticker", (left, top))


@register(
    "stripes", "overlay",
    Param("count", "int", 1, 64, doc="number of stripe periods across the image diagonal"),
    Param("thickness", "float", 0.02, 0.98, doc="covered share of each period"),
    Param("degrees", "float", -360.0, 360.0, default=0.0, doc="stripe direction, 0: vertical stripes"),
    Param("phase", "float", 0.0, 1.0, default=0.0, doc="shift, fraction of a period"),
    color_param("color"),
    opacity_param(),
    arrays=True,
)
def stripes(img, p, ctx):
    """Parallel stripes across the image with opacity."""
    h, w = img.shape[:2]
    period = math.hypot(w, h) / p["count"]
    xs = np.arange(w, dtype=np.float64)[None, :] + 0.5  # pixel centres, broadcast to [H, W]
    ys = np.arange(h, dtype=np.float64)[:, None] + 0.5
    t = math.radians(p["degrees"])
    u = np.add(xs * math.cos(t), ys * math.sin(t))  # (x cos + y sin) / period + phase, in place
    u /= period
    u += p["phase"]
    u -= np.floor(u)
    covered = u < p["thickness"]
    alpha = covered.astype(np.float32)
    alpha *= np.float32(p["opacity"])
    return C.blend_flat(img, p["color"], covered, p["opacity"]), C.occlusion_step(img, alpha, ctx, "stripes")


def _donor_over(img, p, ctx, shape: str, name: str):
    """Paste a donor patch (rectangle or ellipse) over the image with opacity.

    Only the patch's box is blended: the same pixels as :func:`_layer_blend` of a
    full-size layer holding the patch (alpha 0 elsewhere leaves the image as it is)."""
    h, w = img.shape[:2]
    left, top, bw, bh = C.rect_box((w, h), p["area"], p["ratio"], p["x"], p["y"])
    patch = ctx.donor_array(p["seed"], (bw, bh))
    if shape == "ellipse":
        m = Image.new("L", (bw, bh), 0)
        ImageDraw.Draw(m).ellipse((0, 0, bw - 1, bh - 1), fill=255)
        cover = np.asarray(m, np.float32)
    else:
        cover = np.full((bh, bw), 255.0, np.float32)
    alpha = np.zeros((h, w), np.float32)
    alpha[top : top + bh, left : left + bw] = cover / 255.0 * p["opacity"]
    out = C.blend(img, patch, alpha, box=(left, top, left + bw, top + bh))
    return out, C.occlusion_step(img, alpha, ctx, name)


_DONOR_PARAMS = (
    Param("area", "float", 0.005, 1.0, doc="patch area, fraction of the image area"),
    Param("ratio", "float", 0.2, 5.0, default=1.0, doc="patch width/height in pixels"),
    Param("x", "float", **FRAC, doc="position in the free horizontal range"),
    Param("y", "float", **FRAC, doc="position in the free vertical range"),
)


@register("paste_over", "composite", *_DONOR_PARAMS, opacity_param(), SEED, arrays=True)
def paste_over(img, p, ctx):
    """Paste a rectangular donor image over the image (the image is the background)."""
    return _donor_over(img, p, ctx, "rect", "paste_over")


@register(
    "overlay_image", "overlay", *_DONOR_PARAMS, opacity_param(),
    Param("shape", "choice", default="ellipse", choices=("rect", "ellipse"), doc="patch outline"), SEED,
    arrays=True,
)
def overlay_image(img, p, ctx):
    """Put another image (a rectangle or an ellipse cut of a donor) on top, with opacity."""
    return _donor_over(img, p, ctx, p["shape"], "overlay_image")


@register("erase", "overlay", *_DONOR_PARAMS, color_param("color", doc="RGB 0..255 of the erased box"), arrays=True)
def erase(img, p, ctx):
    """Fill a box with a plain colour (random erasing): its pixels become untraceable."""
    h, w = img.shape[:2]
    left, top, bw, bh = C.rect_box((w, h), p["area"], p["ratio"], p["x"], p["y"])
    alpha = np.zeros((h, w), np.float32)
    alpha[top : top + bh, left : left + bw] = 1.0
    return C.blend(img, p["color"], alpha), C.occlusion_step(img, alpha, ctx, "erase")
