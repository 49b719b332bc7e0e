"""Local Crop Ensembling views (method.md s.6): the crops and rotations LCE scores a pair on.

Boxes are fractions of the image's (width, height), so the views mean the same thing at
any resolution.
"""

from __future__ import annotations

from PIL import Image


def _crop_frac(img: Image.Image, x0: float, y0: float, w: float, h: float) -> Image.Image:
    """Crop the box ``[x0, x0+w) x [y0, y0+h)`` given as fractions of (width, height)."""
    W, H = img.size
    left, top = int(round(x0 * W)), int(round(y0 * H))
    right = max(left + 1, int(round((x0 + w) * W)))
    bottom = max(top + 1, int(round((y0 + h) * H)))
    return img.crop((left, top, min(right, W), min(bottom, H)))


# Top-left corners (x, y) as fractions; third-crops have side 1/3, quadrants side 1/2.
THIRD_CROPS = ((1 / 3, 1 / 3), (1 / 6, 1 / 6), (1 / 2, 1 / 6), (1 / 6, 1 / 2), (1 / 2, 1 / 2))
QUADRANTS = ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5))
TILES = tuple((c / 3, r / 3) for r in range(3) for c in range(3))  # row-major 3x3 grid
ROTATIONS = tuple(range(45, 360, 45))  # degrees, counter-clockwise


def reference_views(img: Image.Image) -> list[Image.Image]:
    """The 10 LCE reference views: full image, 5 third-crops, 4 quadrants (in that order)."""
    views = [img]
    views += [_crop_frac(img, x, y, 1 / 3, 1 / 3) for x, y in THIRD_CROPS]
    views += [_crop_frac(img, x, y, 0.5, 0.5) for x, y in QUADRANTS]
    return views


def query_views(img: Image.Image) -> list[Image.Image]:
    """The 26 LCE query views: the 10 reference views, 9 tiles of a 3x3 grid, and 7
    rotations by 45..315 degrees (canvas expanded to keep every pixel, black fill)."""
    views = reference_views(img)
    views += [_crop_frac(img, x, y, 1 / 3, 1 / 3) for x, y in TILES]
    views += [img.rotate(a, resample=Image.BILINEAR, expand=True) for a in ROTATIONS]
    return views


N_QUERY_VIEWS, N_REFERENCE_VIEWS = 26, 10
