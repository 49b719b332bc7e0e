"""The training objectives' reductions (icdlib.train.objectives)."""

from __future__ import annotations

import pytest
import torch

from icdlib.losses import copynce
from icdlib.train.objectives import MatcherObjective


class FixedTokens(torch.nn.Module):
    """A stand-in matcher whose logits and fused tokens are fixed tensors."""

    def __init__(self, q_tok, r_tok):
        super().__init__()
        self.q_tok, self.r_tok = q_tok, r_tok

    def forward_with_tokens(self, q, r):
        return torch.zeros(q.shape[0]), self.q_tok, self.r_tok


def batch_with_two_negatives():
    gen = torch.Generator().manual_seed(0)
    b, n = 4, 4
    q_tok, r_tok = torch.randn(b, n, 8, generator=gen), torch.randn(b, n, 8, generator=gen)
    o = torch.rand(b, n, n + 1, generator=gen)
    o = o / o.sum(-1, keepdim=True)
    o[2:] = 0.0
    o[2:, :, -1] = 1.0  # the negatives: every query patch traces nowhere
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    batch = {"query": torch.zeros(b, 3, 8, 8), "reference": torch.zeros(b, 3, 8, 8), "label": labels,
             "overlap_qr": o, "overlap_rq": o.clone(), "copynce": torch.tensor([True, True, False, False])}
    return FixedTokens(q_tok, r_tok), batch


@pytest.mark.parametrize("over,denominator", [("positives", 2), ("all", 4)])
def test_matcher_copynce_reduction_counts_negatives_only_when_over_all(over, denominator):
    """Regression: "all" left the negatives out of the denominator; the released reduction
    averages over every pair, the negatives adding 0."""
    model, batch = batch_with_two_negatives()
    out = MatcherObjective(model, w_bce=0.0, w_copynce=1.0, copynce_over=over)(batch)
    per_pair = [copynce(model.q_tok[i:i + 1], model.r_tok[i:i + 1], batch["overlap_qr"][i:i + 1],
                        batch["overlap_rq"][i:i + 1], gamma=1.0) for i in range(2)]
    assert out["copynce"].item() == pytest.approx(sum(p.item() for p in per_pair) / denominator, rel=1e-5)
