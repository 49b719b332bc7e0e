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


def reference_views(img: Image.Image, views: str = "full") -> list[Image.Image]:
    """The LCE reference views: ``full`` (10): the image, 5 third-crops, 4 quadrants, in that
    order; ``light`` (5): the image and its 4 quadrants."""
    out = [img]
    if _check(views) == "full":
        out += [_crop_frac(img, x, y, 1 / 3, 1 / 3) for x, y in THIRD_CROPS]
    out += [_crop_frac(img, x, y, 0.5, 0.5) for x, y in QUADRANTS]
    return out


def query_views(img: Image.Image, views: str = "full") -> list[Image.Image]:
    """The LCE query views. ``full`` (26): the 10 full reference views, 9 tiles of a 3x3 grid,
    and 7 rotations by 45..315 degrees (canvas expanded to keep every pixel, black fill).
    ``light`` (6): the image, its 4 quadrants and its centre third."""
    if _check(views) == "light":
        return reference_views(img, "light") + [_crop_frac(img, *THIRD_CROPS[0], 1 / 3, 1 / 3)]
    out = reference_views(img)
    out += [_crop_frac(img, x, y, 1 / 3, 1 / 3) for x, y in TILES]
    out += [img.rotate(a, resample=Image.BILINEAR, expand=True) for a in ROTATIONS]
    return out


VIEW_SETS = {"full": (26, 10), "light": (6, 5)}  # name -> (query views, reference views)
N_QUERY_VIEWS, N_REFERENCE_VIEWS = VIEW_SETS["full"]


def lce_passes(views: str = "full") -> int:
    """Matcher passes per pair: every query view against the full reference, then the full
    query against every reference crop (35 for ``full``, 10 for ``light``)."""
    q, r = VIEW_SETS[_check(views)]
    return q + r - 1


def _check(views: str) -> str:
    if views not in VIEW_SETS:
        raise ValueError(f"LCE views must be one of {sorted(VIEW_SETS)}, got {views!r}")
    return views
