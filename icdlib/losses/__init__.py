"""Training losses: CopyNCE (patch-level, traced targets) and the descriptor/matcher baselines.

Everything here is a pure tensor function; :class:`InfoNCE` is the one thin module (it
owns the learnable logit scale).

Patch convention: token ``i`` of a ``[B, N, C]`` tensor is patch ``i`` of a row-major
``rows x cols`` grid, the same numbering :func:`icdlib.pixtrace.overlap` uses for its
``[N, M + 1]`` overlap rows and columns (the last column is the "traces nowhere" bucket).
"""

from icdlib.losses.patch import SPREADS, copynce, copynce_targets, kept_channels
from icdlib.losses.contrastive import InfoNCE, gather_with_grad, info_nce, koleo, matcher_bce

__all__ = [
    "InfoNCE", "SPREADS", "copynce", "copynce_targets", "gather_with_grad", "info_nce", "kept_channels",
    "koleo", "matcher_bce",
]
