"""Matcher sanity (what experiments/matcher_diagnosis.py diagnoses): it can fit fixed pairs, its logit comes
from the fusion class token and is symmetric, and evaluation feeds it the same tensors as
training does."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from icdlib.data import collate
from icdlib.data.pairs import resize_traced, to_tensor
from icdlib.eval.rescore import ImagePairs
from icdlib.models import build_matcher
from icdlib.pixtrace import Trace
from icdlib.train.objectives import MatcherObjective

TINY = {"img_size": 32, "patch_size": 16, "embed_dim": 48, "num_heads": 3, "encoder_depth": 1, "fusion_depth": 1}


def _fixed_pairs(n: int = 16, size: int = 32) -> dict:
    """Half copies (the reference plus a little noise), half pairs of unrelated images."""
    g = torch.Generator().manual_seed(0)
    refs = torch.randn(n, 3, size, size, generator=g)
    others = torch.randn(n, 3, size, size, generator=g)
    labels = (torch.arange(n) % 2 == 0).float()
    noise = 0.1 * torch.randn(n, 3, size, size, generator=g)
    query = torch.where(labels.view(-1, 1, 1, 1) > 0, refs + noise, others)
    return {"query": query, "reference": refs, "label": labels}


def test_matcher_overfits_fixed_pairs():
    torch.manual_seed(0)
    model = build_matcher("vit_tiny_cpu", seed=0, **TINY)
    obj = MatcherObjective(model)
    opt = torch.optim.AdamW(obj.parameters(), lr=1e-3, weight_decay=0.0)
    batch = _fixed_pairs()
    for _ in range(80):
        terms = obj(batch)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(batch["query"], batch["reference"])
    y = batch["label"]
    assert bool(((logits > 0).float() == y).all()), logits
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    assert float(bce) < 0.1


def test_logit_reads_fusion_token_and_is_symmetric():
    model = build_matcher("vit_tiny_cpu", seed=0, **TINY).eval()
    b = _fixed_pairs(4)
    with torch.no_grad():
        base = model(b["query"], b["reference"])
        swapped = model(b["reference"], b["query"])
        torch.testing.assert_close(base, swapped, rtol=1e-4, atol=1e-5)
        # a random shift (a LayerNorm hides a constant one)
        model.fusion_token.add_(torch.randn(model.fusion_token.shape, generator=torch.Generator().manual_seed(1)))
        assert not torch.allclose(model(b["query"], b["reference"]), base)


def test_eval_and_training_inputs_match(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, shape in enumerate([(50, 70, 3), (96, 64, 3)]):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(p)
        paths.append(p)
    q_eval, r_eval = ImagePairs([paths[0]], [paths[1]], 32)[0]
    items = []
    for q, r in [(paths[0], paths[1])]:
        qi, ri = Image.open(q).convert("RGB"), Image.open(r).convert("RGB")
        qi, _ = resize_traced(qi, Trace(qi.size), 32)
        ri, _ = resize_traced(ri, Trace(ri.size), 32)
        items.append({"query": to_tensor(qi), "reference": to_tensor(ri), "label": torch.tensor(1.0)})
    batch = collate(items)
    torch.testing.assert_close(q_eval, batch["query"], rtol=0, atol=1e-6)
    torch.testing.assert_close(r_eval, batch["reference"], rtol=0, atol=1e-6)


def test_bce_reaches_every_matcher_weight_but_the_token_norm():
    model = build_matcher("vit_tiny_cpu", seed=0, **TINY)
    MatcherObjective(model)(_fixed_pairs(4))["loss"].backward()
    for name, p in model.named_parameters():
        if name.startswith("token_norm."):  # feeds CopyNCE only
            assert p.grad is None
        else:
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
