"""The released fine-tuning recipe (method.md s.5), each setting against an independent construction.

The lr rule against the release's own numbers; the learnable InfoNCE scale against a float64 loop;
per-side BatchNorm against hand-computed batch statistics; the weight-decay exemptions against what
AdamW's decoupled decay does to a parameter whose gradient is zero; the warm-up length, the matcher's
CopyNCE reduction, the matcher head's initialisation and the CopyNCE flag at ``min_traced = 0``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from icdlib.losses import copynce
from icdlib.models import build_descriptor, build_matcher
from icdlib.params import load_params
from icdlib.pipeline.profile import apply_profile
from icdlib.train import cli as train_cli
from icdlib.train.assembly import build_optimizer
from icdlib.train.objectives import DescriptorObjective, MatcherObjective
from icdlib.train.runs import TrainConfig, arm_names, recipe_lr, resolve_run
from icdlib.train.schedule import lr_schedule

ROOT = Path(__file__).resolve().parents[1]
TINY_DESC = dict(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, desc_dim=16)


# ------------------------------------------------------------------------------ the lr rule
@pytest.mark.parametrize("base, items, expected", [
    (6e-4, 768, 5.196152e-4),  # the released descriptor: 96 items x 8 GPUs
    (1e-3, 256, 5.0e-4),  # the released matcher: 32 pairs x 8 GPUs
    (6e-4, 32, 1.0606602e-4),  # our descriptor arms
    (1e-3, 32, 1.7677670e-4),  # our matcher arms
    (6e-4, 1024, 6e-4),
])
def test_released_rule_gives_the_release_s_peak_lrs(base, items, expected):
    assert recipe_lr(base, items) == pytest.approx(expected, rel=1e-6)


def test_peak_lr_follows_the_rule_per_kind_and_an_explicit_lr_wins():
    assert TrainConfig().peak_lr == pytest.approx(1.0606602e-4, rel=1e-6)
    assert TrainConfig(kind="matcher").peak_lr == pytest.approx(1.7677670e-4, rel=1e-6)
    assert TrainConfig(base_lr=1e-3, batch_size=256).peak_lr == pytest.approx(5e-4)
    explicit = TrainConfig(lr=5e-4)
    assert explicit.peak_lr == 5e-4 and "set explicitly" in explicit.lr_source()
    assert "released rule" in TrainConfig().lr_source()
    with pytest.raises(ValueError, match="train.base_lr"):
        TrainConfig(base_lr=0.0)


def test_train_cli_prints_which_lr_applied(tmp_path, capsys):
    params = load_params(ROOT / "params.yaml")
    (tmp_path / "params.yaml").write_text(__import__("yaml").safe_dump(params))
    rc = train_cli.main(["--params", str(tmp_path / "params.yaml"), "--arm", "copynce", "--out",
                         str(tmp_path / "run"), "--data", str(tmp_path / "missing"), "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 2 and "error:" in out.err
    assert "peak lr 0.000106: the released rule, base 0.0006" in out.out
    train_cli.main(["--params", str(tmp_path / "params.yaml"), "--arm", "trunk", "--out", str(tmp_path / "run"),
                    "--data", str(tmp_path / "missing"), "--device", "cpu"])
    assert "peak lr 0.0005: train.lr, set explicitly" in capsys.readouterr().out


@pytest.mark.parametrize("profile", [None, "quick", "tiny", "disc21", "gpu_smoke"])
def test_every_profile_fine_tunes_by_the_rule(tmp_path, profile):
    params = apply_profile(ROOT / "params.yaml", profile, [], profiles_dir=ROOT / "profiles",
                           out_path=tmp_path / "params.yaml")
    params = load_params(tmp_path / "params.yaml")
    for arm in arm_names(params):
        t = resolve_run(params, arm).train
        if arm == "trunk":  # trained from random init: keeps its measured lr
            assert t.lr == 5e-4
            continue
        assert t.lr is None, (profile, arm)
        assert t.peak_lr == pytest.approx(recipe_lr({"descriptor": 6e-4, "matcher": 1e-3}[t.kind], t.batch_size))
        assert t.weight_decay == 0.04 and t.wd_exempt_tokens and t.temperature is None and t.bn_per_side
        assert t.copynce_over == "all" and resolve_run(params, arm).pairs.min_traced == 0.0


# ------------------------------------------------------------------------------ warm-up
def test_warm_up_is_one_epoch_of_thirty():
    assert TrainConfig(steps=300).warmup == 10
    assert TrainConfig(steps=39000).warmup == 1300  # the release: one of 30 epochs of 1,300 steps
    assert TrainConfig(steps=300, warmup_steps=15).warmup == 15
    t = TrainConfig(steps=300)
    lrs = lr_schedule(t.steps, t.peak_lr, t.warmup, t.min_lr, t.warmup_start)
    assert lrs[0] == pytest.approx(0.01 * t.peak_lr) and lrs[10] == pytest.approx(t.peak_lr)
    assert lrs[9] < t.peak_lr and lrs[-1] == pytest.approx(2e-6)


# ------------------------------------------------------------------------------ InfoNCE scale
def _nt_xent_float64(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    """NT-Xent written as a plain loop over the 2B rows (every other embedding a negative)."""
    z = np.concatenate([a, b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        logits = [scale * float(z[i] @ z[j]) for j in range(2 * n) if j != i]
        others = [j for j in range(2 * n) if j != i]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(v - top) for v in logits))
        total += log_z - logits[others.index(pos)]
    return total / (2 * n)


def test_infonce_scale_is_learnable_from_exp_3_2_and_matches_a_float64_loop():
    torch.manual_seed(0)
    model = build_descriptor(dict(TINY_DESC), seed=0)
    obj = DescriptorObjective(model)  # defaults: the released learnable scale
    assert obj.infonce.learnable and obj.infonce.log_scale.item() == pytest.approx(3.2)
    a, b = torch.randn(6, 16), torch.randn(6, 16)
    got = obj.infonce(a, b)
    assert got.item() == pytest.approx(_nt_xent_float64(a.numpy(), b.numpy(), math.exp(3.2)), rel=1e-5)
    got.backward()
    assert obj.infonce.log_scale.grad is not None and obj.infonce.log_scale.grad.abs().item() > 0


# ------------------------------------------------------------------------------ BatchNorm per side
def test_head_batchnorm_normalises_queries_and_references_with_their_own_statistics():
    model = build_descriptor(dict(TINY_DESC), seed=1).train()
    captured = {}
    model.proj.register_forward_hook(lambda m, i, o: captured.__setitem__("z", o.detach().clone()))
    images = torch.randn(8, 3, 32, 32)
    desc, _ = model.forward_with_tokens(images, bn_groups=2)
    z = captured["z"].double()
    bn = model.bn
    expected = []
    for half in (z[:4], z[4:]):  # each side: its own batch mean and biased variance
        mean = half.mean(0)
        var = ((half - mean) ** 2).mean(0)
        y = (half - mean) / torch.sqrt(var + bn.eps) * bn.weight.double() + bn.bias.double()
        expected.append(y / y.norm(dim=1, keepdim=True))
    assert torch.allclose(desc.double(), torch.cat(expected), atol=1e-5)
    # the running statistics took two momentum updates, one per side (unbiased variance)
    m = bn.momentum
    run_mean = torch.zeros_like(z[0])
    for half in (z[:4], z[4:]):
        run_mean = (1 - m) * run_mean + m * half.mean(0)
    assert torch.allclose(bn.running_mean.double(), run_mean, atol=1e-6)
    joint, _ = build_descriptor(dict(TINY_DESC), seed=1).train().forward_with_tokens(images)
    assert not torch.allclose(joint, desc, atol=1e-4)  # one call over both sides differs
    with pytest.raises(ValueError, match="bn_groups=3"):
        model.forward_with_tokens(images, bn_groups=3)


def test_descriptor_objective_splits_the_head_batchnorm_by_side_unless_asked_not_to():
    calls = []
    model = build_descriptor(dict(TINY_DESC), seed=0)
    model.bn.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    batch = {"query": torch.randn(4, 3, 32, 32), "reference": torch.randn(4, 3, 32, 32)}
    DescriptorObjective(model)(batch)
    assert calls == [4, 4]
    calls.clear()
    DescriptorObjective(model, bn_per_side=False)(batch)
    assert calls == [8]


# ------------------------------------------------------------------------------ weight decay
def _decay_factors(objective, t: TrainConfig) -> dict[str, float]:
    """Each parameter's factor after one AdamW step on a zero gradient: AdamW's decoupled decay alone."""
    opt = build_optimizer(objective, t)
    before = {n: p.detach().clone() for n, p in objective.named_parameters() if p.requires_grad}
    for p in objective.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    for g in opt.param_groups:
        g["lr"] = 0.5
    opt.step()
    out = {}
    for n, p in objective.named_parameters():
        if n in before:
            nz = before[n] != 0
            out[n] = float((p.detach()[nz] / before[n][nz]).mean()) if nz.any() else 1.0
    return out


def test_weight_decay_spares_tokens_position_embeddings_biases_norms_and_the_scale():
    t = TrainConfig(weight_decay=0.04)
    obj = DescriptorObjective(build_descriptor(dict(TINY_DESC), seed=0))
    f = _decay_factors(obj, t)
    shrunk = 1 - 0.5 * 0.04
    for name in ("model.vit.pos_embed", "model.vit.cls_token", "infonce.log_scale", "model.vit.blocks.0.norm1.weight",
                 "model.vit.blocks.0.attn.qkv.bias", "model.bn.weight"):
        assert f[name] == pytest.approx(1.0), name
    for name in ("model.vit.blocks.0.attn.qkv.weight", "model.proj.weight"):
        assert f[name] == pytest.approx(shrunk), name
    assert "model.vit.patch_embed.proj.weight" not in f  # frozen, as released
    old = _decay_factors(DescriptorObjective(build_descriptor(dict(TINY_DESC), seed=0)),
                         TrainConfig(weight_decay=0.04, wd_exempt_tokens=False))
    assert old["model.vit.pos_embed"] == pytest.approx(shrunk) and old["model.vit.cls_token"] == pytest.approx(shrunk)
    matcher = MatcherObjective(build_matcher(dict(img_size=32, patch_size=16, embed_dim=32, num_heads=2,
                                                  encoder_depth=1, fusion_depth=1), seed=0))
    fm = _decay_factors(matcher, TrainConfig(kind="matcher"))
    assert fm["model.fusion_token"] == pytest.approx(1.0) and fm["model.head.1.weight"] == pytest.approx(shrunk)


# ------------------------------------------------------------------------------ matcher
def test_matcher_head_starts_from_a_truncated_normal_with_zero_bias():
    cfg = dict(img_size=32, patch_size=16, embed_dim=384, num_heads=6, encoder_depth=1, fusion_depth=1)
    w = build_matcher(cfg, seed=0).head[1]
    assert torch.count_nonzero(w.bias) == 0
    assert 0.017 < float(w.weight.detach().std()) < 0.023
    default = build_matcher({**cfg, "head_init": "default"}, seed=0).head[1]
    # PyTorch's default: uniform in +-1/sqrt(384), std 1/sqrt(3 * 384) = 0.0295
    assert 0.026 < float(default.weight.detach().std()) < 0.033 and torch.count_nonzero(default.bias) == 1
    with pytest.raises(ValueError, match="head_init"):
        build_matcher({**cfg, "head_init": "xavier"})


class _FixedMatcher(torch.nn.Module):
    """Returns fixed logits and tokens, so the objective's reduction is all that is tested."""

    def __init__(self, logits, q_tok, r_tok):
        super().__init__()
        self.out = (logits, q_tok, r_tok)

    def forward_with_tokens(self, q, r):
        return self.out


def test_matcher_copynce_averages_over_every_pair_by_default():
    torch.manual_seed(0)
    b, n, c = 4, 4, 8
    q_tok, r_tok = torch.randn(b, n, c), torch.randn(b, n, c)
    eye = torch.cat([torch.eye(n), torch.zeros(n, 1)], 1)
    invalid = torch.cat([torch.zeros(n, n), torch.ones(n, 1)], 1)
    ov = torch.stack([eye, eye, invalid, invalid])  # two positives, two negatives
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    batch = {"query": torch.zeros(b, 3, 2, 2), "reference": torch.zeros(b, 3, 2, 2), "label": labels,
             "overlap_qr": ov, "overlap_rq": ov, "copynce": torch.tensor([True, True, True, True])}
    model = _FixedMatcher(torch.zeros(b), q_tok, r_tok)
    per_pair = [copynce(q_tok[i:i + 1], r_tok[i:i + 1], ov[i:i + 1], ov[i:i + 1], gamma=1.0, lam=0.5).item()
                for i in range(2)]
    everyone = MatcherObjective(model, w_copynce=3.0)(batch)["copynce"].item()
    assert everyone == pytest.approx(sum(per_pair) / 4, rel=1e-5)  # negatives add 0 and count
    positives = MatcherObjective(model, w_copynce=3.0, copynce_over="positives")(batch)["copynce"].item()
    assert positives == pytest.approx(sum(per_pair) / 2, rel=1e-5)
