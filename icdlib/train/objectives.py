"""Training objectives: a model plus its losses, as one module that DDP can wrap.

Each objective maps a collated batch of :mod:`icdlib.data.pairs` to a dict of scalar tensors:
``"loss"`` (what to back-propagate on this process) and the detached global values of
every term for logging.

Distributed exactness
---------------------
The objectives are written so that W processes, each holding a shard of the global
batch, produce after DDP's gradient averaging the same gradient as one process holding
the whole batch:

- batch-coupled terms (InfoNCE, KoLeo) are computed on the descriptors gathered with
  :func:`icdlib.train.distributed.gather` (gradient summed back to the owner), identically on
  every process;
- per-pair terms (CopyNCE, BCE) are local sums divided by the *global* count, times W
  (DDP averages the W local gradients).
"""

from __future__ import annotations

import torch
from torch import nn

from icdlib.train import distributed as D
from icdlib.losses import InfoNCE, copynce, koleo, matcher_bce


def _global_mean(local_sum: torch.Tensor, local_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to back-propagate, logged value) of a per-pair mean over all processes.

    ``local_sum``: scalar tensor with gradient; ``local_count``: scalar count (no grad).
    """
    total = D.all_reduce_sum(local_count.to(torch.float32)).clamp_min(1.0)
    world = torch.distributed.get_world_size() if D.active() else 1
    loss = local_sum * (world / total)
    logged = D.all_reduce_sum(local_sum.detach().float()) / total
    return loss, logged


def _copynce_sum(q_tok, r_tok, batch, valid, gamma, lam, scale, heads, targets):
    """Local sum of per-pair CopyNCE over ``valid`` pairs, and their count."""
    count = valid.sum()
    mean = copynce(
        q_tok.float(), r_tok.float(), batch["overlap_qr"], batch["overlap_rq"],
        gamma=gamma, lam=lam, scale=scale, valid=valid, heads=heads, targets=targets,
    )
    return mean * count.clamp_min(1).to(mean.dtype), count


class DescriptorObjective(nn.Module):
    """InfoNCE (+ KoLeo) (+ CopyNCE) on a descriptor model.

    Args:
        model: a descriptor with ``forward_with_tokens(images [B,3,S,S]) ->
            (desc [B, D] L2-normalised, tokens [B, N, C])``.
        w_infonce, w_koleo, w_copynce: loss weights (0 skips the term).
        temperature: fixed InfoNCE temperature, or None for a learnable logit scale
            (log-scale initialised at ``log_scale_init``; the released default).
        bn_per_side: the head's BatchNorm normalises the queries and the references in
            separate calls, as the released model does (False: one call over both).
        gamma, lam, scale, heads, targets: CopyNCE settings (see :func:`icdlib.losses.copynce`).
    """

    def __init__(self, model: nn.Module, *, w_infonce=1.0, w_koleo=0.0, w_copynce=0.0,
                 temperature: float | None = None, log_scale_init=3.2, bn_per_side=True,
                 gamma=3.0, lam=0.5, scale=16.0, heads=None, targets="pixtrace"):
        super().__init__()
        self.model = model
        self.bn_groups = 2 if bn_per_side else 1
        self.w = {"infonce": float(w_infonce), "koleo": float(w_koleo), "copynce": float(w_copynce)}
        self.infonce = InfoNCE(
            learnable=temperature is None, log_scale_init=log_scale_init,
            temperature=temperature if temperature is not None else 1.0, gather=False,
        )
        self.copynce_args = dict(gamma=gamma, lam=lam, scale=scale, heads=heads, targets=targets)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        q, r = batch["query"], batch["reference"]
        b = q.shape[0]
        # (2b, D), (2b, N, C)
        desc, tokens = self.model.forward_with_tokens(torch.cat([q, r]), bn_groups=self.bn_groups)
        desc = desc.float()
        dq = D.gather(desc[:b])  # (W*b, D), global batch order
        dr = D.gather(desc[b:])
        out: dict[str, torch.Tensor] = {}
        loss = desc.new_zeros(())
        nce = self.infonce(dq, dr)
        out["infonce"] = nce.detach()
        loss = loss + self.w["infonce"] * nce
        if self.w["koleo"]:
            n = dq.shape[0]
            groups = torch.arange(n, device=desc.device).repeat(2)  # the two views match
            ko = koleo(torch.cat([dq, dr]), groups=groups)
            out["koleo"] = ko.detach()
            loss = loss + self.w["koleo"] * ko
        if self.w["copynce"]:
            valid = batch["copynce"].to(torch.bool)
            s, count = _copynce_sum(tokens[:b], tokens[b:], batch, valid, **self.copynce_args)
            cn, out["copynce"] = _global_mean(s, count)
            loss = loss + self.w["copynce"] * cn
        if self.infonce.learnable:
            out["logit_scale"] = self.infonce.log_scale.detach().exp()
        out["loss"] = loss
        return out


class MatcherObjective(nn.Module):
    """BCE (+ CopyNCE on the fused patch tokens of positive pairs) on a matcher model.

    Args:
        model: a matcher with ``forward_with_tokens(q, r) -> (logits [B], q_tok, r_tok)``.
        w_bce, w_copynce: loss weights.
        gamma, lam, scale, heads, targets: CopyNCE settings.
        copynce_over: "all" (the released reduction) averages CopyNCE over every pair of
            the batch, negatives (all-invalid overlaps) adding 0 but counting in the
            denominator, which dilutes the loss by the negative share; "positives" over
            the positive pairs whose ``copynce`` flag is set.
    """

    def __init__(self, model: nn.Module, *, w_bce=1.0, w_copynce=0.0, gamma=1.0, lam=0.5,
                 scale=16.0, heads=None, targets="pixtrace", copynce_over="all"):
        super().__init__()
        if copynce_over not in ("positives", "all"):
            raise ValueError(f"copynce_over must be 'positives' or 'all', got {copynce_over!r}")
        self.model = model
        self.w = {"bce": float(w_bce), "copynce": float(w_copynce)}
        self.copynce_args = dict(gamma=gamma, lam=lam, scale=scale, heads=heads, targets=targets)
        self.copynce_over = copynce_over

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        q, r = batch["query"], batch["reference"]
        labels = batch["label"]
        logits, q_tok, r_tok = self.model.forward_with_tokens(q, r)
        logits = logits.float()
        out: dict[str, torch.Tensor] = {}
        bce_mean = matcher_bce(logits, labels)
        n = torch.tensor(float(logits.shape[0]), device=logits.device)
        bce, out["bce"] = _global_mean(bce_mean * n, n)
        loss = self.w["bce"] * bce
        with torch.no_grad():
            y = labels.to(torch.bool)
            correct = ((logits > 0) == y).float().sum()
        out["accuracy"] = D.all_reduce_sum(correct) / D.all_reduce_sum(n)
        if self.w["copynce"]:
            if self.copynce_over == "positives":
                valid = batch["copynce"].to(torch.bool) & y
            else:  # the released reduction: every pair counts; untraceable ones add 0
                valid = torch.ones_like(y)
            s, count = _copynce_sum(q_tok, r_tok, batch, valid, **self.copynce_args)
            cn, out["copynce"] = _global_mean(s, count)
            loss = loss + self.w["copynce"] * cn
        out["loss"] = loss
        return out
