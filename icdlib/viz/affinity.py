"""What the explorer computes before it draws: display sizes, resized traces, and the model's
patch affinity on the same patch grid as PixTrace's overlaps."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from icdlib.pixtrace import Step, Trace, patch_grid


def fit_size(image: Image.Image, side: int) -> Image.Image:
    """``image`` resized (bicubic) so its longer side is ``side`` px, aspect kept."""
    w, h = image.size
    s = side / max(w, h)
    return image.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)


def resized_trace(trace: Trace, size: tuple[int, int]) -> Trace:
    """``trace`` followed by a plain resize of the edited image to ``size`` (w, h).

    In continuous coordinates a resize is the scaling ``x' = x * W'/W, y' = y * H'/H``.
    """
    w, h = trace.size
    m = np.diag([size[0] / w, size[1] / h, 1.0])
    return trace.then(Step(m, trace.size, size, name="resize"))


def patch_affinity(q_tokens: torch.Tensor, r_tokens: torch.Tensor, index: int,
                   scale: float = 16.0) -> torch.Tensor:
    """Softmax over reference patches of ``scale * cos(q_index, r_j)``.

    Args:
        q_tokens: ``float [Nq, C]`` query patch tokens; r_tokens: ``float [Nr, C]``.
        index: the query patch (row-major).
    Returns:
        ``float32 [Nr]`` summing to 1: what CopyNCE pushes towards the overlap row.
    """
    if q_tokens.ndim != 2 or r_tokens.ndim != 2 or q_tokens.shape[1] != r_tokens.shape[1]:
        raise ValueError(f"patch_affinity: expected [Nq, C] and [Nr, C], got "
                         f"{tuple(q_tokens.shape)} and {tuple(r_tokens.shape)}")
    if not 0 <= index < q_tokens.shape[0]:
        raise ValueError(f"patch_affinity: index {index} outside 0..{q_tokens.shape[0] - 1}")
    q = torch.nn.functional.normalize(q_tokens[index].float(), dim=0)
    r = torch.nn.functional.normalize(r_tokens.float(), dim=1)
    return torch.softmax(scale * (r @ q), dim=0)


def map_patch(index: int, size: tuple[int, int], patch: int, to_size: tuple[int, int],
              to_patch: int) -> int:
    """The patch of grid ``(to_size, to_patch)`` containing the centre of ``index``.

    Maps the explorer's patch selection onto the model's grid after a resize.
    """
    cols, _ = patch_grid(size, patch)
    cx = ((index % cols) + 0.5) * patch * to_size[0] / size[0]
    cy = ((index // cols) + 0.5) * patch * to_size[1] / size[1]
    tc, tr = patch_grid(to_size, to_patch)
    return min(int(cy // to_patch), tr - 1) * tc + min(int(cx // to_patch), tc - 1)
