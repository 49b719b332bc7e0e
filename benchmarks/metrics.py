"""Time ISC21 metrics on 1M predictions -> reports/benchmarks/metrics.json.

    python benchmarks/metrics.py [--n-predictions 1000000] [--repeats 3]

Synthetic DISC21-sized input: 50,000 queries (20% with a ground-truth reference), 20
predictions each over 1M reference ids, random scores, string ids as read from CSV.
Reports the best wall time of ``evaluate_arrays`` (factorising ids included).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from icdlib.eval.metrics import evaluate_arrays

OUT = Path("reports/benchmarks/metrics.json")


def synthetic(n_predictions: int, n_queries: int = 50_000, n_refs: int = 1_000_000, seed: int = 0):
    """Unique (query, reference) predictions with string ids, plus matching ground truth.

    Ground-truth references are drawn from the top 10% of reference ids and wrong
    predictions from the rest, so planting a hit never repeats a pair.
    """
    rng = np.random.default_rng(seed)
    per_q = -(-n_predictions // n_queries)
    col = np.arange(n_predictions) % per_q
    q = np.repeat(np.arange(n_queries), per_q)[:n_predictions]
    n_wrong = n_refs - n_refs // 10
    r = (rng.integers(0, n_wrong, n_queries)[q] + 7919 * col) % n_wrong  # distinct within a query
    gt_ref = rng.integers(n_wrong, n_refs, n_queries)
    has_gt = rng.random(n_queries) < 0.2
    hit = has_gt[q] & (col == 0) & (rng.random(n_predictions) < 0.7)
    r = np.where(hit, gt_ref[q], r)
    scores = rng.random(n_predictions) + 0.5 * hit
    qid = np.char.add("Q", np.char.zfill(q.astype(str), 5)).astype(object)
    rid = np.char.add("R", np.char.zfill(r.astype(str), 6)).astype(object)
    gq = np.char.add("Q", np.char.zfill(np.arange(n_queries).astype(str), 5)).astype(object)
    gr = np.where(has_gt, np.char.add("R", np.char.zfill(gt_ref.astype(str), 6)).astype(object), None)
    return qid, rid, scores, gq, gr


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-predictions", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    data = synthetic(args.n_predictions)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        m, _ = evaluate_arrays(*data)
        times.append(time.perf_counter() - t0)
    result = {
        "n_predictions": m.n_predictions,
        "n_positives": m.n_positives,
        "seconds_best": round(min(times), 3),
        "seconds_all": [round(t, 3) for t in times],
        "predictions_per_s": round(m.n_predictions / min(times)),
        "uAP_of_synthetic_input": round(m.uAP, 4),
        "machine": platform.processor() or platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
