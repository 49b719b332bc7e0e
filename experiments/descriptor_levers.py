"""Descriptor levers: InfoNCE and CopyNCE trained with a few keys changed, side by side -> reports/ablation/levers.csv

    python experiments/descriptor_levers.py --run RUN [--arms infonce,copynce] [--seed 0]
                                            [--variants lr2e-4,lr1e-4] [--snapshots 75,150,225]
                                            [--splits dev_queries,...] [--out reports/ablation/levers.csv]

Writes ``reports/ablation/levers.csv`` (columns ``variant, arm, seed, step, split, pairs, uAP,
keys, profile, commit, queries``); rows of other variants, seeds and runs already in the file
stay, each call adds or replaces its own.

``RUN`` is a finished default-profile pipeline folder (a clone after ``make repro``, or one
whose ``dvc repro evaluate`` has run): its ``params.yaml``, ``data/``, ``models/trunk.pt``
and kNN table. Each variant trains every arm as stage ``train_descriptor`` does (same start,
seed, kNN look-alikes and pair store, :func:`icdlib.pipeline.training.stage_run`), with the
variant's keys on top, and scores each kept budget as the learning curve does (plain top-k
uAP on the eval split, or on each of ``--splits``, no score normalisation). The rows give both arms' uAP per budget and
the CopyNCE - InfoNCE gap: does a lever separate the arms sooner or further than the recipe
(the run's own ``reports/ablation/curve.csv``)? Runs go under ``RUN/runs/levers/``
(:func:`icdlib.pipeline.levers.train_variant`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from icdlib.eval.engine import Benchmark, load_checkpoint
from icdlib.pipeline.evaluation import Evaluator
from icdlib.pipeline.levers import chosen_variants, run_commit, train_variant
from icdlib.pipeline.training import seed_checkpoint, stage_run

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {  # name -> --set keys on top of each arm
    "recipe": {},  # the pipeline's own runs of the arm (its checkpoints in RUN/models; nothing is trained)
    "lr2e-4": {"train.lr": 2e-4},  # fine-tuning the trunk at 0.4x the recipe's peak lr
    "lr1e-4": {"train.lr": 1e-4},
    "steps450": {"train.steps": 450},
    # why fine-tuning lowers the start: one difference from how the trunk trained at a time
    "rule": {"train.lr": None},  # the recipe trained again here (the rule's lr): the row the others change one key of
    "lr1e-8": {"train.lr": 1e-8, "train.min_lr": 0.0},  # the weights stay; only BatchNorm's running statistics move
    "joint_bn": {"train.bn_per_side": False},  # one BatchNorm call over queries and references, as the trunk
    "t05": {"train.temperature": 0.05},  # the trunk's fixed temperature instead of the learned scale
    "no_knn": {"train.knn_checkpoint": "", "train.batch_size": 64, "train.lr": 1.06e-4},  # 64 random pairs a
    # step instead of 32 items with a kNN look-alike each: the same pairs per step and lr, no hard negatives
    "trunk_like": {"train.bn_per_side": False, "train.temperature": 0.05, "train.weight_decay": 0.05,
                   "train.wd_exempt_tokens": False},  # every recipe key the trunk sets otherwise, batch and lr aside
}
OUT = ROOT / "reports" / "ablation" / "levers.csv"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--arms", default="infonce,copynce")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="lr2e-4")
    ap.add_argument("--snapshots", default="75,150,225")
    ap.add_argument("--splits", default=None,
                    help="query splits to score, comma-separated (default: the params' dataset.eval_split); "
                         "a split the tables do not use tells whether a lever's effect is the eval split's own")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    try:
        names = chosen_variants(a.variants, VARIANTS, "descriptor_levers")
    except ValueError as e:
        ap.error(str(e))
    ev = Evaluator(a.run / "params.yaml", predictions="levers", normalise=False)
    st = ev.st
    splits = a.splits.split(",") if a.splits else [st.dataset.eval_split]
    benches = {sp: ev.bench if sp == ev.bench.split else Benchmark(st.path("data"), sp, ev.bench.cfg) for sp in splits}
    snaps = [int(s) for s in a.snapshots.split(",") if s]
    arms = a.arms.split(",")
    commit = run_commit(a.run)
    kept = pd.read_csv(a.out, dtype={"commit": str}) if a.out.is_file() else pd.DataFrame()
    rows = []
    for name in names:
        for arm in arms:
            run, _ = stage_run(st, arm, a.seed, None, {"train.snapshots": snaps, **VARIANTS[name]})
            if VARIANTS[name]:
                points = train_variant(st, run, f"{name}_{arm}_s{a.seed}")
            else:
                points = {run.train.steps: seed_checkpoint(st, arm, a.seed)}
            for step, ckpt in sorted(points.items()):
                model, meta = load_checkpoint(ckpt, "descriptor")
                for split, bench in benches.items():
                    scored = bench.descriptor(model, int(meta["config"]["img_size"]), f"{name}_{arm}")["plain"]
                    metrics, _ = bench.score(scored)
                    rows.append({"variant": name, "arm": arm, "seed": a.seed, "step": step, "split": split,
                                 "pairs": step * run.train.batch_size * (2 if run.train.knn_checkpoint else 1),
                                 "uAP": float(metrics.uAP), "keys": str(VARIANTS[name]), "profile": st.profile,
                                 "commit": commit, "queries": len(set(bench.gt_q))})
                    print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    wide = frame.pivot_table(index=["variant", "seed", "step", "split"], columns="arm", values="uAP").reset_index()
    if {"copynce", "infonce"} <= set(wide.columns):
        wide["gap"] = wide["copynce"] - wide["infonce"]
        print(wide.to_string(index=False))
    if len(kept) and "split" not in kept:  # rows written before --splits: the eval split's
        kept["split"] = st.dataset.eval_split
    if len(kept):  # rows of other variants and seeds stay: each call adds or replaces its own
        kept = kept[~(kept["variant"].isin(names) & kept["arm"].isin(arms) & (kept["seed"] == a.seed)
                      & (kept["commit"] == commit) & kept["split"].isin(splits))]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([kept, frame], ignore_index=True).to_csv(a.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
