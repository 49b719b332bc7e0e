"""Tests of icdlib.losses against slow, obviously-correct loops and hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from icdlib.losses import (
    InfoNCE,
    SPREADS,
    copynce,
    copynce_targets,
    info_nce,
    kept_channels,
    koleo,
    matcher_bce,
)
from icdlib.pixtrace import Step, Trace, overlap

F64 = torch.float64


# ------------------------------------------------------------------ slow references
def copynce_loop(q, r, o_qr, o_rq, gamma, lam, scale, valid=None, keep=None):
    """CopyNCE written straight from the definition, one scalar at a time."""
    b_count, n, c = q.shape
    m = r.shape[1]
    keep = c if keep is None else keep

    def cos(u, v):
        return torch.dot(u, v) / (u.norm() * v.norm())

    def weight(row, j):
        den = sum(float(x) ** gamma for x in row)
        return float(row[j]) ** gamma / den if den > 0 else 0.0

    total, pairs = 0.0, 0
    for b in range(b_count):
        if valid is not None and not valid[b]:
            continue
        pairs += 1
        s = [[scale * cos(q[b, i, :keep], r[b, j, :keep]) for j in range(m)] for i in range(n)]
        l_qr = 0.0
        for i in range(n):
            lse = torch.logsumexp(torch.stack(s[i]), 0)
            for j in range(m):
                l_qr = l_qr + weight(o_qr[b, i], j) * (lse - s[i][j])
        l_rq = 0.0
        for j in range(m):
            lse = torch.logsumexp(torch.stack([s[i][j] for i in range(n)]), 0)
            for i in range(n):
                l_rq = l_rq + weight(o_rq[b, j], i) * (lse - s[i][j])
        total = total + lam * l_qr / n + (1 - lam) * l_rq / m
    return total / max(pairs, 1)


def info_nce_loop(a, b, scale):
    """NT-Xent from the definition: anchor k, positive its partner, all others negatives."""
    z = torch.cat([a, b])
    z = z / z.norm(dim=1, keepdim=True)
    n2 = len(z)
    total = 0.0
    for k in range(n2):
        partner = (k + n2 // 2) % n2
        logits = [scale * torch.dot(z[k], z[j]) for j in range(n2) if j != k]
        pos = scale * torch.dot(z[k], z[partner])
        total = total + torch.logsumexp(torch.stack(logits), 0) - pos
    return total / n2


def koleo_loop(x, groups, eps=1e-8):
    total = 0.0
    for i in range(len(x)):
        best = None
        for j in range(len(x)):
            if j == i or (groups is not None and groups[j] == groups[i]):
                continue
            d = (x[i] - x[j]).norm()
            if best is None or d.item() < best.item():
                best = d
        total = total - torch.log(best + eps)
    return total / len(x)


def random_overlaps(gen, b, n, m, invalid_rows=0):
    o = torch.rand(b, n, m + 1, generator=gen, dtype=F64)
    o[:, :, :m] *= (torch.rand(b, n, m, generator=gen, dtype=F64) > 0.5).to(F64)
    o[:, :invalid_rows, :m] = 0.0  # rows with only the invalid bucket
    return o / o.sum(-1, keepdim=True)


def hflip(size):
    w, h = size
    return Step(np.array([[-1.0, 0, w], [0, 1, 0], [0, 0, 1]]), size, size, name="hflip")


def shift_right(size, dx):
    return Step(np.array([[1.0, 0, dx], [0, 1, 0], [0, 0, 1]]), size, size, name="shift")


# ------------------------------------------------------------------------ CopyNCE
@pytest.mark.parametrize("gamma,lam,heads,keep", [(3.0, 0.5, None, 6), (1.0, 0.25, "1:2", 3),
                                                  (2.0, 1.0, 0.5, 3), (3.0, 0.0, "6:6", 6)])
def test_copynce_matches_loop_values_and_gradients(gamma, lam, heads, keep):
    gen = torch.Generator().manual_seed(0)
    b, n, m, c = 3, 4, 5, 6
    q = torch.randn(b, n, c, generator=gen, dtype=F64, requires_grad=True)
    r = torch.randn(b, m, c, generator=gen, dtype=F64, requires_grad=True)
    o_qr = random_overlaps(gen, b, n, m, invalid_rows=1)
    o_rq = random_overlaps(gen, b, m, n, invalid_rows=2)
    valid = torch.tensor([True, False, True])
    fast = copynce(q, r, o_qr, o_rq, gamma=gamma, lam=lam, scale=7.0, valid=valid, heads=heads)
    slow = copynce_loop(q, r, o_qr, o_rq, gamma, lam, 7.0, valid=valid, keep=keep)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-10)
    g_fast = torch.autograd.grad(fast, (q, r))
    g_slow = torch.autograd.grad(slow, (q, r))
    for gf, gs in zip(g_fast, g_slow):
        torch.testing.assert_close(gf, gs, rtol=1e-9, atol=1e-12)


def test_copynce_default_reduction_averages_all_pairs():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 3, 4, generator=gen, dtype=F64)
    r = torch.randn(2, 3, 4, generator=gen, dtype=F64)
    o = random_overlaps(gen, 2, 3, 3)
    both = copynce(q, r, o, o)
    singles = [copynce(q[i : i + 1], r[i : i + 1], o[i : i + 1], o[i : i + 1]) for i in range(2)]
    assert both.item() == pytest.approx(sum(s.item() for s in singles) / 2, rel=1e-12)


def test_copynce_passes_float64_gradcheck():
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(2, 3, 4, generator=gen, dtype=F64, requires_grad=True)
    r = torch.randn(2, 5, 4, generator=gen, dtype=F64, requires_grad=True)
    o_qr, o_rq = random_overlaps(gen, 2, 3, 5), random_overlaps(gen, 2, 5, 3)
    assert torch.autograd.gradcheck(lambda a, b: copynce(a, b, o_qr, o_rq, scale=3.0), (q, r))


def test_zero_token_gradient_matches_f_normalize_convention():
    gen = torch.Generator().manual_seed(10)
    q = torch.randn(1, 3, 4, generator=gen, dtype=F64)
    q[0, 1] = 0.0  # a zero token: F.normalize clamps its norm at 1e-12
    r = torch.randn(1, 3, 4, generator=gen, dtype=F64)
    o = random_overlaps(gen, 1, 3, 3)
    q1, q2 = q.clone().requires_grad_(True), q.clone().requires_grad_(True)
    copynce(q1, r, o, o, scale=4.0).backward()
    qn, rn = torch.nn.functional.normalize(q2, dim=-1), torch.nn.functional.normalize(r, dim=-1)
    s = 4.0 * qn @ rn.transpose(1, 2)
    w = copynce_targets(o, 3.0)
    ref = -(w * s.log_softmax(2)).sum() / 3 * 0.5 - (w * s.transpose(1, 2).log_softmax(2)).sum() / 6
    ref.backward()
    assert torch.isfinite(q1.grad).all()
    torch.testing.assert_close(q1.grad, q2.grad)


def test_copynce_large_scale_stays_finite_and_exact():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 3, 4, generator=gen, dtype=F64)
    r = torch.randn(1, 3, 4, generator=gen, dtype=F64)
    o = random_overlaps(gen, 1, 3, 3)
    fast = copynce(q.float(), r.float(), o.float(), o.float(), scale=100.0)
    slow = copynce_loop(q, r, o, o, 3.0, 0.5, 100.0)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5)


@pytest.mark.parametrize("scale", [41.0, 400.0, 1000.0, 5000.0])
def test_copynce_very_large_scale_shifts_each_row_and_column_by_its_own_max(scale):
    """Regression: a global shift underflowed rows whose best cosine is far below 1 (-inf)."""
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(2, 4, 6, generator=gen, dtype=F64)
    r = torch.randn(2, 5, 6, generator=gen, dtype=F64)
    o_qr, o_rq = random_overlaps(gen, 2, 4, 5), random_overlaps(gen, 2, 5, 4)
    qf, rf = q.float().requires_grad_(), r.float().requires_grad_()
    fast = copynce(qf, rf, o_qr.float(), o_rq.float(), scale=scale)
    fast.backward()
    qs, rs = q.clone().requires_grad_(), r.clone().requires_grad_()
    slow = copynce_loop(qs, rs, o_qr, o_rq, 3.0, 0.5, scale)
    slow.backward()
    assert torch.isfinite(fast) and fast.item() == pytest.approx(slow.item(), rel=1e-4)
    torch.testing.assert_close(qf.grad.double(), qs.grad, rtol=1e-3, atol=1e-3 * scale)
    torch.testing.assert_close(rf.grad.double(), rs.grad, rtol=1e-3, atol=1e-3 * scale)


def test_copynce_in_float32_at_the_method_settings_matches_the_float64_definition():
    """The float32 fast path (one exponential serving both softmaxes, hand-written backward,
    finiteness read off the norms) equals the plain float64 loop to float32 rounding."""
    gen = torch.Generator().manual_seed(5)
    b, n, m, c = 2, 9, 7, 24
    qf = torch.randn(b, n, c, generator=gen).requires_grad_()
    rf = torch.randn(b, m, c, generator=gen).requires_grad_()
    o_qr = random_overlaps(gen, b, n, m, invalid_rows=2)
    o_rq = random_overlaps(gen, b, m, n, invalid_rows=1)
    fast = copynce(qf, rf, o_qr.float(), o_rq.float(), gamma=3.0, lam=0.5, scale=16.0)
    fast.backward()
    qs, rs = qf.detach().double().requires_grad_(), rf.detach().double().requires_grad_()
    slow = copynce_loop(qs, rs, o_qr.float().double(), o_rq.float().double(), 3.0, 0.5, 16.0)
    slow.backward()
    assert fast.dtype == torch.float32
    assert fast.item() == pytest.approx(slow.item(), rel=2e-6)
    for got, want in ((qf.grad, qs.grad), (rf.grad, rs.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("channel", [1, 5])  # heads "1:2" keeps channels 0-2
def test_copynce_refuses_non_finite_tokens_in_kept_and_dropped_channels(bad, channel):
    gen = torch.Generator().manual_seed(6)
    q, r = torch.randn(2, 3, 6, generator=gen), torch.randn(2, 4, 6, generator=gen)
    o_qr, o_rq = random_overlaps(gen, 2, 3, 4).float(), random_overlaps(gen, 2, 4, 3).float()
    r[1, 2, channel] = bad
    with pytest.raises(ValueError, match="tokens hold NaN or infinite"):
        copynce(q, r, o_qr, o_rq, heads="1:2")
    with pytest.raises(ValueError, match="tokens hold NaN or infinite"):
        copynce(r, q, o_rq, o_qr)


def test_copynce_takes_huge_finite_tokens_whose_norm_overflows():
    """Finite tokens are never refused, even where their float32 norm overflows to inf."""
    gen = torch.Generator().manual_seed(7)
    q, r = torch.randn(1, 3, 4, generator=gen), torch.randn(1, 3, 4, generator=gen)
    q[0, 0] = 3e38
    o = random_overlaps(gen, 1, 3, 3).float()
    assert torch.isinf(torch.linalg.vector_norm(q[0, 0]))
    copynce(q, r, o, o)  # no ValueError


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_targets_refuse_non_finite_overlaps(bad):
    o = torch.full((1, 2, 3), 1 / 3)
    o[0, 1, 2] = bad
    with pytest.raises(ValueError, match="overlap has NaN or infinite"):
        copynce_targets(o, 3.0)

def test_uniform_and_same_position_controls_keep_each_rows_pixtrace_weight():
    """Regression: uniform overlaps at gamma 3 left a partly traceable row almost no weight
    (1/3 traced over 3 patches: 3 (1/9)^3 / (3 (1/9)^3 + (2/3)^3) = 0.014 instead of 0.111).
    The controls keep the PixTrace row weight and change only its spread."""
    o = torch.tensor([[[1 / 3, 0.0, 0.0, 2 / 3], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]], dtype=F64)
    traced = copynce_targets(o, 3.0)
    rows = traced.sum(-1)
    assert rows[0, 0].item() == pytest.approx((1 / 27) / (1 / 27 + 8 / 27))
    uniform = copynce_targets(o, 3.0, spread="uniform")
    torch.testing.assert_close(uniform.sum(-1), rows)
    torch.testing.assert_close(uniform, rows[..., None].expand(-1, -1, 3) / 3)
    same = copynce_targets(o, 3.0, spread="same_position")
    torch.testing.assert_close(same, torch.diag_embed(rows))
    with pytest.raises(ValueError, match="spread"):
        copynce_targets(o, 3.0, spread="nope")
    with pytest.raises(ValueError, match="same_position"):
        copynce_targets(o[:, :2], 3.0, spread="same_position")


def test_target_controls_are_the_pairs_config_choices():
    from icdlib.data.pairs import TARGETS

    assert tuple(TARGETS) == SPREADS


def test_targets_keep_invalid_bucket_in_normaliser():
    o = torch.tensor([[[0.5, 0.0, 0.5], [0.5, 0.25, 0.25], [0.0, 0.0, 1.0]]])
    w3 = copynce_targets(o, gamma=3.0)
    # row 0: 0.125 / (0.125 + 0.125); row 1: (0.125, 0.015625) / 0.15625; row 2: nothing valid
    torch.testing.assert_close(w3, torch.tensor([[[0.5, 0.0], [0.8, 0.1], [0.0, 0.0]]]))
    w1 = copynce_targets(o, gamma=1.0)
    torch.testing.assert_close(w1, o[..., :2])


def test_targets_reject_negative_overlap_and_bad_gamma():
    with pytest.raises(ValueError, match="negative"):
        copynce_targets(torch.tensor([[[0.5, -0.1, 0.6]]]), 3.0)
    with pytest.raises(ValueError, match="gamma"):
        copynce_targets(torch.ones(1, 1, 2), 0.0)


def test_identity_overlap_gives_diagonal_target_and_loss_falls_when_aligned():
    src = (32, 32)
    o = overlap(Trace(src), Trace(src), patch=8)[None]  # (1, 16, 17)
    torch.testing.assert_close(copynce_targets(o, 3.0)[0], torch.eye(16))
    gen = torch.Generator().manual_seed(4)
    aligned = torch.eye(16)[None]
    shuffled = aligned[:, torch.randperm(16, generator=gen)]
    loss_aligned = copynce(aligned, aligned, o, o)
    assert loss_aligned < copynce(shuffled, aligned, o, o)
    q = torch.randn(1, 16, 16, generator=gen, requires_grad=True)
    r = torch.randn(1, 16, 16, generator=gen)
    opt = torch.optim.SGD([q], lr=2.0)
    losses = []
    for _ in range(20):
        loss = copynce(q, r, o, o)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    cos = torch.nn.functional.normalize(q[0], dim=1) @ torch.nn.functional.normalize(r[0], dim=1).T
    assert bool((cos.argmax(1) == torch.arange(16)).all())  # each query patch found its own


def test_hflip_overlap_gives_mirrored_target():
    src = (32, 32)
    query, reference = Trace(src, [hflip(src)]), Trace(src)
    w_qr = copynce_targets(overlap(query, reference, patch=8)[None], 3.0)[0]
    w_rq = copynce_targets(overlap(reference, query, patch=8)[None], 3.0)[0]
    mirror = torch.zeros(16, 16)
    for row in range(4):
        for col in range(4):
            mirror[row * 4 + col, row * 4 + (3 - col)] = 1.0
    torch.testing.assert_close(w_qr, mirror)
    torch.testing.assert_close(w_rq, mirror)  # the mirror is its own inverse


def test_fully_invalid_query_rows_get_zero_weight_and_no_gradient():
    src = (32, 32)
    query = Trace(src, [shift_right(src, 16)])  # query columns x < 16 have no source
    o_qr = overlap(query, Trace(src), patch=8)[None]
    w = copynce_targets(o_qr, 3.0)[0].reshape(4, 4, 16)  # (row, col, reference patch)
    assert torch.all(w[:, :2] == 0)
    assert torch.allclose(w[:, 2:].sum(-1), torch.ones(4, 2))
    o_rq = overlap(Trace(src), query, patch=8)[None]
    q = torch.randn(1, 16, 8, requires_grad=True)
    r = torch.randn(1, 16, 8)
    copynce(q, r, o_qr, o_rq, lam=1.0).backward()
    grad = q.grad[0].reshape(4, 4, 8)
    assert torch.all(grad[:, :2] == 0) and torch.all(grad[:, 2:].abs().sum(-1) > 0)


def test_half_invalid_patch_gets_half_weight_at_gamma_three():
    src = (32, 32)
    query = Trace(src, [shift_right(src, 4)])  # column-0 patches: half untraceable
    w = copynce_targets(overlap(query, Trace(src), patch=8)[None], 3.0)[0]
    assert w[0, 0].item() == pytest.approx(0.5)  # 0.5^3 / (0.5^3 + 0.5^3)
    assert w[0].sum().item() == pytest.approx(0.5)
    assert w[1, :2].tolist() == pytest.approx([0.5, 0.5])  # split over two patches, fully valid


def test_no_valid_pair_gives_zero_loss_with_finite_zero_gradient():
    q = torch.randn(2, 4, 3, requires_grad=True)
    r = torch.randn(2, 4, 3, requires_grad=True)
    o = torch.zeros(2, 4, 5)
    o[..., -1] = 1.0  # everything invalid, like a negative pair
    loss = copynce(q, r, o, o, valid=torch.tensor([False, False]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(q.grad == 0) and torch.all(r.grad == 0)


def test_heads_keep_first_channels_only():
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 3, 8, generator=gen, requires_grad=True)
    r = torch.randn(2, 3, 8, generator=gen)
    o = random_overlaps(gen, 2, 3, 3).float()
    half = copynce(q, r, o, o, heads="2:4")
    direct = copynce(q[..., :4], r[..., :4], o, o)
    assert half.item() == pytest.approx(direct.item(), rel=1e-6)
    half.backward()
    assert torch.all(q.grad[..., 4:] == 0) and torch.any(q.grad[..., :4] != 0)


def test_kept_channels_forms_and_errors():
    assert kept_channels(384, None) == 384
    assert kept_channels(384, "6:6") == 384
    assert kept_channels(384, "2:6") == 128
    assert kept_channels(384, 0.25) == 96
    for bad in ("7:6", "x:6", "1:5", "1:2:3", 0.0, 1.5):
        with pytest.raises(ValueError, match="heads"):
            kept_channels(384, bad)


def test_copynce_shape_errors_name_the_argument():
    q, r = torch.randn(2, 4, 3), torch.randn(2, 5, 3)
    good_qr, good_rq = torch.rand(2, 4, 6), torch.rand(2, 5, 5)
    with pytest.raises(ValueError, match="overlap_qr"):
        copynce(q, r, torch.rand(2, 4, 5), good_rq)
    with pytest.raises(ValueError, match="overlap_rq"):
        copynce(q, r, good_qr, torch.rand(2, 4, 5))
    with pytest.raises(ValueError, match="valid"):
        copynce(q, r, good_qr, good_rq, valid=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="lam"):
        copynce(q, r, good_qr, good_rq, lam=1.5)


# ------------------------------------------------------------------------ InfoNCE
def test_info_nce_matches_loop_values_and_gradients():
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(4, 5, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(4, 5, generator=gen, dtype=F64, requires_grad=True)
    fast = info_nce(a, b, temperature=0.1)
    slow = info_nce_loop(a, b, 10.0)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-12)
    for gf, gs in zip(torch.autograd.grad(fast, (a, b)), torch.autograd.grad(slow, (a, b))):
        torch.testing.assert_close(gf, gs)


def test_info_nce_is_near_zero_for_separated_views():
    a = torch.eye(4)
    assert info_nce(a, a.clone(), temperature=0.01).item() < 1e-6


def test_learnable_scale_starts_at_exp_3_2_and_gets_gradient():
    gen = torch.Generator().manual_seed(7)
    a, b = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    module = InfoNCE()
    assert module.log_scale.exp().item() == pytest.approx(math.exp(3.2))
    loss = module(a, b)
    assert loss.item() == pytest.approx(info_nce(a, b, scale=math.exp(3.2)).item(), rel=1e-6)
    loss.backward()
    assert module.log_scale.grad is not None and module.log_scale.grad.item() != 0
    fixed = InfoNCE(learnable=False, temperature=0.05)
    assert list(fixed.parameters()) == []
    assert fixed(a, b).item() == pytest.approx(info_nce(a, b, temperature=0.05).item())


def _gather_worker(rank, world, init_file, a, b, out):
    import os

    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # both processes are on this machine
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    n = a.shape[0] // world
    la = a[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    lb = b[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    loss = info_nce(la, lb, temperature=0.2)
    loss.backward()
    torch.save({"loss": loss.detach(), "ga": la.grad}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_info_nce_gathers_negatives_across_two_processes(tmp_path):
    gen = torch.Generator().manual_seed(8)
    a, b = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    out = tmp_path / "res"
    # spawn, not fork: a forked child can deadlock on the parent's OpenMP thread pool
    mp.spawn(_gather_worker, args=(2, str(tmp_path / "init"), a, b, str(out)), nprocs=2)
    results = [torch.load(f"{out}.{k}") for k in range(2)]
    # the mean of the rank losses is the single-process loss of the global batch
    global_loss = info_nce(a, b, temperature=0.2)
    mean_loss = sum(res["loss"] for res in results) / 2
    assert mean_loss.item() == pytest.approx(global_loss.item(), rel=1e-5)
    # rank 1's gradient: its own rows as anchors, the other rank's embeddings constant
    la = a[2:].clone().requires_grad_(True)
    z = torch.nn.functional.normalize(torch.cat([a[:2], b[:2], la, b[2:]]), dim=1)
    z = torch.cat([z[:4].detach(), z[4:]])
    rows = z[4:] @ z.T / 0.2
    rows[torch.arange(4), torch.arange(4) + 4] = float("-inf")
    local = torch.nn.functional.cross_entropy(rows, torch.tensor([6, 7, 4, 5]))
    local.backward()
    torch.testing.assert_close(results[1]["ga"], la.grad)


# -------------------------------------------------------------------- KoLeo, BCE
def test_koleo_hand_computed_on_a_line():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert koleo(x, eps=0.0).item() == pytest.approx(-math.log(2.0) / 3)


def test_koleo_skips_matching_embeddings():
    x = torch.tensor([[0.0], [0.1], [3.0], [3.2]])
    groups = torch.tensor([0, 0, 1, 1])
    expected = -(2 * math.log(2.9) + math.log(3.0) + math.log(3.1)) / 4
    assert koleo(x, groups, eps=0.0).item() == pytest.approx(expected, rel=1e-6)


def test_koleo_matches_loop_values_and_gradients():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(7, 4, generator=gen, dtype=F64, requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1, 2, 3, 3])
    fast, slow = koleo(x, groups), koleo_loop(x, groups)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-12)
    torch.testing.assert_close(torch.autograd.grad(fast, x)[0], torch.autograd.grad(slow, x)[0])


def test_koleo_rejects_batch_without_non_matching_neighbour():
    with pytest.raises(ValueError, match="koleo"):
        koleo(torch.randn(3, 2), torch.tensor([1, 1, 1]))


def test_matcher_bce_hand_computed_and_rejects_bad_labels():
    logits = torch.tensor([0.0, 2.0])
    loss = matcher_bce(logits, torch.tensor([True, False]))
    assert loss.item() == pytest.approx((math.log(2.0) + math.log(1 + math.exp(2.0))) / 2)
    weighted = matcher_bce(logits, torch.tensor([1, 0]), pos_weight=3.0)
    assert weighted.item() == pytest.approx((3 * math.log(2.0) + math.log(1 + math.exp(2.0))) / 2)
    with pytest.raises(ValueError, match="0/1"):
        matcher_bce(logits, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="matcher_bce"):
        matcher_bce(logits, torch.tensor([1.0]))


def test_copynce_under_cpu_bf16_autocast_is_computed_in_float32():
    """Autocast must not run the loss's matrix products in bf16 (the training loop's
    ``train.amp_cpu``): the value and gradients equal the float32 ones."""
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 4, 16, generator=gen, requires_grad=True)
    r = torch.randn(2, 4, 16, generator=gen, requires_grad=True)
    o = random_overlaps(gen, 2, 4, 4).float()
    plain = copynce(q, r, o, o)
    gq, gr = torch.autograd.grad(plain, (q, r))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = copynce(q, r, o, o)
    aq, ar = torch.autograd.grad(auto, (q, r))
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain)
    torch.testing.assert_close(aq, gq)
    torch.testing.assert_close(ar, gr)
