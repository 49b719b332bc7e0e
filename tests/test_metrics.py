import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from icdlib.eval.metrics import (
    GroundTruthMatch as G,
    PredictedMatch as P,
    evaluate,
    evaluate_arrays,
    main,
    pr_curve,
)

ROOT = Path(__file__).resolve().parents[1]


def _gt():
    # three copy pairs and one distractor query: N_gt = 3
    return [G("q1", "r1"), G("q2", "r2"), G("q3", "r3"), G("q4", None)]


def test_hand_computed_uap_rp90_map():
    preds = [P("q1", "r1", 0.9), P("q4", "r9", 0.8), P("q2", "r2", 0.7), P("q2", "r5", 0.6)]
    m = evaluate(preds, _gt())
    # sorted: T F T F -> P_k = 1, 1/2, 2/3, 2/4; recall steps of 1/3 at ranks 1 and 3
    # uAP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    assert m.uAP == pytest.approx(5 / 9)
    # precision >= 0.9 only at rank 1 (recall 1/3)
    assert m.RP90 == pytest.approx(1 / 3)
    assert m.threshold_at_rp90 == pytest.approx(0.9)
    # per-query AP: q1 = 1, q2 = 1 (its hit is its rank 1), q3 = 0 (never predicted)
    assert m.mAP == pytest.approx(2 / 3)
    assert (m.n_predictions, m.n_positives, m.n_true_predictions, m.n_queries) == (4, 3, 2, 4)


def test_tied_scores_rank_false_predictions_first():
    gt = [G("q1", "r1")]
    preds = [P("q1", "r1", 0.5), P("q1", "r2", 0.5)]
    m = evaluate(preds, gt)
    # pessimistic order F, T: the only hit is at rank 2 -> uAP = 1 * 1/2
    assert m.uAP == pytest.approx(0.5)
    assert m.mAP == pytest.approx(0.5)
    # precision is 0 then 1/2: never >= 0.9
    assert m.RP90 == 0.0
    assert m.threshold_at_rp90 is None
    # listing order must not matter
    assert evaluate(preds[::-1], gt) == m


def test_ties_across_queries_are_pessimistic_too():
    gt = [G("a", "x"), G("b", "y")]
    preds = [P("a", "x", 1.0), P("b", "y", 1.0), P("c", "z", 1.0)]
    m = evaluate(preds, gt)
    # order F T T: P = 0, 1/2, 2/3 -> uAP = 1/2 * (1/2 + 2/3) = 7/12
    assert m.uAP == pytest.approx(7 / 12)


def test_duplicate_prediction_pair_is_rejected_naming_it():
    with pytest.raises(ValueError, match=r"duplicate prediction pair.*'q1'.*'r1'"):
        evaluate([P("q1", "r1", 0.3), P("q1", "r1", 0.2)], _gt())


def test_duplicate_ground_truth_pair_is_rejected():
    with pytest.raises(ValueError, match="duplicate ground-truth pair"):
        evaluate([P("q1", "r1", 0.3)], [G("q1", "r1"), G("q1", "r1")])


def test_all_distractor_ground_truth_is_rejected():
    with pytest.raises(ValueError, match="no \\(query, reference\\) copy pair"):
        evaluate([P("q1", "r1", 0.3)], [G("q1", None)])


def test_non_finite_score_is_rejected():
    with pytest.raises(ValueError, match="not finite"):
        evaluate([P("q1", "r1", float("nan"))], _gt())


def test_distractor_predictions_are_false_positives():
    clean = evaluate([P("q1", "r1", 0.9)], _gt())
    noisy = evaluate([P("q4", "r1", 0.95), P("q1", "r1", 0.9)], _gt())
    # clean: uAP = 1/3 * 1; noisy: the hit sits at rank 2 -> 1/3 * 1/2
    assert clean.uAP == pytest.approx(1 / 3)
    assert noisy.uAP == pytest.approx(1 / 6)
    # a distractor query is not a ground-truth query: mAP unchanged (1/3 from q1 alone)
    assert noisy.mAP == pytest.approx(clean.mAP) == pytest.approx(1 / 3)


def test_unpredicted_queries_cap_recall():
    m = evaluate([P("q1", "r1", 0.9), P("q2", "r2", 0.8), P("q3", "r3", 0.7)], _gt())
    assert m.uAP == pytest.approx(1.0) and m.RP90 == pytest.approx(1.0)
    m2 = evaluate([P("q1", "r1", 0.9)], _gt())
    assert m2.uAP == pytest.approx(1 / 3) and m2.RP90 == pytest.approx(1 / 3)


def test_rp90_is_zero_when_precision_never_reaches_point_nine():
    # F T F T: precision 0, 1/2, 1/3, 1/2
    preds = [P("x", "r1", 0.9), P("q1", "r1", 0.8), P("y", "r1", 0.7), P("q2", "r2", 0.6)]
    m = evaluate(preds, _gt())
    assert m.RP90 == 0.0
    assert m.uAP == pytest.approx((1 / 2 + 1 / 2) / 3)


def test_rp90_takes_the_largest_recall_at_precision_point_nine():
    # 9 hits then 1 miss then 1 hit: precision 1 for k <= 9, 9/10, 10/11
    gt = [G(f"q{i}", f"r{i}") for i in range(12)]
    preds = [P(f"q{i}", f"r{i}", 1.0 - i / 100) for i in range(9)]
    preds += [P("q9", "wrong", 0.5), P("q10", "r10", 0.4)]
    m = evaluate(preds, gt)
    # rank 11: precision 10/11 >= 0.9, recall 10/12
    assert m.RP90 == pytest.approx(10 / 12)
    assert m.threshold_at_rp90 == pytest.approx(0.4)


def test_empty_predictions_score_zero():
    m = evaluate([], _gt())
    assert (m.uAP, m.RP90, m.mAP, m.n_predictions) == (0.0, 0.0, 0.0, 0)


def test_pr_curve_matches_hand_values():
    preds = [P("q1", "r1", 0.9), P("q4", "r9", 0.8), P("q2", "r2", 0.7)]
    c = pr_curve(preds, _gt())
    np.testing.assert_allclose(c.precision, [1, 1 / 2, 2 / 3])
    np.testing.assert_allclose(c.recall, [1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(c.thresholds, [0.9, 0.8, 0.7])
    sub = c.subsample(2)
    np.testing.assert_allclose(sub.recall, [1 / 3, 2 / 3])


def _slow_metrics(preds, gts):
    """Obvious loop implementation: per-rank precision/recall, per-query AP."""
    pairs = {(g.query, g.reference) for g in gts if g.reference is not None}
    n_gt = len(pairs)
    ranked = sorted(preds, key=lambda p: (-p.score, (p.query, p.reference) in pairs))
    tp, uap, rp90 = 0, 0.0, 0.0
    for k, p in enumerate(ranked, start=1):
        if (p.query, p.reference) in pairs:
            tp += 1
            uap += (tp / k) / n_gt
        if tp / k >= 0.9:
            rp90 = max(rp90, tp / n_gt)
    aps = []
    for q in sorted({g.query for g in gts if g.reference is not None}):
        nq = sum(1 for (a, _) in pairs if a == q)
        mine = sorted([p for p in preds if p.query == q],
                      key=lambda p: (-p.score, (p.query, p.reference) in pairs))
        hits, ap = 0, 0.0
        for k, p in enumerate(mine, start=1):
            if (p.query, p.reference) in pairs:
                hits += 1
                ap += hits / k
        aps.append(ap / nq)
    return uap, rp90, sum(aps) / len(aps)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_vectorised_metrics_agree_with_slow_loop(seed):
    rng = np.random.default_rng(seed)
    n_q, n_r = 30, 15
    gts = []
    for q in range(n_q):
        if rng.random() < 0.4:
            for r in rng.choice(n_r, size=rng.integers(1, 3), replace=False):
                gts.append(G(f"q{q}", f"r{r}"))
        else:
            gts.append(G(f"q{q}", None))
    preds = []
    for q in range(n_q + 5):  # 5 queries unknown to the ground truth
        for r in rng.choice(n_r, size=rng.integers(0, 5), replace=False):
            # coarse scores so that ties happen
            preds.append(P(f"q{q}", f"r{r}", float(rng.integers(0, 6)) / 5))
    m = evaluate(preds, gts)
    uap, rp90, map_ = _slow_metrics(preds, gts)
    assert m.uAP == pytest.approx(uap)
    assert m.RP90 == pytest.approx(rp90)
    assert m.mAP == pytest.approx(map_)


def test_integer_ids_work_like_strings():
    m, _ = evaluate_arrays([1, 2], [10, 30], [0.9, 0.8], [1, 2], [10, 20])
    assert m.uAP == pytest.approx(0.5)


def _write(path, text):
    path.write_text(text)
    return path


def test_cli_prints_metrics_json(tmp_path, capsys):
    p = _write(tmp_path / "p.csv", "query_id,reference_id,score\nq1,r1,0.9\nq4,r9,0.8\nq2,r2,0.7\nq2,r5,0.6\n")
    g = _write(tmp_path / "g.csv", "query_id,reference_id\nq1,r1\nq2,r2\nq3,r3\nq4,\n")
    assert main(["--predictions", str(p), "--ground-truth", str(g)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["uAP"] == pytest.approx(5 / 9)
    assert out["RP90"] == pytest.approx(1 / 3)
    assert out["mAP"] == pytest.approx(2 / 3)
    assert out["n_predictions"] == 4 and out["n_positives"] == 3


@pytest.mark.parametrize(
    "pred_text, message",
    [
        ("query_id,score\nq1,0.9\n", "lacks column.*reference_id"),
        ("query_id,reference_id,score\nq1,r1,high\n", "'high'.*not a finite number"),
        ("query_id,reference_id,score\nq1,r1,0.9\nq1,r1,0.5\n", "duplicate prediction pair"),
    ],
)
def test_cli_rejects_malformed_predictions(tmp_path, capsys, pred_text, message):
    p = _write(tmp_path / "p.csv", pred_text)
    g = _write(tmp_path / "g.csv", "query_id,reference_id\nq1,r1\n")
    assert main(["--predictions", str(p), "--ground-truth", str(g)]) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err


def test_cli_missing_file_exits_nonzero_in_a_subprocess(tmp_path):
    g = _write(tmp_path / "g.csv", "query_id,reference_id\nq1,r1\n")
    res = subprocess.run(
        [sys.executable, "-m", "icdlib.metrics", "--predictions", str(tmp_path / "nope.csv"),
         "--ground-truth", str(g)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert res.returncode == 2
    assert "predictions file not found" in res.stderr and "nope.csv" in res.stderr


def test_a_query_with_two_references_counts_both_pairs(tmp_path, capsys):
    """ISC21 counts every (query, reference) ground-truth pair: a collage query q1 copies
    r1 and r2 (two rows), q2 copies r3, q3 is a distractor, so N_gt = 3."""
    g = _write(tmp_path / "g.csv", "query_id,reference_id\nq1,r1\nq1,r2\nq2,r3\nq3,\n")
    p = _write(tmp_path / "p.csv", "query_id,reference_id,score\n"
               "q1,r1,0.9\nq3,r5,0.8\nq1,r2,0.7\nq2,r4,0.6\nq2,r3,0.5\n")
    # sorted by score: T F T F T; P_k at the hits: 1/1, 2/3, 3/5; recall steps of 1/3 each
    # uAP = 1/3 * (1 + 2/3 + 3/5) = 1/3 * 34/15 = 34/45 = 0.7556
    # (had q1 kept one reference, (q1, r2) would be false and N_gt 2: 1/2 * (1 + 2/5) = 0.7)
    # RP90: precision >= 0.9 only at rank 1, recall 1/3
    # mAP over q1, q2: q1 ranks r1 T, r2 T: (1/1 + 2/2) / 2 = 1; q2 ranks r4 F, r3 T: (1/2) / 1; mean 3/4
    assert main(["--predictions", str(p), "--ground-truth", str(g)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["uAP"] == pytest.approx(34 / 45)
    assert out["RP90"] == pytest.approx(1 / 3) and out["threshold_at_rp90"] == pytest.approx(0.9)
    assert out["mAP"] == pytest.approx(3 / 4)
    assert (out["n_predictions"], out["n_positives"], out["n_true_predictions"], out["n_queries"]) == (5, 3, 3, 3)
    # the bootstrap intervals rank the same pairs (icdlib.eval.intervals)
    from icdlib.eval.intervals import rank_predictions
    from icdlib.eval.metrics import read_ground_truth, read_predictions

    gt = read_ground_truth(g)
    ranked = rank_predictions(read_predictions(p), gt["query_id"], gt["reference_id"], ["q1", "q2", "q3"])
    assert ranked.positives.tolist() == [2, 1, 0] and ranked.uap() == pytest.approx(34 / 45)
