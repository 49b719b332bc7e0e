"""Confidence intervals for uAP differences: a bootstrap over seeds and queries.

A claim such as "CopyNCE > InfoNCE" compares two prediction sets per seed, made on the
same queries. Its uncertainty has two sources: which seeds were trained (the model) and
which queries were drawn (the benchmark). :func:`paired_interval` resamples both, the
seeds (with replacement) and the queries (with replacement, the same draw for both arms
and every seed), recomputes ``mean over seeds of uAP(a) - uAP(b)`` on each replicate,
and returns the percentile interval.

Resampling queries re-scores a global ranking (uAP pools every query's predictions), so
each replicate is a full uAP, not a mean of per-query terms. :class:`RankedPredictions`
sorts a prediction set once (pessimistic ties, as :func:`icdlib.eval.metrics.evaluate_arrays`);
a replicate repeats each prediction as many times as its query was drawn, which is the
ranking of the resampled benchmark itself (copies of one prediction share its score and
label, so their order among themselves does not matter), and needs only a cumulative sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from icdlib.eval.metrics import sort_pessimistic


@dataclass(frozen=True)
class RankedPredictions:
    """One prediction set, sorted once for fast re-scoring on query resamples.

    Attributes:
        query: ``int [n]`` index of each prediction's query in the query list, in ranked
            order (best score first, false before true at equal scores).
        hit: ``bool [n]`` whether each ranked prediction is a ground-truth pair.
        positives: ``int [n_queries]`` ground-truth pairs per query (0 for a distractor).
    """

    query: np.ndarray
    hit: np.ndarray
    positives: np.ndarray

    def uap(self, weights: np.ndarray | None = None) -> float:
        """uAP of the benchmark in which query ``i`` appears ``weights[i]`` times (all 1: as is)."""
        if weights is None:
            weights = np.ones(len(self.positives), dtype=np.int64)
        n_gt = int(np.dot(weights, self.positives))
        if n_gt == 0:
            return float("nan")
        hit = np.repeat(self.hit, weights[self.query])
        if hit.size == 0:
            return 0.0
        tp = np.cumsum(hit)
        precision = tp / np.arange(1, hit.size + 1)
        return float(precision[hit].sum() / n_gt)


def rank_predictions(predictions: pd.DataFrame, gt_query: Sequence, gt_reference: Sequence,
                     queries: Sequence[str]) -> RankedPredictions:
    """Rank ``predictions`` (``query_id, reference_id, score``) against ground truth.

    ``queries`` is the query list every set of a claim shares (the resampling units); a
    prediction for a query outside it is an error, as is a duplicate pair.
    """
    index = {q: i for i, q in enumerate(queries)}
    if len(index) != len(queries):
        raise ValueError("rank_predictions: the query list holds duplicates")
    gt = {(q, r) for q, r in zip(gt_query, gt_reference) if r is not None and r == r and r != ""}
    positives = np.zeros(len(queries), dtype=np.int64)
    for q, _ in gt:
        if q not in index:
            raise ValueError(f"rank_predictions: ground-truth query {q!r} is not in the query list")
        positives[index[q]] += 1
    pq = predictions["query_id"].astype(str).to_numpy()
    pr = predictions["reference_id"].astype(str).to_numpy()
    unknown = [q for q in pq if q not in index]
    if unknown:
        raise ValueError(f"rank_predictions: prediction for query {unknown[0]!r}, which is not in the query list")
    pairs = pd.Series(list(zip(pq, pr)))
    if pairs.duplicated().any():
        q, r = pairs[pairs.duplicated()].iloc[0]
        raise ValueError(f"rank_predictions: duplicate prediction pair ({q!r}, {r!r})")
    hit = np.array([(q, r) in gt for q, r in zip(pq, pr)], dtype=bool)
    order = sort_pessimistic(predictions["score"].to_numpy(np.float64), hit)
    return RankedPredictions(np.array([index[q] for q in pq], dtype=np.int64)[order], hit[order], positives)


@dataclass(frozen=True)
class Interval:
    """A paired difference ``a - b`` in uAP with its 95 % bootstrap interval."""

    gap: float  # mean over seeds of uAP(a) - uAP(b), on the benchmark as it is
    low: float
    high: float
    seeds: tuple[int, ...]  # the seeds the difference is paired over
    seed_gaps: tuple[float, ...] = ()  # uAP(a) - uAP(b) of each paired seed (a hash side: of each seed of the other)

    @property
    def verdict(self) -> str:
        """``holds`` when the interval lies above 0, ``fails`` below it, else ``inconclusive``."""
        if self.low > 0:
            return "holds"
        if self.high < 0:
            return "fails"
        return "inconclusive"


def paired_interval(a: Mapping[int | None, RankedPredictions], b: Mapping[int | None, RankedPredictions],
                    n_boot: int = 2000, seed: int = 0, level: float = 0.95, resample: str = "both") -> Interval:
    """Bootstrap interval of ``mean over seeds of uAP(a[s]) - uAP(b[s])``.

    Args:
        a, b: prediction sets by training seed. A side given under the single key
            ``None`` has no seed (a hash baseline) and is compared with every seed of the
            other; otherwise the seeds both sides share are paired.
        n_boot: bootstrap replicates; each resamples the seeds and, jointly for every
            set, the queries.
        seed: seed of the resampling.
        level: coverage of the percentile interval.
        resample: ``"both"`` (the tables' interval), or only ``"seeds"`` or only ``"queries"``,
            to tell how much of the width each source of noise makes.
    """
    if resample not in ("both", "seeds", "queries"):
        raise ValueError(f"paired_interval: resample={resample!r} must be 'both', 'seeds' or 'queries'")
    seeds = _paired_seeds(a, b)
    pairs = [(a[s if s in a else None], b[s if s in b else None]) for s in seeds]
    n_q = len(pairs[0][0].positives)
    if any(len(x.positives) != n_q or len(y.positives) != n_q for x, y in pairs):
        raise ValueError("paired_interval: every prediction set must rank the same query list")
    full = np.array([x.uap() - y.uap() for x, y in pairs])
    rng = np.random.default_rng(seed)
    reps = np.empty(int(n_boot))
    for i in range(int(n_boot)):
        picked = np.arange(len(pairs)) if resample == "queries" else rng.integers(0, len(pairs), len(pairs))
        if resample == "seeds":
            reps[i] = full[picked].mean()
            continue
        weights = rng.multinomial(n_q, np.full(n_q, 1.0 / n_q))
        diffs = {j: pairs[j][0].uap(weights) - pairs[j][1].uap(weights) for j in set(picked.tolist())}
        reps[i] = np.mean([diffs[j] for j in picked])
    tail = (1.0 - level) / 2 * 100
    low, high = np.nanpercentile(reps, [tail, 100 - tail])
    return Interval(float(full.mean()), float(low), float(high), tuple(s for s in seeds if s is not None),
                    tuple(float(g) for g in full))


def _paired_seeds(a: Mapping, b: Mapping) -> list:
    if not a or not b:
        raise ValueError("paired_interval: both sides need at least one prediction set")
    if list(a) == [None] and list(b) == [None]:
        return [None]
    if list(a) == [None]:
        return sorted(b)
    if list(b) == [None]:
        return sorted(a)
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError(f"paired_interval: no seed in common between {sorted(a)} and {sorted(b)}")
    return common
