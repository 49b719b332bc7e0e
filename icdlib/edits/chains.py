"""Seeded sampling of DISC21-like edit chains (``params.yaml`` section ``edits``).

:func:`sample_chain` draws a short chain of complete specs: every parameter, seeds
included, is written out, so ``icdlib.edits.apply(image, chain)`` replays it exactly
and the chain survives a JSON round trip. ``edits.recipe`` picks the sampler:

* ``chains`` (default): each family fires with its ``p_*`` and adds one or two edits.
  Severity is bounded by a *keep budget*: each sampled edit carries a rough estimate
  of the share of the source it leaves visible (crop area, uncovered share, rotation
  corners...), and edits that would push the running product below ``min_keep`` are
  redrawn, so a query keeps roughly a third or more of its source, as in DISC21.
* ``released``: the paper's released augmentations, per role
  (:func:`icdlib.edits.recipe.released_chain`, ``docs/edits.md``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from icdlib.edits.recipe import checked_families, released_chain
from icdlib.edits.registry import FAMILIES, OPS, complete
from icdlib.edits.samplers import SAMPLERS, one_of

RECIPES = ("chains", "released")
# Ops added with the released recipe. The chains sampler leaves them out, so that its
# chains stay, seed for seed, what they were before these ops existed.
_NOT_IN_CHAINS = frozenset({"erase", "sepia"})


@dataclass(frozen=True)
class EditConfig:
    """Chain sampling and occlusion labelling (``params.yaml`` section ``edits``).

    Ranges are ``(low, high)`` tuples; areas are fractions of an image area. The
    sampling knobs from ``max_edits`` to ``perspective_max`` belong to the ``chains``
    recipe; ``recipe: released`` follows the released numbers instead. Both recipes
    use ``occlusion_threshold`` and ``max_pixels``.
    """

    max_edits: int = 5  # DISC21 queries stack a handful of edits; longer chains add little
    p_geometric: float = 0.8  # most DISC21 queries are cropped, scaled or rotated
    p_composite: float = 0.35  # pastes/collages/frames: frequent but not the majority
    p_overlay: float = 0.5  # text and emoji overlays are common in DISC21
    p_photometric: float = 0.8  # colour/JPEG/blur changes are almost always present
    min_keep: float = 0.35  # a query keeps roughly a third or more of its source
    crop_area: tuple[float, float] = (0.35, 0.9)  # kept area of crops; below 1/3 copies become unrecognisable
    paste_area: tuple[float, float] = (0.25, 0.6)  # canvas share of a source pasted onto a donor (as SSCD/CopyNCE)
    cover_area: tuple[float, float] = (0.05, 0.35)  # image share hidden by one foreign image pasted on top
    scale_range: tuple[float, float] = (0.4, 1.6)  # query sizes in DISC21 vary by a few times
    rotate_max: float = 180.0  # any angle; DISC21 has arbitrary rotations
    shear_max: float = 25.0  # degrees; stronger shears look unnatural
    perspective_max: float = 0.15  # corner moves, fraction of the side
    occlusion_threshold: float = 0.5  # covered with opacity >= this: untraceable (half hidden)
    max_pixels: int = 64_000_000  # refuse a chain whose image would pass this (~190 MB of RGB)
    recipe: str = "chains"  # "released": the paper's released augmentations per role (docs/edits.md)

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"EditConfig: recipe={self.recipe!r} must be one of {RECIPES}")
        for name in ("p_geometric", "p_composite", "p_overlay", "p_photometric", "min_keep",
                     "occlusion_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"EditConfig: {name}={v} must be in [0, 1]")
        if self.max_pixels < 1:
            raise ValueError(f"EditConfig: max_pixels={self.max_pixels} must be >= 1")
        if self.max_edits < 1:
            raise ValueError(f"EditConfig: max_edits={self.max_edits} must be >= 1")
        for name in ("crop_area", "paste_area", "cover_area", "scale_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi or (name != "scale_range" and hi > 1):
                raise ValueError(f"EditConfig: {name}=({lo}, {hi}) must satisfy 0 < low <= high (<= 1 for areas)")
        if not 0 <= self.perspective_max <= 0.45:
            raise ValueError(f"EditConfig: perspective_max={self.perspective_max} must be in [0, 0.45]")
        if not 0 <= self.shear_max <= 60:
            raise ValueError(f"EditConfig: shear_max={self.shear_max} must be in [0, 60]")


def sample_chain(seed: int, families: Sequence[str] | None = None,
                 config: EditConfig | None = None, *, role: str = "descriptor") -> list[dict]:
    """A seeded random chain of complete edit specs, drawn by ``config.recipe``.

    Args:
        seed: integer seed; the same seed, families, config and role give the same chain.
        families: subset of ``("geometric", "composite", "overlay", "photometric")``
            to draw from (default: all).
        config: :class:`EditConfig` (default: the defaults).
        role: ``"descriptor"`` or ``"matcher"``: whose released numbers
            ``recipe: released`` follows (the ``chains`` recipe has one set for both).
    Returns:
        list of JSON-serialisable spec dicts with every parameter explicit.

    ``chains``: each allowed family is drawn with its probability and contributes one
    or two edits; the slots are shuffled and cut to ``max_edits``. If no family fires,
    one allowed family is picked uniformly, so the chain is never empty.
    ``released``: :func:`icdlib.edits.recipe.released_chain`, whose ops of other
    families are dropped (the chain may then be empty).
    """
    cfg = config if config is not None else EditConfig()
    fams = checked_families(families, role, "sample_chain")
    if cfg.recipe == "released":
        return released_chain(seed, role, fams, cfg)
    rng = np.random.default_rng(seed)
    probs = {"geometric": cfg.p_geometric, "composite": cfg.p_composite,
             "overlay": cfg.p_overlay, "photometric": cfg.p_photometric}
    slots = []
    for f in FAMILIES:
        if f in fams and rng.random() < probs[f]:
            slots += [f] * int(rng.integers(1, 3))
    if not slots:
        slots = [fams[int(rng.integers(len(fams)))]]
    rng.shuffle(slots)
    slots = slots[: cfg.max_edits]
    by_family = _by_family(tuple(SAMPLERS))
    chain, keep = [], 1.0
    for f in slots:
        for _ in range(8):
            name = one_of(rng, by_family[f])
            if any(s["op"] == name for s in chain):
                continue  # one edit per op: repeated pastes would grow the canvas without end
            spec, k = SAMPLERS[name](rng, cfg)
            if keep * k >= cfg.min_keep:
                keep *= k
                chain.append(complete(spec))
                break
    if not chain:  # every draw was too severe: fall back to a mild edit of the first family
        mild = {"geometric": "hflip", "composite": "collage", "overlay": "sticker", "photometric": "grayscale"}
        chain.append(complete(SAMPLERS[mild[slots[0]]](rng, cfg)[0]))
    return chain


@functools.lru_cache(maxsize=8)
def _by_family(sampled: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The chain-eligible sampled ops of each family, sorted (keyed by the sampler names,
    so an op registered later is seen)."""
    return {f: tuple(sorted(n for n in sampled if OPS[n].family == f and n not in _NOT_IN_CHAINS))
            for f in FAMILIES}
