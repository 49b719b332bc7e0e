"""Where the orderings' interval width comes from: seeds alone, queries alone, both -> reports/tables/interval_parts.csv

    python experiments/interval_parts.py --run RUN [--boot 1000] [--out reports/tables/interval_parts.csv]

Writes ``reports/tables/interval_parts.csv`` (columns ``claim, seeds, seed_gaps, gap,
seeds_only_low, seeds_only_high, queries_only_low, queries_only_high, both_low, both_high,
profile, n_queries``), one row per claim.

``RUN`` is a finished pipeline folder (a clone after ``make repro``). For every claim of
``reports/tables/orderings.csv`` whose sides were produced, three 95 % percentile intervals of
the paired uAP gap: resampling only the seeds (queries as drawn), only the queries (every seed
kept, one query draw shared by both sides and every seed), and both (the tables' interval, as
:func:`icdlib.eval.intervals.paired_interval` computes it). The per-seed gaps are listed too.
If the query part is nearly as wide as the whole, more seeds cannot narrow the interval; more
queries can.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from icdlib.eval.intervals import paired_interval, rank_predictions
from icdlib.eval.metrics import read_ground_truth, read_predictions
from icdlib.pipeline.orderings import CLAIMS, HASHES, prediction_sets
from icdlib.pipeline.stage import Stage

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "reports" / "tables" / "interval_parts.csv"


def parts(a: dict, b: dict, boot: int, seed: int = 0) -> dict:
    """Per-seed gaps and the seeds-only, queries-only and joint intervals of ``a - b``."""
    by = {r: paired_interval(a, b, n_boot=boot, seed=seed, resample=r) for r in ("seeds", "queries", "both")}
    both = by["both"]  # its seeds and per-seed gaps are the ones the tables pair
    return {"seeds": ",".join(map(str, both.seeds)), "seed_gaps": " ".join(f"{g:+.4f}" for g in both.seed_gaps),
            "gap": by["both"].gap,
            "seeds_only_low": by["seeds"].low, "seeds_only_high": by["seeds"].high,
            "queries_only_low": by["queries"].low, "queries_only_high": by["queries"].high,
            "both_low": by["both"].low, "both_high": by["both"].high}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    st = Stage(a.run / "params.yaml")
    result = json.loads(st.path("reports", "eval", "results.json").read_text())
    abl = json.loads(st.path("reports", "ablation", "results.json").read_text())
    sets = prediction_sets(result, abl)
    gt = read_ground_truth(st.absolute(result["ground_truth"]))
    gt_q, gt_r = gt["query_id"].astype(str).tolist(), gt["reference_id"].tolist()
    frames = {p: read_predictions(st.absolute(p)) for named in sets.values() for p in named.values()}
    queries = list(dict.fromkeys(gt_q + [q for f in frames.values() for q in f["query_id"].astype(str)]))
    ranked = {p: rank_predictions(f, gt_q, gt_r, queries) for p, f in frames.items()}
    hashes = [h for h in HASHES if h in sets]
    if hashes:  # as the tables: the hash with the higher uAP
        sets["best hash"] = sets[max(hashes, key=lambda h: ranked[sets[h][None]].uap())]
    rows = []
    for c in CLAIMS:
        if c.a not in sets or c.b not in sets:
            continue
        a_, b_ = ({s: ranked[p] for s, p in sets[n].items()} for n in (c.a, c.b))
        rows.append({"claim": c.name, **parts(a_, b_, a.boot)})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows).assign(profile=st.profile, n_queries=len(queries))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(a.out, index=False, float_format="%.4f")
    print(frame.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
