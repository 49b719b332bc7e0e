"""Exact ROC AUC (icdlib.eval.metrics.exact_auc, candidate_auc): ties count one half, checked by
hand and against a brute-force count over every (positive, negative) pair."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from icdlib.eval.metrics import candidate_auc, exact_auc


def _pairwise(labels, scores) -> float:
    """Every (positive, negative) pair: 1 when the positive scores higher, 1/2 on a tie."""
    y, s = np.asarray(labels, bool), np.asarray(scores, float)
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in s[y] for b in s[~y])
    return wins / (y.sum() * (~y).sum())


def test_auc_of_a_small_case_with_ties_equals_the_hand_count():
    # positives score 3, 2, 2; negatives 2, 1. Pairs (pos, neg): (3,2) 1, (3,1) 1, (2,2) 1/2,
    # (2,1) 1, (2,2) 1/2, (2,1) 1 -> 5 of 6
    assert exact_auc([1, 1, 1, 0, 0], [3, 2, 2, 2, 1]) == pytest.approx(5 / 6, abs=1e-15)
    assert exact_auc([1, 0], [0.7, 0.7]) == 0.5  # one tie: half a win
    assert exact_auc([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]) == 1.0
    assert exact_auc([True, False], [0.1, 0.9]) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_the_brute_force_pairwise_count_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    y = rng.random(n) < 0.4
    y[:2] = [True, False]  # both classes
    scores = rng.integers(0, 6, n).astype(float)  # few distinct values: ties everywhere
    assert exact_auc(y, scores) == pytest.approx(_pairwise(y, scores), abs=1e-12)
    assert exact_auc(y, -scores) == pytest.approx(1 - _pairwise(y, scores), abs=1e-12)


def test_auc_refuses_one_class_unequal_lengths_and_non_finite_scores():
    with pytest.raises(ValueError, match="both classes, got 2 positives and 0 negatives"):
        exact_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        exact_auc([1, 0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="score at 1 is not finite"):
        exact_auc([1, 0], [0.1, float("nan")])


def test_candidate_auc_is_the_share_of_true_false_pairs_ranked_right():
    rng = np.random.default_rng(0)
    n = 60
    scored = pd.DataFrame({"query_id": [f"Q{i}" for i in range(n)], "reference_id": [f"R{i % 7}" for i in range(n)],
                           "score": rng.integers(0, 5, n).astype(float)})  # many ties
    truth = {(f"Q{i}", f"R{i % 7}") for i in range(0, n, 3)}
    y = [(q, r) in truth for q, r in zip(scored.query_id, scored.reference_id)]
    assert candidate_auc(scored, truth) == pytest.approx(_pairwise(y, scored.score), abs=1e-12)


def test_candidate_auc_is_nan_only_without_both_classes():
    scored = pd.DataFrame({"query_id": ["Q1", "Q1", "Q2"], "reference_id": ["R1", "R2", "R3"],
                           "score": [0.9, 0.2, 0.5]})
    assert candidate_auc(scored, {("Q1", "R1")}) == 1.0
    assert candidate_auc(scored, {("Q1", "R2")}) == 0.0
    assert candidate_auc(scored, {("Q1", "R2"), ("Q2", "R3")}) == 0.0
    for truth in (set(), {("Q3", "R1")}, {("Q1", "R1"), ("Q1", "R2"), ("Q2", "R3")}):  # one class only
        with pytest.warns(UserWarning, match="candidate_auc undefined"):
            assert np.isnan(candidate_auc(scored, truth))
