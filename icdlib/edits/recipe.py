"""The paper's released training augmentations, drawn as chains of icdlib specs.

``edits.recipe: released`` (the ``disc21`` profile) makes :func:`icdlib.edits.sample_chain`
call :func:`released_chain` instead of the ``chains`` sampler. The released configs give
one set of probabilities and strengths per role: ``"descriptor"`` for the descriptor's
pairs and ``"matcher"`` (stronger, more frequent edits) for the matcher's. A chain is:

1. four groups in a random order:

   - *crop* (``p_crop``): a random resized crop, or the image pasted onto a training
     image, or a training image pasted over it (uniformly); before either paste the
     image itself is random-resized-cropped with probability 1/2;
   - *geometric*: h-flip 1/2, v-flip 1/10, then (``p_warp``) a perspective or an affine
     warp (uniformly), whose angle snaps to a right angle when within 22.5 degrees of one;
   - *photometric*: colour jitter always, the other ops each with their own probability,
     all in a shuffled order;
   - *extra* (0.15): one look-alike of the released albumentations ops;

2. black padding of 20 % on every side (``p_pad``), then random erasing (``p_erase``).

Each released op maps to its closest icdlib op; strengths the released configs do not
pin down come from :data:`icdlib.edits.samplers.SAMPLERS`. ``docs/edits.md`` tabulates
the mapping and lists every remaining difference. There is no keep budget: the recipe
has none (``edits.min_keep`` and the other ``chains`` knobs do not apply).

Every random draw is made whatever ``families`` allows, and the ops of other families
are dropped at the end, so a restricted chain is the full chain of the same seed with
those ops left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from icdlib.edits.registry import FAMILIES, OPS, complete
from icdlib.edits.samplers import ERASE_AREA, ERASE_RATIO, SAMPLERS, draw_seed, uniform

ROLES = ("descriptor", "matcher")

CROP_RATIO = (0.33, 3.0)  # width/height of random resized crops, log-uniform
P_CROP_BEFORE_PASTE = 0.5  # both paste ops random-resized-crop the image first
ONTO_OPACITY = (0.5, 1.0)  # the image pasted onto a training image
OVER_OPACITY = (0.0, 0.5)  # a training image pasted over the image
OVER_RATIO = (3 / 4, 4 / 3)  # the pasted training image: photo aspect ratios (its own is unknown here)
P_HFLIP, P_VFLIP = 0.5, 0.1
PERSPECTIVE_DISTORTION = 0.5  # a corner moves inwards by up to half of this, per axis, as a side fraction
SHEAR_MAX = 45.0  # degrees, horizontal shear of the affine warp
SNAP = 22.5  # an affine angle this close to a multiple of 90 degrees becomes that multiple
JPEG_QUALITIES = (10, 20, 30, 50)
P_EXTRA = 0.15
# look-alikes of the released albumentations list (noise, invert, solarise, sepia, ...)
EXTRA = ("noise", "invert", "solarize", "posterize", "sharpen", "channel_shuffle", "brightness_contrast", "sepia")
PAD = 0.2  # black border on every side, fraction of the side


@dataclass(frozen=True)
class Strengths:
    """The role-dependent numbers of the released recipe.

    Attributes:
        p_crop: probability of the crop group.
        crop_area: area range of random resized crops (also before a paste).
        onto_area: canvas share of the image pasted onto a training image.
        over_area: image share covered by the training image pasted over it.
        p_warp: probability of the perspective-or-affine warp.
        jitter: colour-jitter strengths (brightness, contrast, saturation, hue):
            factors ``U(1 - x, 1 + x)``, hue shift ``U(-x, x)``.
        photometric: icdlib op -> its independent probability in the photometric group.
        p_pad: probability of the 20 % black padding.
        p_erase: probability of random erasing.
    """

    p_crop: float
    crop_area: tuple[float, float]
    onto_area: tuple[float, float]
    over_area: tuple[float, float]
    p_warp: float
    jitter: tuple[float, float, float, float]
    photometric: dict[str, float]
    p_pad: float
    p_erase: float


STRENGTHS = {
    "descriptor": Strengths(
        p_crop=0.3, crop_area=(0.25, 0.5), onto_area=(0.25, 0.5), over_area=(0.3, 0.7), p_warp=0.25,
        jitter=(0.5, 0.5, 0.5, 0.1),
        photometric={"pixelize": 0.15, "jpeg": 0.25, "grayscale": 0.25, "blur": 0.2, "text": 0.25,
                     "sticker": 0.25, "edge_enhance": 0.25},
        p_pad=0.15, p_erase=0.15),
    "matcher": Strengths(
        p_crop=0.5, crop_area=(0.15, 0.5), onto_area=(0.15, 0.5), over_area=(0.5, 0.8), p_warp=0.35,
        jitter=(0.8, 0.8, 0.8, 0.2),
        photometric={"pixelize": 0.25, "jpeg": 0.35, "grayscale": 0.25, "blur": 0.25, "text": 0.35,
                     "sticker": 0.35, "edge_enhance": 0.3},
        p_pad=0.25, p_erase=0.25),
}


def checked_families(families: Sequence[str] | None, role: str, where: str) -> tuple[str, ...]:
    """``families`` as a tuple (None: every registry family), after checking it and ``role``;
    the errors name ``where`` (the public sampler that was called) and the bad value."""
    fams = tuple(FAMILIES if families is None else families)
    if not fams or any(f not in FAMILIES for f in fams):
        raise ValueError(f"{where}: families {list(fams)} must be a non-empty subset of {FAMILIES}")
    if role not in ROLES:
        raise ValueError(f"{where}: role={role!r} must be one of {ROLES}")
    return fams


# ------------------------------------------------------------------ boxes and crops
def fitting_box(rng: np.random.Generator, area: tuple[float, float], ratio: tuple[float, float],
                tries: int = 10) -> tuple[float, float] | None:
    """``(area, width/height)`` of a box drawn as torchvision's RandomResizedCrop and
    RandomErasing draw theirs: area uniform, log-ratio uniform, redrawn up to ``tries``
    times until the box fits inside the image; None when no draw fits.

    The fit is judged on a square image: a chain is drawn before the image's size is
    known, and our ops clip a box that overflows a longer side.
    """
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(tries):
        a, r = uniform(rng, *area), math.exp(uniform(rng, lo, hi))
        if a * r <= 1.0 and a / r <= 1.0:
            return a, r
    return None


def _rrc(rng, area: tuple[float, float]) -> dict:
    box = fitting_box(rng, area, CROP_RATIO)
    a, r = box if box is not None else (1.0, 1.0)  # torchvision's fallback on a square image: all of it
    return {"op": "random_resized_crop", "area": a, "ratio": r, "x": uniform(rng, 0, 1), "y": uniform(rng, 0, 1),
            "resample": "bilinear"}


def _paste_onto(rng, s: Strengths) -> dict:
    a = uniform(rng, *s.onto_area)
    side = 1.0 / math.sqrt(a)  # canvas sides at which the pasted image keeps its own pixel size
    return {"op": "paste_onto", "canvas_w": side, "canvas_h": side, "area": a, "x": uniform(rng, 0, 1),
            "y": uniform(rng, 0, 1), "opacity": uniform(rng, *ONTO_OPACITY), "background": "donor",
            "color": [0, 0, 0], "seed": draw_seed(rng), "resample": "bilinear"}


def _paste_over(rng, s: Strengths) -> dict:
    lo, hi = math.log(OVER_RATIO[0]), math.log(OVER_RATIO[1])
    return {"op": "paste_over", "area": uniform(rng, *s.over_area), "ratio": math.exp(uniform(rng, lo, hi)),
            "x": uniform(rng, 0, 1), "y": uniform(rng, 0, 1), "opacity": uniform(rng, *OVER_OPACITY),
            "seed": draw_seed(rng)}


# ------------------------------------------------------------------ the groups
def _crop_group(rng, s: Strengths, cfg: Any) -> list[dict]:
    if rng.random() >= s.p_crop:
        return []
    kind = int(rng.integers(3))
    if kind == 0:
        return [_rrc(rng, s.crop_area)]
    first = [_rrc(rng, s.crop_area)] if rng.random() < P_CROP_BEFORE_PASTE else []
    return first + [_paste_onto(rng, s) if kind == 1 else _paste_over(rng, s)]


def _perspective(rng) -> dict:
    m = PERSPECTIVE_DISTORTION / 2
    inward = (1, 1, -1, 1, -1, -1, 1, -1)  # (dx, dy) signs of TL, TR, BR, BL moving into the image
    return {"op": "perspective", "offsets": [sign * uniform(rng, 0, m) for sign in inward], "fill": [0, 0, 0],
            "resample": "bilinear"}


def _affine(rng) -> dict:
    deg = uniform(rng, 0, 360)
    right = 90.0 * round(deg / 90.0)
    if abs(deg - right) <= SNAP:
        deg = right % 360.0
    return {"op": "affine", "degrees": deg, "scale": 1.0, "shear_x": uniform(rng, -SHEAR_MAX, SHEAR_MAX),
            "shear_y": 0.0, "translate_x": 0.0, "translate_y": 0.0, "fill": [0, 0, 0], "resample": "bilinear"}


def _geometric_group(rng, s: Strengths, cfg: Any) -> list[dict]:
    out = [{"op": "hflip"}] if rng.random() < P_HFLIP else []
    if rng.random() < P_VFLIP:
        out.append({"op": "vflip"})
    if rng.random() < s.p_warp:
        out.append(_perspective(rng) if rng.random() < 0.5 else _affine(rng))
    return out


def _jitter(rng, s: Strengths) -> dict:
    b, c, sat, hue = s.jitter
    return {"op": "color_jitter", "brightness": uniform(rng, max(0.0, 1 - b), 1 + b),
            "contrast": uniform(rng, max(0.0, 1 - c), 1 + c), "saturation": uniform(rng, max(0.0, 1 - sat), 1 + sat),
            "hue": uniform(rng, -hue, hue)}


def _photometric_group(rng, s: Strengths, cfg: Any) -> list[dict]:
    out = [_jitter(rng, s)]
    for name, p in s.photometric.items():
        if rng.random() < p:
            if name == "jpeg":
                out.append({"op": "jpeg", "quality": int(rng.choice(JPEG_QUALITIES))})
            else:
                out.append(SAMPLERS[name](rng, cfg)[0])
    return [out[i] for i in rng.permutation(len(out))]


def _extra_group(rng, s: Strengths, cfg: Any) -> list[dict]:
    if rng.random() >= P_EXTRA:
        return []
    return [SAMPLERS[EXTRA[int(rng.integers(len(EXTRA)))]](rng, cfg)[0]]


GROUPS = (_crop_group, _geometric_group, _photometric_group, _extra_group)


def _finish(rng, s: Strengths) -> list[dict]:
    out = []
    if rng.random() < s.p_pad:
        out.append({"op": "pad", "left": PAD, "top": PAD, "right": PAD, "bottom": PAD, "color": [0, 0, 0]})
    if rng.random() < s.p_erase:
        box = fitting_box(rng, ERASE_AREA, ERASE_RATIO)
        if box is not None:  # torchvision erases nothing when no box fits
            out.append({"op": "erase", "area": box[0], "ratio": box[1], "x": uniform(rng, 0, 1),
                        "y": uniform(rng, 0, 1), "color": [0, 0, 0]})
    return out


def released_chain(seed: int, role: str = "descriptor", families: Sequence[str] | None = None,
                   config: Any = None) -> list[dict]:
    """A seeded chain of complete specs following the released recipe for ``role``.

    Args:
        seed: integer seed; the same seed, role and families give the same chain.
        role: ``"descriptor"`` or ``"matcher"``: whose released numbers to follow.
        families: registry families whose ops are kept (default: all); the draws do not
            depend on it.
        config: the :class:`icdlib.edits.EditConfig`, handed to the op samplers.
    Returns:
        list of JSON-serialisable specs with every parameter explicit; empty when
        nothing of an allowed family fired.
    """
    fams = checked_families(families, role, "released_chain")
    s = STRENGTHS[role]
    rng = np.random.default_rng(seed)
    specs = []
    for g in rng.permutation(len(GROUPS)):
        specs += GROUPS[g](rng, s, config)
    specs += _finish(rng, s)
    return [complete(spec) for spec in specs if OPS[spec["op"]].family in fams]
