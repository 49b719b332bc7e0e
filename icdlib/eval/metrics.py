"""ISC21 copy-detection metrics: micro-average precision (uAP), RP90, mAP, PR curve.

Semantics (those of the ISC21 challenge)
----------------------------------------
* A prediction is a ``(query_id, reference_id, score)`` triple; higher score means
  "more likely a copy" (a similarity, not a distance). A query may carry several
  predictions, but a repeated ``(query_id, reference_id)`` pair is an error.
* Ground truth lists ``(query_id, reference_id)`` copy pairs, several for a query that
  copies several references (a collage); a row whose reference is ``None`` marks a
  distractor query (one with no copy in the database). A prediction is true when its
  pair is any ground-truth pair.
* **uAP**: pool every prediction of every query into one list, sort by score
  descending, and with ``P_k = TP_k / k`` and ``R_k = TP_k / N_gt`` take
  ``uAP = sum_k (R_k - R_{k-1}) * P_k``. ``N_gt`` counts *all* ground-truth pairs, so a
  never-predicted pair caps the reachable recall; a prediction for a distractor (or an
  unknown id) is simply a false positive.
* **RP90**: the largest ``R_k`` over ranks whose ``P_k >= 0.9``; 0 if none.
* **mAP** (our definition; ISC21 has none): the mean over ground-truth queries (queries
  with at least one copy) of the average precision of that query's own predictions,
  ranked by score: ``AP_q = (1 / n_q) * sum_{k: hit} TP_k / k`` where ``n_q`` is the
  query's number of ground-truth pairs and ``k`` runs over the query's ranked list. A
  ground-truth query with no correct prediction has ``AP_q = 0``. Distractor queries do
  not enter the mean.
* **Ties** are broken pessimistically everywhere: among equal scores the false
  predictions are ranked first.

All metrics are fractions in ``[0, 1]``. The core is vectorised numpy: ids are
factorised to integer codes, so a million predictions score in well under a second.

CLI::

    python -m icdlib.metrics --predictions P.csv --ground-truth G.csv

with CSV headers ``query_id,reference_id,score`` and ``query_id,reference_id`` (empty
``reference_id`` = distractor). It prints one JSON object and exits with status 2 and a
message on malformed input.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from icdlib import isc_csv

PREDICTION_COLUMNS = isc_csv.PREDICTION_COLUMNS
GROUND_TRUTH_COLUMNS = isc_csv.GT_COLUMNS


@dataclass(frozen=True)
class PredictedMatch:
    """One scored candidate pair; ``score`` is a similarity (higher = more likely a copy)."""

    query: str
    reference: str
    score: float


@dataclass(frozen=True)
class GroundTruthMatch:
    """One ground-truth pair; ``reference is None`` marks a distractor query."""

    query: str
    reference: str | None


@dataclass(frozen=True)
class PrCurve:
    """Pooled precision/recall after each rank of the score-sorted prediction list.

    Attributes:
        precision: (n,) float64, ``TP_k / k`` for k = 1..n.
        recall: (n,) float64, ``TP_k / N_gt``.
        thresholds: (n,) float64, the score at rank k (non-increasing).
    """

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray

    def subsample(self, max_points: int = 1000) -> "PrCurve":
        """At most ``max_points`` evenly spaced ranks (always keeping the last), for plots."""
        n = len(self.precision)
        if max_points < 2:
            raise ValueError(f"PrCurve.subsample: max_points must be >= 2, got {max_points}")
        if n <= max_points:
            return self
        idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
        return PrCurve(self.precision[idx], self.recall[idx], self.thresholds[idx])


@dataclass(frozen=True)
class Metrics:
    """Evaluation result; every rate is a fraction in ``[0, 1]``.

    Attributes:
        uAP: micro-average precision over the pooled predictions.
        RP90: largest recall at precision >= 0.9 (0 if never reached).
        mAP: mean per-query AP over ground-truth queries.
        n_predictions: number of predictions scored.
        n_positives: ``N_gt``, the number of ground-truth copy pairs.
        n_true_predictions: predictions that hit a ground-truth pair.
        n_queries: distinct queries in the ground truth (copies and distractors).
        threshold_at_rp90: score at the RP90 operating point (None when RP90 is 0).
    """

    uAP: float
    RP90: float
    mAP: float
    n_predictions: int
    n_positives: int
    n_true_predictions: int
    n_queries: int
    threshold_at_rp90: float | None

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- core


def sort_pessimistic(scores: np.ndarray, is_true: np.ndarray, group: np.ndarray | None = None):
    """Order: (group ascending,) score descending, and at equal score false before true.

    Pessimistic ties: a submission cannot gain by emitting constant scores, because
    every tied block is ranked as if its wrong predictions came first.
    Implemented as stable sorts (falses placed first, then by score, then by group),
    which is several times faster than ``np.lexsort`` on a million rows.
    """
    order = np.concatenate([np.flatnonzero(~is_true), np.flatnonzero(is_true)])
    order = order[np.argsort(-scores[order], kind="stable")]
    if group is not None:
        order = order[np.argsort(group[order], kind="stable")]
    return order


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"metrics: scores must be 1-D, got shape {scores.shape}")
    bad = ~np.isfinite(scores)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"metrics: score at prediction {i} is not finite ({scores[i]})")
    return scores


def evaluate_arrays(
    pred_query: Sequence,
    pred_reference: Sequence,
    scores: Sequence[float],
    gt_query: Sequence,
    gt_reference: Sequence,
) -> tuple[Metrics, PrCurve]:
    """Score predictions against ground truth (vectorised).

    Args:
        pred_query, pred_reference: (n,) ids of each prediction (str or int; compared
            by equality with the ground-truth ids).
        scores: (n,) float, higher = more likely a copy.
        gt_query, gt_reference: (m,) ground-truth rows; a reference of ``None`` or ``""``
            marks a distractor query.

    Returns:
        ``(Metrics, PrCurve)``.

    Raises:
        ValueError: length mismatch, non-finite score, a duplicate (query, reference)
            prediction or ground-truth pair, or ground truth without any copy pair.
    """
    pq = np.asarray(pred_query, dtype=object)
    pr = np.asarray(pred_reference, dtype=object)
    s = _check_scores(scores)
    if not (len(pq) == len(pr) == len(s)):
        raise ValueError(
            f"metrics: prediction columns differ in length: query {len(pq)}, "
            f"reference {len(pr)}, score {len(s)}"
        )
    gq = np.asarray(gt_query, dtype=object)
    gr = np.asarray(gt_reference, dtype=object)
    if len(gq) != len(gr):
        raise ValueError(f"metrics: ground truth columns differ in length: {len(gq)} vs {len(gr)}")
    is_pair = np.array([r is not None and r == r and r != "" for r in gr], dtype=bool)
    n_queries = int(len(pd.unique(gq))) if len(gq) else 0

    # Integer codes over the union of ids, then one int64 code per (query, reference).
    q_codes, q_uni = pd.factorize(np.concatenate([pq, gq[is_pair]]))
    r_codes, r_uni = pd.factorize(np.concatenate([pr, gr[is_pair]]))
    n = len(pq)
    pair = q_codes.astype(np.int64) * max(len(r_uni), 1) + r_codes
    pred_pair, gt_pair = pair[:n], pair[n:]

    _reject_duplicates(pred_pair, pq[:n], pr[:n], "prediction")
    _reject_duplicates(gt_pair, gq[is_pair], gr[is_pair], "ground-truth")
    n_gt = len(gt_pair)
    if n_gt == 0:
        raise ValueError("metrics: ground truth has no (query, reference) copy pair; uAP is undefined")

    is_true = np.isin(pred_pair, gt_pair)
    order = sort_pessimistic(s, is_true)
    hits = is_true[order]
    tp = np.cumsum(hits)
    ranks = np.arange(1, n + 1)
    precision = tp / ranks if n else np.zeros(0)
    recall = tp / n_gt
    thresholds = s[order]

    # sum_k (R_k - R_{k-1}) P_k: recall only moves at hits, by 1/N_gt.
    uap = float(precision[hits].sum() / n_gt) if n else 0.0
    ok = precision >= 0.9
    if ok.any():
        best = int(np.argmax(np.where(ok, recall, -1.0)))
        rp90, thr = float(recall[best]), float(thresholds[best])
    else:
        rp90, thr = 0.0, None
    if rp90 == 0.0:
        thr = None

    map_ = _mean_query_ap(q_codes[:n], s, is_true, q_codes[n:])
    metrics = Metrics(
        uAP=uap,
        RP90=rp90,
        mAP=map_,
        n_predictions=int(n),
        n_positives=int(n_gt),
        n_true_predictions=int(is_true.sum()),
        n_queries=n_queries,
        threshold_at_rp90=thr,
    )
    return metrics, PrCurve(precision.astype(np.float64), recall.astype(np.float64), thresholds)


def _reject_duplicates(codes: np.ndarray, q: np.ndarray, r: np.ndarray, what: str) -> None:
    uniq, first, counts = np.unique(codes, return_index=True, return_counts=True)
    if len(uniq) != len(codes):
        i = int(first[np.argmax(counts > 1)])
        raise ValueError(
            f"metrics: duplicate {what} pair (query_id={q[i]!r}, reference_id={r[i]!r}) "
            f"appears {int(counts.max())} times; each pair may appear once"
        )


def _mean_query_ap(pred_q: np.ndarray, s: np.ndarray, is_true: np.ndarray, gt_q: np.ndarray) -> float:
    """Mean over ground-truth queries of the AP of each query's own ranked predictions."""
    gt_queries, n_gt_per_q = np.unique(gt_q, return_counts=True)
    if len(s) == 0:
        return 0.0
    order = sort_pessimistic(s, is_true, group=pred_q)
    q_sorted = pred_q[order]
    hits = is_true[order].astype(np.int64)
    start = np.r_[True, q_sorted[1:] != q_sorted[:-1]]
    group_start = np.maximum.accumulate(np.where(start, np.arange(len(q_sorted)), 0))
    rank = np.arange(len(q_sorted)) - group_start + 1
    cum = np.cumsum(hits)
    tp_in_q = cum - (cum[group_start] - hits[group_start])
    contrib = np.where(hits == 1, tp_in_q / rank, 0.0)
    per_q = np.bincount(q_sorted, weights=contrib, minlength=int(gt_queries.max()) + 1)
    return float(np.mean(per_q[gt_queries] / n_gt_per_q))


def evaluate(
    predictions: Iterable[PredictedMatch], ground_truth: Iterable[GroundTruthMatch]
) -> Metrics:
    """Metrics of typed records; see the module docstring for the exact semantics."""
    return _evaluate_records(predictions, ground_truth)[0]


def _evaluate_records(predictions: Iterable[PredictedMatch], ground_truth: Iterable[GroundTruthMatch]):
    """:func:`evaluate_arrays` of typed records."""
    preds = list(predictions)
    gts = list(ground_truth)
    return evaluate_arrays(
        [p.query for p in preds],
        [p.reference for p in preds],
        np.array([p.score for p in preds], dtype=np.float64),
        [g.query for g in gts],
        [g.reference for g in gts],
    )


def pr_curve(predictions: Iterable[PredictedMatch], ground_truth: Iterable[GroundTruthMatch]) -> PrCurve:
    """The pooled precision/recall curve of typed records (see :class:`PrCurve`)."""
    return _evaluate_records(predictions, ground_truth)[1]


def exact_auc(labels: Sequence, scores: Sequence[float]) -> float:
    """ROC AUC of ``scores`` (higher = positive) for boolean ``labels``, ties counted exactly.

    The share of (positive, negative) pairs whose positive scores higher, a tie counting
    one half: the Mann-Whitney U over ``n_pos * n_neg``, from mid-ranks (tied scores share
    the mean of their ranks), in float64. ``ValueError`` on unequal lengths, a non-finite
    score, or labels of one class only. Unlike uAP, ties here are not pessimistic.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(y) != len(s):
        raise ValueError(f"exact_auc: {len(y)} labels but {len(s)} scores")
    if not np.isfinite(s).all():
        raise ValueError(f"exact_auc: score at {int(np.flatnonzero(~np.isfinite(s))[0])} is not finite")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"exact_auc: needs both classes, got {n_pos} positives and {n_neg} negatives")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each distinct score
    rank_sum = float(mid_rank[inverse.ravel()][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def candidate_auc(scored: pd.DataFrame, truth: set[tuple[str, str]]) -> float:
    """:func:`exact_auc` of a scored candidate list (``query_id, reference_id, score``):
    the ground-truth pairs ``truth`` (``(query_id, reference_id)`` str tuples) against
    every other candidate, pooled over queries (the re-ranking task itself).

    NaN, with a warning that says why, when the candidates hold one class only (no true pair
    among them, as when the chosen queries are all distractors, or only true pairs): the
    re-ranking AUC is undefined there, which is not an error of the scores."""
    labels = [(q, r) in truth for q, r in zip(scored["query_id"], scored["reference_id"])]
    n_true = sum(labels)
    if n_true == 0 or n_true == len(labels):
        warnings.warn(f"candidate_auc undefined: {n_true} true pairs among {len(labels)} candidates", stacklevel=2)
        return float("nan")
    return exact_auc(labels, scored["score"].to_numpy())


# --------------------------------------------------------------------------- CSV I/O


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read ``query_id,reference_id,score`` (ids as str, score float64) with
    :func:`icdlib.isc_csv.read_predictions`; bad rows raise ``ValueError`` naming the line."""
    rows = isc_csv.read_predictions(path)
    return pd.DataFrame(
        {"query_id": pd.Series([q for q, _, _ in rows], dtype=object),
         "reference_id": pd.Series([r for _, r, _ in rows], dtype=object),
         "score": np.array([s for _, _, s in rows], dtype=np.float64)}
    )


def read_ground_truth(path: str | Path) -> pd.DataFrame:
    """Read ``query_id,reference_id`` with :func:`icdlib.isc_csv.read_ground_truth`; an
    empty reference_id becomes ``None`` (distractor)."""
    rows = isc_csv.read_ground_truth(path)
    return pd.DataFrame({"query_id": pd.Series([q for q, _ in rows], dtype=object),
                         "reference_id": pd.Series([r for _, r in rows], dtype=object)})


def write_predictions(path: str | Path, query_ids, reference_ids, scores) -> Path:
    """Write a predictions CSV (``query_id,reference_id,score``), sorted by score descending."""
    df = pd.DataFrame(
        {"query_id": np.asarray(query_ids, dtype=object), "reference_id": np.asarray(reference_ids, dtype=object),
         "score": np.asarray(scores, dtype=np.float64)}
    )
    df = df.sort_values("score", ascending=False, kind="stable")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)  # full precision: re-reading gives the same ranking
    return path


def evaluate_files(predictions: str | Path, ground_truth: str | Path) -> tuple[Metrics, PrCurve]:
    """Metrics of a predictions CSV against a ground-truth CSV (what the CLI prints)."""
    p = read_predictions(predictions)
    g = read_ground_truth(ground_truth)
    unknown = sorted(set(p["query_id"]) - set(g["query_id"]))
    if unknown:
        warnings.warn(
            f"{ground_truth}: ground truth covers only some of the predicted queries: "
            f"{len(unknown)} of {p['query_id'].nunique()} have no row (first: {unknown[0]}); "
            "their predictions count as false", stacklevel=2)
    return evaluate_arrays(
        p["query_id"].to_numpy(), p["reference_id"].to_numpy(), p["score"].to_numpy(),
        g["query_id"].to_numpy(), g["reference_id"].to_numpy(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m icdlib.metrics",
        description="ISC21 uAP / RP90 / mAP of a predictions CSV (pessimistic ties).",
    )
    ap.add_argument("--predictions", required=True, help="CSV with query_id,reference_id,score")
    ap.add_argument("--ground-truth", required=True, help="CSV with query_id,reference_id (empty = distractor)")
    args = ap.parse_args(argv)
    try:
        metrics, _ = evaluate_files(args.predictions, args.ground_truth)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(metrics.to_dict(), indent=2))
    return 0
