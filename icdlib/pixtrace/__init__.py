"""PixTrace: exact pixel tracing through image edits, and the patch overlaps it gives.

* :mod:`icdlib.pixtrace.trace`: :class:`Step`, :class:`Mapping`, :class:`Trace` and
  :func:`transfer` (copy-vs-copy composition), exact and analytic;
* :mod:`icdlib.pixtrace.region`: a mapping's validity region (half-plane rows, masks) and
  the one float64 point test every path evaluates;
* :mod:`icdlib.pixtrace.patch_overlap`: :func:`overlap` and :func:`overlap_batch`,
  ``[Nq, Nr + 1]`` patch overlap matrices (CopyNCE's targets), the last column being the
  share of each query patch that traces nowhere;
* :mod:`icdlib.pixtrace.kernel`: the compiled CPU counting kernel behind them.

Pixel convention, everywhere in icdlib: continuous ``(x, y)``, x right, y down; pixel
(column ``c``, row ``r``) covers ``[c, c+1) x [r, r+1)``, centre ``(c + 0.5, r + 0.5)``;
sizes are ``(width, height)``.
"""

from icdlib.pixtrace.trace import Mapping, Size, Step, Trace, patch_grid, pixel_centres, transfer
from icdlib.pixtrace.patch_overlap import (
    overlap, overlap_batch, overlap_from_mappings,
)

__all__ = [
    "Mapping", "Size", "Step", "Trace", "overlap", "overlap_batch",
    "overlap_from_mappings", "patch_grid", "pixel_centres", "transfer",
]
