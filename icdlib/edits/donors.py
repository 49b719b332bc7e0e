"""Foreign images for composite edits: seeded procedural donors and donor resizing.

Procedural donors are smooth two-colour gradients with a few soft blobs and mild
grain, so that pasted foreign content looks like a photo-ish image and never like the
source. Everything is drawn from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from icdlib.edits.raster import resize_array, rgb_array, size_of


def procedural_donor_array(seed: int, size: tuple[int, int]) -> np.ndarray:
    """An ``[h, w, 3]`` uint8 RGB image of ``size`` (w, h) drawn from ``seed`` (same seed, same bytes).

    A linear gradient between two random colours at a random angle, plus 3-6 Gaussian
    blobs of random colours and +-6 grey levels of grain.
    """
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ValueError(f"procedural_donor: size must be positive, got {size}")
    rng = np.random.default_rng(seed)
    # the smooth part is rendered on a grid of at most 64 px a side, then upsampled
    f = min(1.0, 64.0 / max(w, h))
    gw, gh = max(1, round(w * f)), max(1, round(h * f))
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    xs = (xs + 0.5) / gw
    ys = (ys + 0.5) / gh
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * xs + np.sin(angle) * ys
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    img = c0 + t[..., None] * (c1 - c0)
    for _ in range(int(rng.integers(3, 7))):
        cx, cy = rng.uniform(0, 1, 2)
        r = rng.uniform(0.08, 0.35)
        a = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - 0.8 * a) + 0.8 * a * rng.uniform(0, 255, 3).astype(np.float32)
    small = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
    big = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), np.float32)
    big = big + 3.0 * rng.standard_normal((h, w, 1), dtype=np.float32)
    return np.clip(np.rint(big), 0, 255).astype(np.uint8)


def cover_resize_array(image, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``image`` (RGB PIL or ``[H, W, 3]`` uint8) to the aspect ratio of ``size``
    (whole pixels) and resize it to ``size`` (bilinear, pixel-area averaging when shrinking),
    as an ``[h, w, 3]`` uint8 array."""
    w, h = size_of(image)
    tw, th = int(size[0]), int(size[1])
    if w * th > h * tw:  # too wide: crop width
        cw = min(w, max(1, round(h * tw / th)))
        box = ((w - cw) // 2, 0, (w - cw) // 2 + cw, h)
    else:
        ch = min(h, max(1, round(w * th / tw)))
        box = (0, (h - ch) // 2, w, (h - ch) // 2 + ch)
    a = rgb_array(image)[box[1]:box[3], box[0]:box[2]]
    return resize_array(a, (tw, th), "bilinear")
