"""CopyNCE: the patch-level contrastive loss whose soft targets are PixTrace overlaps.

Written by hand (no library has it): it is the method itself. Patch convention: token
``i`` of a ``[B, N, C]`` tensor is patch ``i`` of a row-major ``rows x cols`` grid, the
numbering :func:`icdlib.pixtrace.overlap` uses for its ``[N, M + 1]`` overlap rows and
columns (the last column is the "traces nowhere" bucket).
"""

from __future__ import annotations

import math

import torch


# ------------------------------------------------------------------------- CopyNCE
def kept_channels(channels: int, heads: str | float | None) -> int:
    """How many leading channels CopyNCE keeps out of ``channels``.

    ``heads`` is ``None`` (all), a fraction string ``"a:b"`` (keep ``C*a/b``, e.g. the
    released ``"6:6"`` = all of ViT-S's 6 heads), or a float in ``(0, 1]``. The kept count
    must be a whole number of channels, at least 1.
    """
    if heads is None:
        return channels
    if isinstance(heads, str):
        parts = heads.split(":")
        try:
            a, b = (int(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"copynce: heads must look like 'a:b' with integers, got {heads!r}"
            ) from None
        if a < 1 or b < 1 or a > b:
            raise ValueError(f"copynce: heads 'a:b' needs 1 <= a <= b, got {heads!r}")
        if (channels * a) % b:
            raise ValueError(
                f"copynce: heads {heads!r} does not split {channels} channels evenly"
            )
        return channels * a // b
    frac = float(heads)
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"copynce: heads fraction must be in (0, 1], got {heads!r}")
    keep = int(round(channels * frac))
    if keep < 1:
        raise ValueError(f"copynce: heads {heads!r} keeps no channel of {channels}")
    return keep


def _value_range(x: torch.Tensor) -> tuple[float, float]:
    """``(min, max)`` of ``x``'s entries as floats, ``(0.0, 0.0)`` when it is empty.

    One reduction pass that propagates NaN (a NaN entry makes both NaN), so "every entry
    is finite" is exactly "both are finite", without the full-size boolean tensor of
    ``torch.isfinite(x).all()``.
    """
    if not x.numel():
        return 0.0, 0.0
    low, high = torch.stack(torch.aminmax(x.detach())).tolist()  # one device sync
    return float(low), float(high)


# How a row's target weight is spread over the reference patches: as PixTrace traced it,
# or, for the no-tracing controls, uniformly / on the patch at the same grid position.
SPREADS = ("pixtrace", "uniform", "same_position")


@torch.no_grad()
def copynce_targets(overlap: torch.Tensor, gamma: float, factor: float = 1.0,
                    spread: str = "pixtrace") -> torch.Tensor:
    """Soft CopyNCE targets from a patch overlap matrix (no gradient).

    Args:
        overlap: ``[B, N, M + 1]`` float, as :func:`icdlib.pixtrace.overlap_batch` gives
            it: fraction of query patch ``i`` landing in reference patch ``j``; the last
            column is the untraceable share. Negative entries are not allowed.
        gamma: sharpening exponent (> 0); ``0 ** gamma = 0``.
        factor: constant multiplying every weight (folded into the normaliser).
        spread: ``"pixtrace"`` (the method), or a weight-matched no-tracing control: each
            row keeps the total weight ``W_i = sum_j w_ij`` its PixTrace targets give it,
            spread ``"uniform"``-ly (``W_i / M`` on every reference patch) or put on the
            ``"same_position"`` patch ``i`` (needs ``N == M``). Only the distribution over
            reference patches differs from the method, not how much each row counts.
    Returns:
        ``[B, N, M]`` float ``w_ij = factor * O_ij^gamma / sum_{k<=M+1} O_ik^gamma``, the
        invalid column dropped after normalising: a fully valid row sums to 1, a partly
        invalid row to less, a fully invalid (or all-zero) row to 0.
    """
    if spread not in SPREADS:
        raise ValueError(f"copynce: unknown target spread {spread!r}; known {SPREADS}")
    if not gamma > 0 or not math.isfinite(gamma):  # NaN fails both
        raise ValueError(f"copynce: gamma must be a finite number > 0, got {gamma}")
    if overlap.dim() != 3 or overlap.shape[-1] < 2:
        raise ValueError(f"copynce: overlap must be [B, N, M+1], got {tuple(overlap.shape)}")
    o = overlap.detach()
    if not o.is_floating_point():
        o = o.float()
    low, high = _value_range(o)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("copynce: overlap has NaN or infinite entries")
    if low < 0:
        raise ValueError(f"copynce: overlap has negative entries (min {low:.3g})")
    p = o if gamma == 1 else o.pow(gamma)
    denom = p.sum(-1, keepdim=True).clamp_min_(torch.finfo(p.dtype).tiny)
    if factor == 0:
        return torch.zeros_like(p[..., :-1])
    w = p[..., :-1] / denom.div_(factor)
    if spread == "pixtrace":
        return w
    rows = w.sum(-1, keepdim=True)  # (B, N, 1): each row's PixTrace weight
    n, m = w.shape[-2], w.shape[-1]
    if spread == "uniform":
        return rows.expand_as(w) / m
    if n != m:
        raise ValueError(f"copynce: same_position targets need as many query as reference patches, got {n} vs {m}")
    return torch.diag_embed(rows.squeeze(-1))


_NORM_EPS = 1e-12  # as F.normalize: norms below this are clamped
_FP32_SCALE_MAX = 40.0  # up to here exp(-2 * scale) stays a normal float32 (> 1.2e-38)


class _CopyNCEPairs(torch.autograd.Function):
    """Per-pair CopyNCE from raw tokens and pre-scaled targets, with a hand-written backward.

    Inputs: ``q [B, N, K]``, ``r [B, M, K]``, ``lin = w_qr + w_rq^T [B, N, M]`` and the
    row sums ``w_rows = w_qr.sum(2) [B, N]``, ``w_cols = w_rq.sum(2) [B, M]`` of the
    targets ``w_qr [B, N, M]`` (times ``lam/N``) and ``w_rq [B, M, N]`` (times
    ``(1-lam)/M``), ``scale``. Output ``[B]``, the pair losses, in the dtype of ``q``.

    With ``S = scale * cos`` (one cosine matrix for both directions, from the raw tokens
    and their inverse norms; unit vectors are never materialised), the pair loss is ``sum_i Wr_i lse_j(S_i.) + sum_j Wc_j lse_i(S_.j) - sum_ij S_ij L_ij`` where
    ``Wr``/``Wc`` are the target row sums and ``L = w_qr + w_rq^T``, so
    ``dS = Wr * softmax_rows(S) + Wc * softmax_cols(S) - L``. Norms are clamped at
    ``_NORM_EPS`` as in ``F.normalize``. A NaN or infinite token entry raises
    ``ValueError`` (found from the norms, which it makes non-finite: no extra pass).

    Cosines are bounded, so for ``scale <= 40`` ``E = exp(S - scale)`` lies in
    ``[exp(-2 scale), 1]`` and one exponential serves both softmaxes (row sums and column
    sums of ``E``); above that each row and each column is shifted by its own maximum (two
    exponentials), so no scale underflows to ``-inf``. Writing the backward out avoids
    autograd's full-size temporaries, which dominated the cost.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, q, r, lin, w_rows, w_cols, scale):
        inv_q = torch.linalg.vector_norm(q, dim=-1, keepdim=True)
        inv_r = torch.linalg.vector_norm(r, dim=-1, keepdim=True)
        if not _finite(inv_q, inv_r):  # a NaN or infinite entry makes its token's norm so
            _check_tokens(q, r)  # exact: huge finite tokens may overflow a norm, and pass
        inv_q, inv_r = inv_q.clamp_min_(_NORM_EPS).reciprocal_(), inv_r.clamp_min_(_NORM_EPS).reciprocal_()
        # S = scale * cos, the scale folded into the query side's 1 / |q| (no pass of its own)
        logits = torch.bmm(q, r.transpose(1, 2)).mul_(inv_q * scale).mul_(inv_r.transpose(1, 2))  # (B, N, M)
        # sum_ij S_ij L_ij as row dot products summed (a [B, 1, N M] bmm is 4x slower and 40x less exact)
        dot = _rowdot(logits, lin).sum((1, 2))  # (B,)
        # From here on the backward needs only exponentials of the logits, which overwrite
        # them (one [B, N, M] buffer fewer).
        if scale <= _FP32_SCALE_MAX:
            # Cosines are at most 1, so shifting every logit by ``scale`` is each row's and
            # column's max or less, and exp(S - scale) >= exp(-2 scale) stays a normal
            # float32: one exponential serves both softmaxes.
            e_rows = e_cols = logits.sub_(scale).exp_()  # (B, N, M)
            shift_rows = shift_cols = scale
        else:
            # Larger scales would underflow a global shift (a row whose best cosine is well
            # below 1 sums to 0 and its log to -inf): shift each row and column by its own max.
            shift_rows = logits.amax(2, keepdim=True)  # (B, N, 1)
            shift_cols = logits.amax(1, keepdim=True)  # (B, 1, M)
            e_rows = (logits - shift_rows).exp_()
            e_cols = logits.sub_(shift_cols).exp_()  # after e_rows: in place of the logits
            shift_rows, shift_cols = shift_rows.squeeze(2), shift_cols.squeeze(1)
        row_sums, col_sums = e_rows.sum(2), e_cols.sum(1)  # (B, N), (B, M); each >= 1 when shifted by its max
        lse_rows = row_sums.log() + shift_rows
        lse_cols = col_sums.log() + shift_cols
        per_pair = (lse_rows * w_rows).sum(1) + (lse_cols * w_cols).sum(1) - dot
        ctx.save_for_backward(q, r, inv_q, inv_r, e_rows, e_cols, row_sums, col_sums, w_rows, w_cols, lin)
        ctx.scale = scale
        return per_pair.to(q.dtype)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, r, inv_q, inv_r, e_rows, e_cols, row_sums, col_sums, w_rows, w_cols, lin = ctx.saved_tensors
        g = (grad * ctx.scale).to(e_rows.dtype)[:, None]  # (B, 1); dS/dcos = scale
        a_rows = (w_rows * g / row_sums)[:, :, None]  # (B, N, 1)
        a_cols = (w_cols * g / col_sums)[:, None, :]  # (B, 1, M)
        dcos = (e_rows * a_rows).addcmul_(e_cols, a_cols)  # softmax terms of dLoss/dcos
        dcos = dcos.to(q.dtype).addcmul_(lin, g[:, :, None].to(q.dtype), value=-1.0)
        # d cos_ij / d q_i = r_j / (|q_i| |r_j|) - cos_ij q_i / |q_i|^2, and likewise for r_j:
        # dq = H @ r - radial_q * q / |q|^2 with H = G / (|q| |r|^T) and radial_q = rowsum(G * cos),
        # which is also q_i . (H @ r)_i: a dot product of [B, N, K] rows already at hand, so no
        # [B, N, M] temporary is made for it (likewise radial_r = r_j . (H^T @ q)_j).
        h = dcos.mul_(inv_q).mul_(inv_r.transpose(1, 2))
        dq = dr = None
        if ctx.needs_input_grad[0]:
            dq = torch.bmm(h, r)
            dq.addcmul_(q, _radial_coef(_rowdot(q, dq), inv_q), value=-1.0)
        if ctx.needs_input_grad[1]:
            dr = torch.bmm(h.transpose(1, 2), q)
            dr.addcmul_(r, _radial_coef(_rowdot(r, dr), inv_r), value=-1.0)
        return dq, dr, None, None, None, None


def _rowdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[B, N, 1]`` dot products of the rows of two ``[B, N, K]`` tensors (one batched matmul)."""
    return torch.matmul(x.unsqueeze(-2), y.unsqueeze(-1)).squeeze(-1)


def _finite(*tensors: torch.Tensor) -> bool:
    """Whether every entry of every tensor is finite (one device sync; meant for small tensors)."""
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def _check_tokens(*tokens: torch.Tensor) -> None:
    """Raise ``ValueError`` if any token entry is NaN or infinite."""
    if not all(math.isfinite(v) for t in tokens for v in _value_range(t)):
        raise ValueError("copynce: query or reference tokens hold NaN or infinite values")


def _radial_coef(radial, inv_norm):
    """``radial / |x|^2``; zero where the norm was clamped (``x / eps`` is linear in ``x``)."""
    coef = radial.mul_(inv_norm).mul_(inv_norm)
    return coef.masked_fill_(inv_norm > 0.5 / _NORM_EPS, 0.0)


def copynce(
    query_tokens: torch.Tensor,
    reference_tokens: torch.Tensor,
    overlap_qr: torch.Tensor,
    overlap_rq: torch.Tensor,
    *,
    gamma: float = 3.0,
    lam: float = 0.5,
    scale: float = 16.0,
    valid: torch.Tensor | None = None,
    heads: str | float | None = None,
    targets: str = "pixtrace",
) -> torch.Tensor:
    """CopyNCE: patch-level InfoNCE with traced soft targets, both directions.

    For each pair, ``s_ij = scale * cos(q_i, r_j)`` over the kept channels, targets ``w``
    from :func:`copynce_targets`, and

    ``l_qr = (1/N) sum_i sum_j w_ij * (-log softmax_j s_ij)`` (softmax over the M reference
    patches of the same pair), ``l_rq`` likewise from ``overlap_rq`` with the softmax over
    the N query patches, pair loss ``lam * l_qr + (1 - lam) * l_rq``.

    Batch reduction: the mean over pairs with ``valid`` True. The official code averages
    over every pair whose CopyNCE flag is set, so the matcher's negative pairs (all-invalid
    overlaps, which add 0) still count in its denominator; pass ``valid=None`` (all pairs)
    to reproduce that, or mark negatives False to average over positives only. A batch with
    no valid pair gives an exact 0 that still has a (zero) gradient path.

    Args:
        query_tokens: ``[B, N, C]`` float patch tokens of the queries (row-major grid).
        reference_tokens: ``[B, M, C]`` float patch tokens of the references.
        overlap_qr: ``[B, N, M + 1]`` query -> reference overlaps (last column invalid).
        overlap_rq: ``[B, M, N + 1]`` reference -> query overlaps.
        gamma: target sharpening exponent (method: 3 descriptor, 1 matcher).
        lam: weight of the query -> reference direction, in ``[0, 1]``.
        scale: logit scale tau applied to cosine similarities (> 0).
        valid: optional ``[B]`` bool; False pairs contribute nothing.
        heads: channels kept, see :func:`kept_channels` (the first ``C*a/b``).
        targets: ``"pixtrace"``, or a weight-matched no-tracing control
            (``"uniform"``, ``"same_position"``; see :func:`copynce_targets`).
    Returns:
        scalar float tensor (nats).
    """
    q, r = query_tokens, reference_tokens
    if q.dim() != 3 or r.dim() != 3:
        raise ValueError(
            f"copynce: tokens must be [B, N, C]; got query {tuple(q.shape)}, "
            f"reference {tuple(r.shape)}"
        )
    b, n, c = q.shape
    m = r.shape[1]
    if b == 0 or n == 0 or m == 0 or c == 0:
        raise ValueError(
            f"copynce: empty input: query {tuple(q.shape)}, reference {tuple(r.shape)} "
            "(need at least one pair, one patch and one channel)"
        )
    if r.shape[0] != b or r.shape[2] != c:
        raise ValueError(
            f"copynce: query {tuple(q.shape)} and reference {tuple(r.shape)} differ in batch "
            "or channels"
        )
    if tuple(overlap_qr.shape) != (b, n, m + 1):
        raise ValueError(
            f"copynce: overlap_qr must be {(b, n, m + 1)}, got {tuple(overlap_qr.shape)}"
        )
    if tuple(overlap_rq.shape) != (b, m, n + 1):
        raise ValueError(
            f"copynce: overlap_rq must be {(b, m, n + 1)}, got {tuple(overlap_rq.shape)}"
        )
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"copynce: lam must be in [0, 1], got {lam}")
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"copynce: scale must be a finite number > 0, got {scale}")
    if valid is not None:
        valid = torch.as_tensor(valid, device=q.device)
        if valid.dtype != torch.bool or tuple(valid.shape) != (b,):
            raise ValueError(
                f"copynce: valid must be a [{b}] bool tensor, got {valid.dtype} "
                f"{tuple(valid.shape)}"
            )

    k = kept_channels(c, heads)
    if k < c:  # the kept channels are checked by the forward, from their norms
        _check_tokens(q[..., k:], r[..., k:])
    dtype = torch.float64 if torch.float64 in (q.dtype, r.dtype) else torch.float32
    q, r = q.to(dtype), r.to(dtype)  # softmax statistics need at least float32
    with torch.no_grad():
        o_qr = overlap_qr.to(device=q.device, dtype=dtype)
        o_rq = overlap_rq.to(device=q.device, dtype=dtype)
        w_qr = copynce_targets(o_qr, gamma, lam / n, targets)  # (B, N, M)
        w_rq = copynce_targets(o_rq, gamma, (1.0 - lam) / m, targets)  # (B, M, N)
        w_rows, w_cols = w_qr.sum(2), w_rq.sum(2)  # (B, N), (B, M)
        lin = w_qr.add_(w_rq.transpose(1, 2)) if w_qr.is_contiguous() else w_qr + w_rq.transpose(1, 2)
        del w_qr, w_rq  # lin reuses w_qr's fresh buffer
    with torch.autocast(q.device.type, enabled=False):  # the softmax statistics stay in fp32 under autocast
        per_pair = _CopyNCEPairs.apply(q[..., :k], r[..., :k], lin, w_rows, w_cols, float(scale))  # (B,)
    if valid is None:
        return per_pair.mean()
    kept = torch.where(valid, per_pair, torch.zeros_like(per_pair))
    return kept.sum() / valid.sum().clamp_min(1)
