"""Which start plays DINO's part: every fine-tuned arm from each candidate start -> reports/tables/starts.csv, .md

    python experiments/starts.py --run RUN [--starts trunk,trunk10x,dino] [--seeds 0,1]
                                 [--split final_queries] [--dino weights/dino_vit_tiny_cpu.safetensors]

``RUN`` is a folder with a ``params.yaml`` (the repository root will do) whose ``paths.data``
holds a built benchmark. For each start, a copy of that params file under
``RUN/runs/starts/<start>/`` trains, exactly as the pipeline's training stages do
(:func:`icdlib.pipeline.training.train_arms`): the trunk (or, for a pretrained start, the
start written as the trunk, ``paths.trunk: null``), then the InfoNCE and CopyNCE descriptor
arms and the CopyNCE matcher on every ``--seeds``, each with kNN look-alikes mined by its own
start. The candidates:

- ``trunk``: the default trunk (InfoNCE + KoLeo from random init, ``arms.trunk``);
- ``trunk10x``: the same objective trained ten times longer;
- ``dino``: a self-supervised DINO ViT (``python -m icdlib.train.pretrain``, never trained on copy
  pairs), read as ``paths.backbone``, as the paper reads DINO.

Every model is scored on ``--split`` (``final_queries``: not the tables' split, so the choice
does not tune the tables): plain uAP of the descriptors, and of the matcher rescoring the CopyNCE
descriptor's top-k candidates of the same seed. The start is chosen on the mean over seeds of
the three fine-tuned arms. Runs are resumable; a start whose runs exist is only scored again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from icdlib.eval.engine import load_checkpoint
from icdlib.params import load_params
from icdlib.pipeline.evaluation import Evaluator
from icdlib.pipeline.stage import Stage
from icdlib.pipeline.training import Job, run_jobs, seed_checkpoint, train_arms
from icdlib.pipeline.arms import longer_trunk
from icdlib.pipeline.trunk_start import subrun_params

STARTS = ("trunk", "trunk10x", "dino")
DESCRIPTOR_ARMS = ("infonce", "copynce")
MATCHER_ARM = "matcher_copynce"
OUT = Path("reports") / "tables" / "starts"


def start_params(params: dict, start: str, data: Path, seeds: list[int], split: str, dino: Path | None) -> dict:
    """The params of one start's runs: the run's own, its folders under the start's, its start."""
    p = subrun_params(params, data)  # each start trains its own trunk, under its own folder
    paths = p["paths"]
    p.setdefault("main", {})["seeds"] = list(seeds)
    p["dataset"]["eval_split"] = split
    trunk = p["arms"]["trunk"].setdefault("train", {})
    if start == "trunk10x":  # as the committed trunk is made (icdlib.pipeline.trunk_start)
        trunk.update(longer_trunk(params, 10))
    elif start == "dino":
        if dino is None or not dino.is_file():
            raise FileNotFoundError(f"start 'dino' needs the pretrained weights (--dino): {dino} not found; "
                                    "make them with: python -m icdlib.train.pretrain --out <file>")
        paths.update({"trunk": None, "backbone": str(dino.resolve()), "matcher_backbone": None})
    elif start != "trunk":
        raise ValueError(f"unknown start {start!r}; known: {', '.join(STARTS)}")
    return p


def train_start(params_file: Path, seeds: list[int]) -> None:
    """The trunk (or the written start), both descriptor arms on every seed, the matcher on every seed."""
    train_arms(params_file, ["trunk", *DESCRIPTOR_ARMS])
    st = Stage(params_file)
    jobs = [Job(MATCHER_ARM, s, f"{MATCHER_ARM}_s{s}", matcher_checkpoint(st, s)) for s in seeds]
    run_jobs(params_file, jobs)


def matcher_checkpoint(st: Stage, seed: int) -> Path:
    return st.path("models", "starts_matcher", f"s{int(seed)}.pt")


def score_start(params_file: Path, start: str, seeds: list[int]) -> list[dict]:
    """Plain uAP on the start's eval split of every descriptor arm and matcher, per seed."""
    ev = Evaluator(params_file, predictions="starts", normalise=False)
    st, rows = ev.st, []
    for seed in seeds:
        candidates = None
        for arm in DESCRIPTOR_ARMS:
            model, meta = load_checkpoint(seed_checkpoint(st, arm, seed), "descriptor")
            preds = ev.bench.descriptor(model, int(meta["config"]["img_size"]), f"{arm}_s{seed}")["plain"]
            metrics, _ = ev.bench.score(preds)
            rows.append({"start": start, "arm": arm, "seed": seed, "uAP": float(metrics.uAP)})
            if arm == "copynce":
                candidates = preds
        model, meta = load_checkpoint(matcher_checkpoint(st, seed), "matcher")
        preds = ev.bench.matcher(model, int(meta["config"]["img_size"]), candidates, 0)["plain"]
        metrics, _ = ev.bench.score(preds)
        rows.append({"start": start, "arm": MATCHER_ARM, "seed": seed, "uAP": float(metrics.uAP)})
        print(rows[-3:], flush=True)
    for r in rows:
        r.update({"split": st.dataset.eval_split, "queries": len(set(ev.bench.gt_q)), "profile": st.profile})
    return rows


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (start, arm), and each start's mean over its arms."""
    g = frame.groupby(["start", "arm"])["uAP"]
    table = g.agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "seeds"})
    overall = frame.groupby("start")["uAP"].mean().rename("start_mean")
    return table.merge(overall, on="start").sort_values(["start_mean", "start", "arm"], ascending=[False, True, True])


def write_tables(frame: pd.DataFrame, out: Path, costs: dict[str, str]) -> pd.DataFrame:
    table = summarise(frame)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out.with_suffix(".csv"), index=False, float_format="%.5f")
    best = table.iloc[0]["start"]
    lines = ["# Candidate starts: fine-tuned arms on the held-out split", "",
             f"Plain uAP on `{frame['split'].iloc[0]}` ({int(frame['queries'].iloc[0])} queries), mean ± std over "
             f"seeds {sorted(set(frame['seed']))}; made by `python experiments/starts.py`. Chosen on the mean over the "
             "three arms (`start_mean`): **" + str(best) + "**.", "",
             "| start | arm | uAP | seeds | start mean | what the start costs |", "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        std = 0.0 if pd.isna(r.std) else r.std
        lines.append(f"| {r.start} | {r.arm} | {r.mean:.4f} ± {std:.4f} | {r.seeds} | {r.start_mean:.4f} | "
                     f"{costs.get(r.start, '')} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("."))
    ap.add_argument("--starts", default=",".join(STARTS))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--split", default="final_queries")
    ap.add_argument("--dino", type=Path, default=Path("weights/dino_vit_tiny_cpu.safetensors"))
    ap.add_argument("--out", type=Path, default=OUT, help="table path without suffix (.csv and .md are written)")
    a = ap.parse_args(argv)
    params = load_params(a.run / "params.yaml")
    data = (a.run / params["paths"]["data"]).resolve()
    seeds = [int(s) for s in a.seeds.split(",") if s]
    costs = {"trunk": "the default trunk stage", "trunk10x": "10x the trunk's steps"}
    record = a.dino.with_suffix(".json")
    if record.is_file():
        r = json.loads(record.read_text())
        costs["dino"] = f"DINO pretraining, {r.get('steps_done')} steps, {r.get('seconds', 0) / 60:.0f} min"
    rows = []
    for start in [s for s in a.starts.split(",") if s]:
        folder = a.run / "runs" / "starts" / start
        folder.mkdir(parents=True, exist_ok=True)
        pfile = folder / "params.yaml"
        pfile.write_text(json.dumps(start_params(params, start, data, seeds, a.split, a.dino), indent=1))
        tic = time.perf_counter()
        train_start(pfile, seeds)
        print(f"start {start}: trained in {(time.perf_counter() - tic) / 60:.1f} min", flush=True)
        rows += score_start(pfile, start, seeds)
    frame = pd.DataFrame(rows)
    if a.out.with_suffix(".csv").is_file():  # other starts' rows stay: each call adds or replaces its own
        kept = pd.read_csv(a.out.with_suffix(".csv"))
        kept = kept[~kept["start"].isin(set(frame["start"]))]
        frame = pd.concat([kept, frame], ignore_index=True)
    print(write_tables(frame, a.out, costs).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
