"""Measure how exactly traces follow the pixels, on coordinate-encoded images.

A chain is applied to two sources that encode each pixel's own position in their colours,
one the colour complement of the other. Whatever the edits paste or draw is identical in
both renders, so the difference of the two outputs isolates the source's contribution:
its blend weight (blue channel) and its position (red, green). This decoding never looks
at the trace, which makes it an independent check of ``trace.to_dense()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from icdlib.edits.chains import EditConfig, sample_chain
from icdlib.edits.engine import apply

MAX_SIDE = 127  # 2 * coordinate must fit an 8-bit channel


@dataclass(frozen=True)
class Exactness:
    """Agreement of one chain's trace with its decoded render.

    Attributes:
        ops: the chain's op names.
        within_1px: share of pixels valid in both whose traced position is within 1 px.
        iou: intersection over union of traced and decoded validity (border band excluded).
        valid_share: share of the edited image that traces to the source.
    """

    ops: tuple[str, ...]
    within_1px: float
    iou: float
    valid_share: float


def _sources(size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    w, h = size
    if max(w, h) > MAX_SIDE:
        raise ValueError(f"exactness: size {size} exceeds {MAX_SIDE} px per side (8-bit encoding)")
    ys, xs = np.mgrid[0:h, 0:w]
    a = np.stack([2 * xs, 2 * ys, np.zeros_like(xs)], -1).astype(np.uint8)
    return Image.fromarray(a, "RGB"), Image.fromarray(255 - a, "RGB")


def measure(specs: Sequence[dict], size: tuple[int, int] = (112, 80), band: int = 2,
            threshold: float | None = None) -> Exactness:
    """Decode one chain's render and compare it with its trace."""
    thr = EditConfig().occlusion_threshold if threshold is None else threshold
    src, comp = _sources(size)
    out_a, trace = apply(src, list(specs))
    out_b, _ = apply(comp, list(specs))
    a = np.asarray(out_a, np.float64)
    b = np.asarray(out_b, np.float64)
    weight = (b[..., 2] - a[..., 2]) / 255.0  # share of the source in each output pixel
    with np.errstate(divide="ignore", invalid="ignore"):
        decoded = ((a[..., :2] - b[..., :2]) / weight[..., None] + 255.0) / 4.0 + 0.5
    truth = weight > 1.0 - thr
    traced = trace.valid_mask()
    edge = np.ones((2 * band + 1, 2 * band + 1), bool)
    near = lambda m: ndimage.binary_dilation(m, edge) & ~ndimage.binary_erosion(m, edge, border_value=1)  # noqa: E731
    keep = ~(near(truth) | near(traced))
    union = ((truth | traced) & keep).sum()
    iou = float((truth & traced & keep).sum() / union) if union else 1.0
    both = truth & traced & keep
    dense = trace.to_dense()
    err = np.abs(decoded[both] - dense[both]).max(-1) if both.any() else np.zeros(0)
    within = float((err <= 1.0).mean()) if err.size else 1.0
    return Exactness(tuple(s["op"] for s in specs), within, iou, float(traced.mean()))


def survey(n_chains: int, seed: int, families: Sequence[str] = ("geometric", "composite", "overlay"),
           size: tuple[int, int] = (112, 80)) -> list[Exactness]:
    """:func:`measure` over ``n_chains`` sampled chains (seeds ``seed .. seed + n - 1``)."""
    if int(n_chains) < 1:
        raise ValueError(f"exactness survey: n_chains must be >= 1, got {n_chains}")
    return [measure(sample_chain(seed + i, families=list(families)), size) for i in range(n_chains)]


REPORT_COLUMNS = ("chain", "within_1px", "validity_iou", "traceable_share")


def report(checks: Sequence[Exactness]) -> tuple[list[dict[str, Any]], dict[str, float | int]]:
    """The exactness report of measured chains: one row per chain, and its summary.

    Returns:
        rows: one dict per chain, in order, with the keys of :data:`REPORT_COLUMNS`:
            ``chain`` (op names joined by ``" > "``, ``""`` for the empty chain),
            ``within_1px``, ``validity_iou`` and ``traceable_share`` (:class:`Exactness`'s
            ``within_1px``, ``iou`` and ``valid_share``, shares in [0, 1]; the first two are 1
            for an exact trace, the third is how much of the copy traces at all).
        summary: ``chains`` (count), ``min_within_1px``, ``mean_within_1px`` and
            ``min_validity_iou`` over the rows (floats in [0, 1]): the worst chain decides
            whether the traces are exact, so a minimum below 1 sends the reader to its row.

    Raises:
        ValueError: when ``checks`` is empty (a summary of no chain would claim nothing).
    """
    if not checks:
        raise ValueError("exactness report: no measured chain")
    rows = [{"chain": " > ".join(c.ops), "within_1px": float(c.within_1px), "validity_iou": float(c.iou),
             "traceable_share": float(c.valid_share)} for c in checks]
    within = [r["within_1px"] for r in rows]
    summary = {"chains": len(rows), "min_within_1px": min(within), "mean_within_1px": sum(within) / len(within),
               "min_validity_iou": min(r["validity_iou"] for r in rows)}
    return rows, summary
