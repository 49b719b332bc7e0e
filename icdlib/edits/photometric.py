"""Photometric edits: appearance changes that keep every pixel where it is.

Every op here returns an image of the input size and logs no trace step, so the
trace stays the identity. Random draws (noise) come from the spec's ``seed``.
"""

from __future__ import annotations

import functools
import io

import cv2
import numpy as np
from PIL import Image
from scipy import special

from icdlib.edits.raster import rgb_array
from icdlib.edits.registry import SEED, Param, register


@register(
    "color_jitter", "photometric",
    Param("brightness", "float", 0.0, 4.0, default=1.0, doc="brightness factor (1: unchanged)"),
    Param("contrast", "float", 0.0, 4.0, default=1.0, doc="contrast factor (1: unchanged)"),
    Param("saturation", "float", 0.0, 4.0, default=1.0, doc="saturation factor (1: unchanged)"),
    Param("hue", "float", -0.5, 0.5, default=0.0, doc="hue shift, fraction of the colour wheel"),
    arrays=True,
)
def color_jitter(img, p, ctx):
    """Brightness, contrast, saturation factors, then a hue rotation."""
    a = _contrast(_brightness(rgb_array(img), p["brightness"]), p["contrast"])
    a = _saturation(a, p["saturation"])
    if p["hue"]:  # OpenCV's full-range HSV: hue 0..255 around the wheel, shifted modulo 256
        hsv = cv2.cvtColor(a, cv2.COLOR_RGB2HSV_FULL)
        hsv[..., 0] += np.uint8(int(round(p["hue"] * 256)) % 256)
        a = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    return a, []


# Enhancement factors as blends with a degenerate image (as Pillow's ImageEnhance), on
# uint8 with OpenCV: every stage rounded and clipped to 0..255.
def _brightness(a: np.ndarray, f: float) -> np.ndarray:
    return cv2.addWeighted(a, f, a, 0.0, 0.0)  # blend with black


def _contrast(a: np.ndarray, f: float) -> np.ndarray:
    mean = int(cv2.mean(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY))[0] + 0.5)  # blend with the mean grey
    return cv2.addWeighted(a, f, a, 0.0, mean * (1.0 - f))


def _saturation(a: np.ndarray, f: float) -> np.ndarray:
    grey = cv2.cvtColor(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)  # blend with the luma
    return cv2.addWeighted(a, f, grey, 1.0 - f, 0.0)


@register(
    "brightness_contrast", "photometric",
    Param("brightness", "float", 0.0, 4.0, doc="brightness factor (1: unchanged)"),
    Param("contrast", "float", 0.0, 4.0, doc="contrast factor (1: unchanged)"),
    arrays=True,
)
def brightness_contrast(img, p, ctx):
    """Brightness and contrast factors only."""
    return _contrast(_brightness(img, p["brightness"]), p["contrast"]), []


@register("grayscale", "photometric")
def grayscale(img, p, ctx):
    """Luma only, kept as a 3-channel RGB image."""
    return img.convert("L").convert("RGB"), []


@register("invert", "photometric", arrays=True)
def invert(img, p, ctx):
    """Colour negative."""
    return cv2.bitwise_not(img), []


@register("blur", "photometric", Param("radius", "float", 0.0, 0.2, doc="Gaussian sigma, fraction of the shorter side"),
          arrays=True)
def blur(img, p, ctx):
    """Gaussian blur (standard deviation ``radius`` x the shorter side; edges replicated)."""
    sigma = p["radius"] * min(img.shape[:2])
    if sigma <= 0:
        return img.copy(), []
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE), []


@register("sharpen", "photometric", Param("amount", "float", 0.0, 10.0, doc="sharpness factor (1: unchanged)"),
          arrays=True)
def sharpen(img, p, ctx):
    """Unsharp-style sharpening: a blend with Pillow's SMOOTH filter of the image (as
    Pillow's sharpness enhancer)."""
    a = img
    smooth = cv2.filter2D(a, -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE)
    return cv2.addWeighted(a, p["amount"], smooth, 1.0 - p["amount"], 0.0), []


@register("edge_enhance", "photometric", arrays=True)
def edge_enhance(img, p, ctx):
    """Strong edge enhancement (Pillow's EDGE_ENHANCE_MORE kernel; edges replicated)."""
    return cv2.filter2D(img, -1, _EDGE_MORE, borderType=cv2.BORDER_REPLICATE), []


@register("noise", "photometric", Param("sigma", "float", 0.0, 128.0, doc="Gaussian noise std, grey levels 0..255"),
          SEED, arrays=True)
def noise(img, p, ctx):
    """Additive Gaussian noise, independent per channel, drawn from ``seed``.

    Each value is one of 65536 equally likely normal quantiles picked by 16 random bits
    (a Gaussian to 1/65536 in probability, tails cut at 4.3 sigma), rounded to whole
    grey levels; far cheaper than drawing floats.
    """
    a = img
    bits = np.frombuffer(np.random.default_rng(p["seed"]).bytes(2 * a.size), np.uint16)
    levels = np.rint(_normal_quantiles() * np.float32(p["sigma"])).astype(np.int16)
    # uint8 + int16 saturated to 0..255 by OpenCV: the same pixels as clip(a + noise, 0, 255)
    return cv2.add(a, np.take(levels, bits).reshape(a.shape), dtype=cv2.CV_8U), []


@functools.cache
def _normal_quantiles() -> np.ndarray:
    """(65536,) float32: standard normal quantiles at probabilities (k + 0.5) / 65536."""
    return special.ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float32)


@register("jpeg", "photometric", Param("quality", "int", 1, 100, doc="JPEG quality"))
def jpeg(img, p, ctx):
    """Re-encode as JPEG at ``quality`` and decode."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=p["quality"])
    buf.seek(0)
    return Image.open(buf).convert("RGB"), []


@register("posterize", "photometric", Param("bits", "int", 1, 8, doc="bits kept per channel"), arrays=True)
def posterize(img, p, ctx):
    """Keep the top ``bits`` bits of every channel."""
    return np.bitwise_and(img, np.uint8((0xFF << (8 - p["bits"])) & 0xFF)), []


@register("solarize", "photometric", Param("threshold", "int", 0, 255, doc="grey level from which values invert"),
          arrays=True)
def solarize(img, p, ctx):
    """Invert every value at or above ``threshold``."""
    lut = np.arange(256, dtype=np.uint8)
    lut[p["threshold"]:] = 255 - lut[p["threshold"]:]
    return cv2.LUT(img, lut), []


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
    arrays=True,
)
def channel_shuffle(img, p, ctx):
    """Permute the colour channels."""
    bands = dict(zip("rgb", cv2.split(img)))
    return cv2.merge([bands[c] for c in p["order"]]), []


# Pillow's SMOOTH and EDGE_ENHANCE_MORE 3x3 kernels (normalised)
_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13
_EDGE_MORE = np.array([[-1, -1, -1], [-1, 9, -1], [-1, -1, -1]], np.float32)

# The classic sepia tone matrix: row k mixes R, G, B into output channel k.
_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


@register("sepia", "photometric", arrays=True)
def sepia(img, p, ctx):
    """Warm brown tone: every output channel a fixed mix of R, G and B (clipped)."""
    a = np.asarray(img, np.float32) @ _SEPIA.T
    return np.clip(np.rint(a), 0, 255).astype(np.uint8), []
