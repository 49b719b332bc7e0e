"""Bootstrap intervals of uAP differences (icdlib.eval.intervals)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from icdlib.eval.intervals import Interval, paired_interval, rank_predictions
from icdlib.eval.metrics import evaluate_arrays

QUERIES = ["q0", "q1", "q2", "q3"]
GT_Q = ["q0", "q1", "q2", "q3"]
GT_R = ["r0", "r1", "r2", None]  # q3 is a distractor


def preds(rows):
    return pd.DataFrame(rows, columns=["query_id", "reference_id", "score"])


def test_uap_as_is_matches_metrics_and_a_hand_count():
    p = preds([("q0", "r0", 0.9), ("q3", "r5", 0.8), ("q1", "r1", 0.7), ("q2", "r9", 0.7), ("q2", "r2", 0.1)])
    ranked = rank_predictions(p, GT_Q, GT_R, QUERIES)
    # ranks: r0 hit (1/1), r5 miss, then the 0.7 tie: miss first (pessimistic), then r1 hit (2/4); r2 hit (3/5)
    assert ranked.uap() == pytest.approx((1 / 1 + 2 / 4 + 3 / 5) / 3)
    m, _ = evaluate_arrays(p.query_id, p.reference_id, p.score, GT_Q, GT_R)
    assert ranked.uap() == pytest.approx(m.uAP)


@pytest.mark.parametrize("trial", range(20))
def test_weighted_uap_equals_uap_of_the_resampled_benchmark_built_by_hand(trial):
    """Drawing query q w times is the benchmark with w renamed copies of q (and its
    ground truth); evaluate_arrays on that copy is the independent construction."""
    rng = np.random.default_rng(trial)
    n_q = 12
    queries = [f"q{i}" for i in range(n_q)]
    gt_r = [f"r{i}" if rng.random() < 0.6 else None for i in range(n_q)]
    rows = []
    for i, q in enumerate(queries):
        refs = rng.choice([r for r in range(20) if r != i], size=3, replace=False)
        if gt_r[i] is not None and rng.random() < 0.7:
            refs[0] = i
        for r in refs:
            rows.append((q, f"r{r}", float(np.round(rng.random(), 1))))  # coarse scores: many ties
    p = preds(rows)
    weights = rng.multinomial(n_q, np.full(n_q, 1 / n_q))
    if weights @ np.array([r is not None for r in gt_r]) == 0:
        pytest.skip("resample without a copy query")
    ranked = rank_predictions(p, queries, gt_r, queries)
    copies = pd.concat([p[p.query_id == q].assign(query_id=f"{q}#{k}") for i, q in enumerate(queries)
                        for k in range(weights[i])], ignore_index=True)
    gq = [f"{q}#{k}" for i, q in enumerate(queries) for k in range(weights[i])]
    gr = [gt_r[i] for i, q in enumerate(queries) for k in range(weights[i])]
    m, _ = evaluate_arrays(copies.query_id, copies.reference_id, copies.score, gq, gr)
    assert ranked.uap(weights) == pytest.approx(m.uAP, abs=1e-12)


def _set(better: bool, seed: int):
    """Each copy query's true pair scored above (better) or among its wrong candidates."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, q in enumerate(QUERIES * 1):
        for j in range(4):
            rows.append((q, f"x{j}", float(rng.random() * 0.5)))
        if GT_R[i] is not None:
            rows.append((q, GT_R[i], 0.9 if better else float(rng.random() * 0.5)))
    return rank_predictions(preds(rows), GT_Q, GT_R, QUERIES)


def test_verdicts_follow_the_interval():
    assert Interval(0.1, 0.02, 0.2, (0,)).verdict == "holds"
    assert Interval(-0.1, -0.2, -0.01, (0,)).verdict == "fails"
    assert Interval(0.01, -0.02, 0.05, (0,)).verdict == "inconclusive"


def test_a_clearly_better_set_holds_and_the_reverse_fails():
    good = {s: _set(True, s) for s in range(3)}
    bad = {s: _set(False, 10 + s) for s in range(3)}
    up = paired_interval(good, bad, n_boot=300)
    assert up.verdict == "holds" and up.gap > 0 and up.low <= up.gap <= up.high and up.seeds == (0, 1, 2)
    assert paired_interval(bad, good, n_boot=300).verdict == "fails"


def test_identical_sets_give_zero_gap_and_an_interval_around_it():
    same = {0: _set(False, 1)}
    iv = paired_interval(same, same, n_boot=200)
    assert iv.gap == 0 and iv.low == 0 and iv.high == 0 and iv.verdict == "inconclusive"


def test_a_seedless_baseline_is_compared_with_every_seed_and_unshared_seeds_are_dropped():
    model = {s: _set(True, s) for s in (0, 1, 2)}
    vs_hash = paired_interval(model, {None: _set(False, 5)}, n_boot=50)
    assert vs_hash.seeds == (0, 1, 2)
    assert vs_hash.seed_gaps == pytest.approx([model[s].uap() - _set(False, 5).uap() for s in (0, 1, 2)], abs=1e-15)
    assert paired_interval(model, {1: _set(False, 5), 7: _set(False, 6)}, n_boot=50).seeds == (1,)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_interval(model, {9: _set(False, 5)})


def test_resampling_only_seeds_or_only_queries_splits_the_noise():
    """One seed: resampling seeds alone cannot move the gap. The same set on every seed: the
    per-seed gaps are equal, so seeds alone give a point; queries alone still spread it."""
    good, bad = {0: _set(True, 0)}, {0: _set(False, 10)}
    one = paired_interval(good, bad, n_boot=200, resample="seeds")
    assert one.low == one.high == pytest.approx(one.gap)
    queries = paired_interval(good, bad, n_boot=200, resample="queries")
    assert queries.low < queries.high
    assert queries.gap == one.gap == paired_interval(good, bad, n_boot=20).gap
    spread = {s: _set(s % 2 == 0, s) for s in range(4)}
    seeds = paired_interval(spread, {s: bad[0] for s in range(4)}, n_boot=300, resample="seeds")
    gaps = [spread[s].uap() - bad[0].uap() for s in range(4)]
    assert min(gaps) - 1e-12 <= seeds.low <= seeds.high <= max(gaps) + 1e-12
    assert seeds.seeds == (0, 1, 2, 3) and seeds.seed_gaps == pytest.approx(gaps, abs=1e-15)
    assert seeds.gap == pytest.approx(sum(gaps) / 4, abs=1e-15)
    with pytest.raises(ValueError, match="resample='query'"):
        paired_interval(good, bad, resample="query")


def test_bad_prediction_sets_are_refused_with_the_offending_value():
    with pytest.raises(ValueError, match="'qX'"):
        rank_predictions(preds([("qX", "r0", 1.0)]), GT_Q, GT_R, QUERIES)
    with pytest.raises(ValueError, match="duplicate prediction pair"):
        rank_predictions(preds([("q0", "r0", 1.0), ("q0", "r0", 0.5)]), GT_Q, GT_R, QUERIES)
