"""Patch overlap matrices from PixTrace mappings (CopyNCE's soft targets).

For a query/reference pair, ``O[i, j]`` is the fraction of query patch ``i``'s pixel
centres whose traced position falls in reference patch ``j``; the last column is the
fraction that traces nowhere. Patches are row-major over ``floor(H/p) x floor(W/p)``
grids, the remainder dropped. Pixel convention as in :mod:`icdlib.pixtrace`: pixel
(col c, row r) covers ``[c, c+1) x [r, r+1)``, centre ``(c + 0.5, r + 0.5)``; sizes are
``(width, height)``.

On CPU the counts come from a compiled per-pixel kernel (:mod:`icdlib.pixtrace.kernel`,
numba). On other devices (CUDA) geometry is counted exactly per query pixel row from
breakpoints (no per-pixel work, :func:`_segment_counts`), and pixels hidden by masks are
looked up one by one and removed (:func:`_remove_hidden`). :func:`_dense_counts` is the
plain per-pixel evaluation both must equal. Every point test shares one float64
expression (``u * x + off``, no fused multiply-add), so the paths agree bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import torch

from icdlib.pixtrace import kernel as overlap_kernel
from icdlib.pixtrace.torch_counts import grids, overlap_torch
from icdlib.pixtrace.trace import Mapping, Trace, transfer


def overlap(query: Trace, reference: Trace, patch: int, device: str | torch.device = "cpu"):
    """Patch overlap matrix of one query/reference pair.

    Returns:
        ``torch.float32 [Nq, Nr + 1]``: entry (i, j) is the fraction of query patch i's
        pixels (pixel centres) whose traced position falls in reference patch j; the last
        column holds the fraction that traces nowhere (untraceable, or outside the
        reference's patch grid). Patches are numbered row-major over
        ``floor(H/patch) x floor(W/patch)`` grids; rows sum to 1.
    """
    return overlap_batch([(query, reference)], patch, device=device)[0]


def overlap_batch(
    pairs: Sequence[tuple[Trace, Trace]],
    patch: int,
    device: str | torch.device = "cpu",
    chunk: int | None = None,
) -> torch.Tensor:
    """Batched :func:`overlap` for pairs whose query sizes and reference sizes agree.

    Args:
        pairs: ``(query trace, reference trace)`` tuples of the same source size each.
        patch: patch side in pixels (>= 1; both images must hold at least one patch).
        device: torch device the counting runs on (``"cpu"`` or ``"cuda"``).
        chunk: pairs the torch path evaluates together (default: all pairs on a GPU;
            the compiled CPU path needs no chunking and only checks it).
    Returns:
        ``torch.float32 [B, Nq, Nr + 1]`` on ``device``; rows sum to 1.
    """
    if len(pairs) == 0:
        raise ValueError("overlap_batch: no pairs given")
    maps = [transfer(q, r) for q, r in pairs]
    return overlap_from_mappings(maps, patch, device=device, chunk=chunk)


def overlap_from_mappings(
    maps: Sequence[Mapping],
    patch: int,
    device: str | torch.device = "cpu",
    chunk: int | None = None,
) -> torch.Tensor:
    """:func:`overlap_batch` from precomputed query -> reference mappings.

    On CPU the compiled per-pixel counter (:mod:`icdlib.pixtrace.kernel`) runs, on
    ``torch.get_num_threads()`` threads when several pairs are given; on other devices
    the torch row-segment path (:func:`icdlib.pixtrace.torch_counts.overlap_torch`). Both
    equal a per-pixel evaluation (:func:`icdlib.pixtrace.torch_counts.dense_counts`) exactly.
    """
    if len(maps) == 0:
        raise ValueError("overlap_batch: no pairs given")
    if chunk is not None and int(chunk) < 1:
        raise ValueError(f"overlap_batch: chunk must be >= 1, got {chunk}")
    qgrid, rgrid = grids(maps, patch)
    dev = torch.device(device)
    if dev.type == "cpu":
        threads = torch.get_num_threads()
        return torch.from_numpy(overlap_kernel.fractions(maps, patch, qgrid, rgrid, threads))
    return overlap_torch(maps, patch, dev, chunk, qgrid, rgrid)
