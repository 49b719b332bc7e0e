"""Photometric edits: appearance changes that keep every pixel where it is.

Every op here returns an image of the input size and logs no trace step, so the
trace stays the identity. Random draws (noise) come from the spec's ``seed``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from icdlib.edits.registry import SEED, Param, register


@register(
    "color_jitter", "photometric",
    Param("brightness", "float", 0.0, 4.0, default=1.0, doc="brightness factor (1: unchanged)"),
    Param("contrast", "float", 0.0, 4.0, default=1.0, doc="contrast factor (1: unchanged)"),
    Param("saturation", "float", 0.0, 4.0, default=1.0, doc="saturation factor (1: unchanged)"),
    Param("hue", "float", -0.5, 0.5, default=0.0, doc="hue shift, fraction of the colour wheel"),
)
def color_jitter(img, p, ctx):
    """Brightness, contrast, saturation factors, then a hue rotation."""
    img = ImageEnhance.Brightness(img).enhance(p["brightness"])
    img = ImageEnhance.Contrast(img).enhance(p["contrast"])
    img = ImageEnhance.Color(img).enhance(p["saturation"])
    if p["hue"]:
        hsv = np.asarray(img.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(p["hue"] * 256))) % 256
        img = Image.fromarray(hsv, "HSV").convert("RGB")
    return img, []


@register(
    "brightness_contrast", "photometric",
    Param("brightness", "float", 0.0, 4.0, doc="brightness factor (1: unchanged)"),
    Param("contrast", "float", 0.0, 4.0, doc="contrast factor (1: unchanged)"),
)
def brightness_contrast(img, p, ctx):
    """Brightness and contrast factors only."""
    img = ImageEnhance.Brightness(img).enhance(p["brightness"])
    return ImageEnhance.Contrast(img).enhance(p["contrast"]), []


@register("grayscale", "photometric")
def grayscale(img, p, ctx):
    """Luma only, kept as a 3-channel RGB image."""
    return img.convert("L").convert("RGB"), []


@register("invert", "photometric")
def invert(img, p, ctx):
    """Colour negative."""
    return ImageOps.invert(img), []


@register("blur", "photometric", Param("radius", "float", 0.0, 0.2, doc="Gaussian sigma, fraction of the shorter side"))
def blur(img, p, ctx):
    """Gaussian blur."""
    return img.filter(ImageFilter.GaussianBlur(p["radius"] * min(img.size))), []


@register("sharpen", "photometric", Param("amount", "float", 0.0, 10.0, doc="sharpness factor (1: unchanged)"))
def sharpen(img, p, ctx):
    """Unsharp-style sharpening (Pillow's sharpness enhancer)."""
    return ImageEnhance.Sharpness(img).enhance(p["amount"]), []


@register("edge_enhance", "photometric")
def edge_enhance(img, p, ctx):
    """Pillow's strong edge-enhancement filter."""
    return img.filter(ImageFilter.EDGE_ENHANCE_MORE), []


@register("noise", "photometric", Param("sigma", "float", 0.0, 128.0, doc="Gaussian noise std, grey levels 0..255"), SEED)
def noise(img, p, ctx):
    """Additive Gaussian noise, independent per channel, drawn from ``seed`` (float32 draws)."""
    a = np.asarray(img, np.float32)
    a = a + np.random.default_rng(p["seed"]).standard_normal(a.shape, dtype=np.float32) * np.float32(p["sigma"])
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB"), []


@register("jpeg", "photometric", Param("quality", "int", 1, 100, doc="JPEG quality"))
def jpeg(img, p, ctx):
    """Re-encode as JPEG at ``quality`` and decode."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=p["quality"])
    buf.seek(0)
    return Image.open(buf).convert("RGB"), []


@register("posterize", "photometric", Param("bits", "int", 1, 8, doc="bits kept per channel"))
def posterize(img, p, ctx):
    """Keep the top ``bits`` bits of every channel."""
    return ImageOps.posterize(img, p["bits"]), []


@register("solarize", "photometric", Param("threshold", "int", 0, 255, doc="grey level from which values invert"))
def solarize(img, p, ctx):
    """Invert every value at or above ``threshold``."""
    return ImageOps.solarize(img, p["threshold"]), []


@register("pixelize", "photometric", Param("block", "float", 0.0, 0.5, doc="block side, fraction of the shorter side"))
def pixelize(img, p, ctx):
    """Average over blocks (downscale) and blow back up with nearest neighbour."""
    w, h = img.size
    b = max(1.0, p["block"] * min(w, h))
    small = img.resize((max(1, int(round(w / b))), max(1, int(round(h / b)))), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.NEAREST), []


@register(
    "channel_shuffle", "photometric",
    Param("order", "choice", choices=("rgb", "rbg", "grb", "gbr", "brg", "bgr"), doc="new channel order"),
)
def channel_shuffle(img, p, ctx):
    """Permute the colour channels."""
    bands = dict(zip("rgb", img.split()))
    return Image.merge("RGB", [bands[c] for c in p["order"]]), []


# The classic sepia tone matrix: row k mixes R, G, B into output channel k.
_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


@register("sepia", "photometric")
def sepia(img, p, ctx):
    """Warm brown tone: every output channel a fixed mix of R, G and B (clipped)."""
    a = np.asarray(img, np.float32) @ _SEPIA.T
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB"), []
