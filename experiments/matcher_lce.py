"""LCE beyond each query's top candidate: cost and uAP of the full and light view sets -> reports/matcher/lce.csv

    python experiments/matcher_lce.py --run RUN [--arm matcher_copynce] [--queries 300]
                                      [--variants plain,top1_full,top1_light,all_light,all_full]
                                      [--out reports/matcher/lce.csv]

Writes ``reports/matcher/lce.csv`` (columns ``variant, views, passes_per_pair, lce_pairs, pairs,
queries, uAP, candidate_auc, seconds, projected_min_whole_split, arm, seed, profile, split``),
one row per variant.

``RUN`` is a finished default-profile pipeline folder (a clone after ``make repro``). The
arm's final matcher rescores the CopyNCE descriptor's top-k candidates (the file
``reports/eval/results.json`` names) of the first ``--queries`` queries of the eval split,
in sorted id order, as the evaluate stage does (``icdlib.eval.engine.Benchmark.matcher``):

- ``plain``: one pass per pair;
- ``top1_full`` / ``top1_light``: LCE of each query's top candidate, the others plain (the
  tables' setting, ``report.lce_candidates: 1``), with 35 or 10 passes per pair;
- ``all_full`` / ``all_light``: LCE of every candidate.

Each row gives uAP on that query subset (its ground truth only), the candidate-pair AUC, the
pairs LCE scored, the wall seconds, and the minutes the same setting would take on the whole
split at that rate. Wall time on a shared machine: compare rows of one run only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd

from icdlib.eval.engine import load_checkpoint
from icdlib.eval.metrics import candidate_auc, evaluate_arrays
from icdlib.eval.views import lce_passes
from icdlib.pipeline.evaluation import Evaluator
from icdlib.pipeline.levers import chosen_variants
from icdlib.pipeline.training import checkpoint_name

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {  # name -> (LCE candidates per query: 0 none, -1 all; view set)
    "plain": (0, "full"),
    "top1_full": (1, "full"),
    "top1_light": (1, "light"),
    "all_light": (-1, "light"),
    "all_full": (-1, "full"),
}
OUT = ROOT / "reports" / "matcher" / "lce.csv"


def subset(candidates: pd.DataFrame, gt_q: list, gt_r: list, n: int) -> tuple[pd.DataFrame, list, list]:
    """The candidates and ground truth of the first ``n`` queries (sorted ids) of the split."""
    keep = set(sorted(set(gt_q))[:n])
    pairs = [(q, r) for q, r in zip(gt_q, gt_r) if q in keep]
    return (candidates[candidates["query_id"].isin(keep)].reset_index(drop=True),
            [q for q, _ in pairs], [r for _, r in pairs])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--arm", default="matcher_copynce")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    try:
        names = chosen_variants(a.variants, VARIANTS, "matcher_lce")
    except ValueError as e:
        ap.error(str(e))
    ev = Evaluator(a.run / "params.yaml", predictions="lce", normalise=False)
    st, bench = ev.st, ev.bench
    results = json.loads(st.path("reports", "eval", "results.json").read_text())
    cand_file = st.absolute(results["rows"]["CopyNCE descriptor"]["plain"]["predictions"])
    every = pd.read_csv(cand_file, dtype={"query_id": str, "reference_id": str})
    candidates, gt_q, gt_r = subset(every, bench.gt_q, bench.gt_r, a.queries)
    n_queries = len(set(gt_q))
    truth = {(q, r) for q, r in zip(gt_q, gt_r) if r is not None}
    model, meta = load_checkpoint(st.path("models", checkpoint_name(a.arm)), "matcher")
    size = int(meta["config"]["img_size"])
    base = bench.cfg
    rows = []
    for name in names:
        n_lce, views = VARIANTS[name]
        bench.cfg = dataclasses.replace(base, lce_views=views)
        tic = time.perf_counter()
        scored = bench.matcher(model, size, candidates, n_lce)
        seconds = time.perf_counter() - tic
        preds = scored["lce" if n_lce else "plain"]
        metrics, _ = evaluate_arrays(preds["query_id"].to_numpy(), preds["reference_id"].to_numpy(),
                                     preds["score"].to_numpy(), gt_q, gt_r)
        lce_pairs = 0 if not n_lce else len(candidates) if n_lce < 0 else int(
            candidates.groupby("query_id").size().clip(upper=n_lce).sum())
        row = {"variant": name, "views": views if n_lce else "", "passes_per_pair": lce_passes(views) if n_lce else 1,
               "lce_pairs": lce_pairs, "pairs": len(candidates), "queries": n_queries, "uAP": float(metrics.uAP),
               "candidate_auc": candidate_auc(preds, truth), "seconds": round(seconds, 1),
               "projected_min_whole_split": round(seconds / n_queries * len(set(bench.gt_q)) / 60, 1)}
        rows.append(row)
        print(row, flush=True)
    bench.cfg = base
    frame = pd.DataFrame(rows).assign(arm=a.arm, seed=st.main.seeds[0], profile=st.profile,
                                      split=st.dataset.eval_split)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(a.out, index=False)
    print(frame.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
