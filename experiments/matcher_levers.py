"""Matcher levers, each a real training run of the matcher arm with a few keys changed -> reports/matcher/levers.csv

    python experiments/matcher_levers.py --run RUN [--arm matcher_bce] [--steps 300] [--snapshots 75,150,225]
                                         [--variants recipe,knn50,...] [--out reports/matcher/levers.csv]

Writes ``reports/matcher/levers.csv`` (columns ``variant, keys, step, pairs, uAP,
candidate_auc, arm, seed, profile, commit, queries``); rows of other arms, variants and runs
already in the file stay, each call adds or replaces its own.

``RUN`` is a finished default-profile pipeline folder (a clone after ``make repro``, or one whose
``dvc repro evaluate`` has run; rows name its commit and number of evaluated queries): its
``params.yaml``, ``data/``, ``models/trunk.pt``, kNN table and the CopyNCE descriptor's
candidates (``reports/eval/results.json`` names the file). Each variant trains ``--arm``
exactly as stage ``train_matcher`` does (:func:`icdlib.train.train`, same start, seed, schedule
and pair store), with the variant's ``--set`` keys on top, keeping ``--snapshots``; then every
kept budget is scored as the evaluate stage scores the matcher rows (plain matcher scores of the
descriptor's top-k candidates, uAP on the eval split) and by the candidate-pair AUC
(:func:`icdlib.eval.metrics.candidate_auc`: ground-truth pairs against the other candidates, the
re-ranking task itself). The run's own matcher curve (``reports/matcher/curve.csv``) is the
recipe's row. New stores and run folders go under ``RUN/runs/levers/``
(:func:`icdlib.pipeline.levers.train_variant`); nothing the pipeline wrote is changed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from icdlib.eval.engine import load_checkpoint
from icdlib.eval.metrics import candidate_auc
from icdlib.pipeline.evaluation import Evaluator
from icdlib.pipeline.levers import chosen_variants, run_commit, train_variant
from icdlib.pipeline.stage import Stage
from icdlib.pipeline.training import checkpoint_name, stage_run

ROOT = Path(__file__).resolve().parents[1]
FINAL = "@final"  # a variant's train.init: the arm's final model in RUN/models (the pipeline's)
VARIANTS = {  # name -> --set keys on top of the arm
    "recipe": {},  # the arm as the pipeline trains it (its final model equals the stage's), at every budget
    "pos20": {"pairs.pos_rate": 0.2},
    "pos30_lr1e-3": {"pairs.pos_rate": 0.3, "train.lr": 1e-3},
    "knn50": {"pairs.neg_knn_p": 0.5},  # the released recipe's share of look-alike negatives
    "knn100": {"pairs.neg_knn_p": 1.0},  # every negative a kNN look-alike of its reference
    "pos30": {"pairs.pos_rate": 0.3},  # the released recipe's positive rate
    "lr2e-4": {"train.lr": 2e-4},
    "lr1e-3": {"train.lr": 1e-3},
    "headlr10": {"train.head_lr_scale": 10.0},  # the fusion token and head, new at the start, learn 10x faster
    "headlr0.1": {"train.head_lr_scale": 0.1},
    "batch64": {"train.batch_size": 64},  # twice the pairs per step (and per run)
    "input128": {"pairs.size": 128, "matcher.img_size": 128},  # the sources' full 128 px: 8x8 patches, not 7x7
    # a curriculum of negatives in two phases: the arm's final model (uniform negatives) trains
    # --steps more with look-alike negatives; then_uniform is the same extra budget without them
    "then_uniform": {"train.init": FINAL},
    "then_knn50": {"train.init": FINAL, "pairs.neg_knn_p": 0.5},
    "then_knn100": {"train.init": FINAL, "pairs.neg_knn_p": 1.0},
}
OUT = ROOT / "reports" / "matcher" / "levers.csv"


def run_variant(st: Stage, arm: str, name: str, keys: dict, steps: int, snaps: list[int]) -> dict[int, Path]:
    """Train ``arm`` with ``keys`` as its stage would; step -> checkpoint of every kept budget."""
    keys = {k: str(st.path("models", checkpoint_name(arm))) if v == FINAL else v for k, v in keys.items()}
    run, _ = stage_run(st, arm, None, steps, {"train.snapshots": snaps,
                                              "train.pair_cache": str(st.path("runs", "levers", "pairs")), **keys})
    tic = time.perf_counter()
    points = train_variant(st, run, name)
    print(f"{name}: trained {steps} steps in {time.perf_counter() - tic:.0f} s", flush=True)
    return points


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--arm", default="matcher_bce")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--snapshots", default="75,150,225")
    ap.add_argument("--variants", default="recipe,knn50,knn100,pos30,lr2e-4,lr1e-3")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    try:
        names = chosen_variants(a.variants, VARIANTS, "matcher_levers")
    except ValueError as e:
        ap.error(str(e))
    params = a.run / "params.yaml"
    st = Stage(params)
    ev = Evaluator(params, predictions="levers", normalise=False)
    results = json.loads(st.path("reports", "eval", "results.json").read_text())
    cand_file = st.absolute(results["rows"]["CopyNCE descriptor"]["plain"]["predictions"])
    candidates = pd.read_csv(cand_file, dtype={"query_id": str, "reference_id": str})
    truth = {(str(q), str(r)) for q, r in zip(ev.bench.gt_q, ev.bench.gt_r) if r is not None}
    snaps = [int(s) for s in a.snapshots.split(",") if s]
    label = {n: n if a.steps == 300 else f"{n}_{a.steps}steps" for n in names}
    commit = run_commit(a.run)
    kept = pd.read_csv(a.out, dtype={"commit": str}) if a.out.is_file() else pd.DataFrame()
    if len(kept):  # rows of other arms, variants and runs stay: each call adds or replaces its own
        mine = (kept["arm"] == a.arm) & kept["variant"].isin(list(label.values()) + ["descriptor candidates"])
        kept = kept[~(mine & (kept["commit"] == commit))]
    rows = []
    plain, _ = ev.bench.score(candidates)
    rows.append({"variant": "descriptor candidates", "keys": "", "step": 0, "pairs": 0, "uAP": float(plain.uAP),
                 "candidate_auc": candidate_auc(candidates, truth)})
    for name in names:
        keys = VARIANTS[name]
        offset = 0  # pairs the start had seen: a second phase counts the arm's own run too
        if FINAL in keys.values():
            _, first = load_checkpoint(st.path("models", checkpoint_name(a.arm)), "matcher")
            offset = int(first["step"]) * int(first["run"]["train"]["batch_size"])
        for step, ckpt in sorted(run_variant(st, a.arm, label[name], keys, a.steps, snaps).items()):
            model, meta = load_checkpoint(ckpt, "matcher")
            scored = ev.bench.matcher(model, int(meta["config"]["img_size"]), candidates, 0)["plain"]
            metrics, _ = ev.bench.score(scored)
            row = {"variant": label[name], "keys": json.dumps(keys), "step": step,
                   "pairs": offset + step * int(meta["run"]["train"]["batch_size"]), "uAP": float(metrics.uAP),
                   "candidate_auc": candidate_auc(scored, truth)}
            rows.append(row)
            print(row, flush=True)
        frame = pd.DataFrame(rows).assign(arm=a.arm, seed=st.main.seeds[0], profile=st.profile, commit=commit,
                                          queries=len(set(ev.bench.gt_q)))
        a.out.parent.mkdir(parents=True, exist_ok=True)
        pd.concat([kept, frame], ignore_index=True).to_csv(a.out, index=False)  # after each variant
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
