"""The baselines' losses: InfoNCE and KoLeo for the descriptor, BCE for the matcher.

Pure tensor functions; :class:`InfoNCE` is the one thin module (it owns the learnable
logit scale).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------- InfoNCE
def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``x`` over the process group, keeping the gradient of the local slice.

    Other ranks' slices arrive without gradient (a no-grad gather); the local slice is
    re-inserted as ``x`` itself so this rank's loss back-propagates into its own inputs.
    Every rank must pass the same shape.

    Args:
        x: ``[B, ...]`` local tensor.
    Returns:
        ``(gathered [world * B, ...], offset)`` where ``offset = rank * B`` is the position
        of the local slice; ``(x, 0)`` when ``torch.distributed`` is not initialised.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(x) for _ in range(world)]
    with torch.no_grad():
        dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts), rank * x.shape[0]


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    temperature: float = 0.05,
    scale: torch.Tensor | float | None = None,
    gather: bool = True,
) -> torch.Tensor:
    """NT-Xent / InfoNCE between two views, every other embedding a negative.

    The 2B local embeddings ``[a; b]`` are scored by cosine similarity against all
    embeddings of the global batch (gathered over processes when ``torch.distributed`` is
    initialised and ``gather`` is True, see :func:`gather_with_grad`). The positive of
    ``a_i`` is ``b_i`` and vice versa; self-similarities are excluded. The loss is the
    mean cross-entropy over the 2B local rows.

    Args:
        a, b: ``[B, D]`` float embeddings of the two views (normalised here).
        temperature: fixed temperature (> 0), used when ``scale`` is None
            (``logits = cos / temperature``; method.md s.8 calibration: 0.05).
        scale: logit scale multiplying the cosines (a tensor keeps its gradient), e.g.
            ``log_scale.exp()`` of :class:`InfoNCE`.
        gather: gather negatives across processes when distributed.
    Returns:
        scalar float tensor (nats).
    """
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"info_nce: a and b must both be [B, D]; got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] < 1:
        raise ValueError("info_nce: empty batch")
    if scale is None:
        if temperature <= 0:
            raise ValueError(f"info_nce: temperature must be > 0, got {temperature}")
        scale = 1.0 / temperature
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]), dim=1)  # (2B, D)
    everyone, offset = gather_with_grad(z) if gather else (z, 0)
    logits = (z @ everyone.T) * scale  # (2B, world * 2B)
    rows = torch.arange(2 * n, device=z.device)
    minus_inf = torch.full((), float("-inf"), device=z.device, dtype=logits.dtype)
    logits = logits.index_put((rows, rows + offset), minus_inf)  # no self-similarity
    positives = (rows + n) % (2 * n) + offset  # a_i <-> b_i
    return F.cross_entropy(logits, positives)


class InfoNCE(nn.Module):
    """:func:`info_nce` with a learnable logit scale (SSCD-style) or a fixed temperature.

    Args:
        learnable: learn ``log_scale`` (logits = cos * exp(log_scale)); else use
            ``temperature``.
        log_scale_init: initial log of the scale; 3.2 gives exp(3.2) ~ 24.5 (method.md s.4).
        temperature: fixed temperature when not learnable.
        gather: gather negatives across processes when distributed.
    """

    def __init__(
        self,
        learnable: bool = True,
        log_scale_init: float = 3.2,
        temperature: float = 0.05,
        gather: bool = True,
    ):
        super().__init__()
        if not learnable and temperature <= 0:
            raise ValueError(f"InfoNCE: temperature must be > 0, got {temperature}")
        self.learnable = learnable
        self.temperature = float(temperature)
        self.gather = gather
        if learnable:
            self.log_scale = nn.Parameter(torch.tensor(float(log_scale_init)))
        else:
            self.register_parameter("log_scale", None)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scalar loss of the ``[B, D]`` views ``a`` and ``b``."""
        scale = self.log_scale.exp() if self.learnable else None
        return info_nce(a, b, temperature=self.temperature, scale=scale, gather=self.gather)

    def extra_repr(self) -> str:
        if self.learnable:
            return f"learnable, scale={self.log_scale.exp().item():.3g}"
        return f"temperature={self.temperature}"


# ------------------------------------------------------------------- KoLeo and BCE
def koleo(x: torch.Tensor, groups: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo entropy regulariser ``-mean_i log(||x_i - x_nn(i)|| + eps)``.

    ``nn(i)`` is the nearest (Euclidean) embedding that does not match ``i``: never ``i``
    itself, nor any embedding with the same ``groups`` id (e.g. the other view of the same
    image). Neighbours are picked without gradient; the distance carries it. Minimising it
    spreads the descriptors apart.

    Args:
        x: ``[B, D]`` float embeddings (usually L2-normalised descriptors).
        groups: optional ``[B]`` integer ids; equal ids are matching embeddings.
        eps: added to the distance inside the log (duplicates give ``-log eps``, not inf).
    Returns:
        scalar float tensor.
    """
    if x.dim() != 2:
        raise ValueError(f"koleo: x must be [B, D], got {tuple(x.shape)}")
    n = x.shape[0]
    excluded = torch.eye(n, dtype=torch.bool, device=x.device)
    if groups is not None:
        groups = torch.as_tensor(groups, device=x.device)
        if tuple(groups.shape) != (n,):
            raise ValueError(f"koleo: groups must be [{n}], got {tuple(groups.shape)}")
        excluded |= groups[:, None] == groups[None, :]
    if excluded.all(1).any():
        raise ValueError("koleo: some embedding has no non-matching neighbour in the batch")
    with torch.no_grad():
        d2 = torch.cdist(x.detach(), x.detach()).masked_fill_(excluded, float("inf"))
        nn_idx = d2.argmin(1)
    dist_nn = (x - x[nn_idx]).norm(dim=1)
    return -torch.log(dist_nn + eps).mean()


def matcher_bce(
    logits: torch.Tensor, labels: torch.Tensor, pos_weight: float | None = None
) -> torch.Tensor:
    """Binary cross-entropy of matcher logits against copy labels.

    Args:
        logits: ``[B]`` float, one logit per (query, reference) pair (sigmoid = P(copy)).
        labels: ``[B]`` bool or {0, 1} numbers: 1 for a copy (positive) pair, 0 for a
            (hard) negative.
        pos_weight: optional weight on positive terms (e.g. negatives/positives ratio).
    Returns:
        scalar float tensor, mean over the batch (nats).
    """
    if logits.dim() != 1 or tuple(labels.shape) != tuple(logits.shape):
        raise ValueError(
            f"matcher_bce: logits and labels must both be [B]; got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    y = labels.to(logits.dtype)
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"matcher_bce: labels must be 0/1, got values {y.unique().tolist()}")
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, y, pos_weight=pw)
