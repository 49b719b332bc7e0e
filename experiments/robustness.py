"""Claims that survive a tuned baseline: each descriptor arm at its own best lr -> reports/tables/robustness.csv, .md

    python experiments/robustness.py --run RUN [--factors 0.25,0.5,1,2,4] [--seeds 0,1]
                                     [--select final_queries] [--arms infonce,copynce,copynce_uniform]

``RUN`` is a pipeline folder whose ``params.yaml`` names a built benchmark and whose start exists
(``models/trunk.pt`` after stage ``train_trunk``, or ``paths.backbone`` with ``paths.trunk: null``).
Every arm trains, as stage ``train_descriptor`` trains it (same start, kNN look-alikes, pair store,
seeds), at each peak lr ``factor x`` the released rule's (``train.base_lr * sqrt(batch / 1024)``).
Each arm's lr is chosen on ``--select`` (mean plain uAP over ``--seeds``; never the tables' split),
then the claims are tested on the tables' split (``dataset.eval_split``), each arm at its own chosen
lr: the paired gap, its 95 % bootstrap interval over seeds and queries, and the verdict, as in
``reports/tables/orderings.csv``. The whole grid is kept in ``reports/tables/robustness_grid.csv``.
Runs go under ``RUN/runs/robustness/`` and resume, and a rerun (a wider grid) embeds nothing it
embedded before (``Benchmark.feature_cache``: embeddings kept under a key of the weights and images).
At ``1x`` (the rule itself) the runs are the run's own (``RUN``'s ``paths.runs`` and
``paths.models``), so the recipe runs a pipeline or ``experiments/starts.py`` already
trained are reused, not trained again. ``--table-split`` names the tables' split where ``RUN``'s
``dataset.eval_split`` is not it (a start folder of ``experiments/starts.py`` evaluates
``final_queries``):

    python experiments/robustness.py --run runs/starts/dino --table-split dev_queries
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from icdlib.eval.engine import Benchmark, load_checkpoint
from icdlib.eval.intervals import paired_interval, rank_predictions
from icdlib.eval.retrieval import EvalConfig
from icdlib.params import load_params, run_commit, section
from icdlib.pipeline.stage import Stage
from icdlib.pipeline.training import TRUNK, checkpoint_name, seed_checkpoint, train_arms
from icdlib.train.runs import TrainConfig, recipe_lr, resolve_run

COLUMNS = ["claim", "a", "b", "lr_a", "lr_b", "gap", "ci_low", "ci_high", "seeds", "verdict"]
# claim names are a contract: (claim, arm a, arm b)
CLAIMS = (("copynce>infonce (each at its best lr)", "copynce", "infonce"),
          ("pixtrace>uniform (each at its best lr)", "copynce", "copynce_uniform"))
OUT = Path("reports") / "tables"


def rule_lr(params: dict) -> float:
    """The released rule's peak lr of the descriptor arms: ``base_lr * sqrt(batch / 1024)``."""
    rule = resolve_run(params, "infonce").train
    return recipe_lr(rule.rule_base_lr, rule.batch_size)


def variant_params(run: Path, params: dict, factor: float, seeds: list[int]) -> Path:
    """A params file whose descriptor arms fine-tune at ``factor`` x the rule's lr; runs under RUN/runs/robustness."""
    st = Stage(run / "params.yaml")
    folder = run / "runs" / "robustness" / f"x{factor:g}"
    p = json.loads(json.dumps(params))
    # at 1x, where the run itself fine-tunes by the rule (train.lr unset), the runs and models are the run's own:
    # its recipe runs are reused; any other factor, or a run with an explicit lr, sets the lr and trains apart
    own = factor == 1 and params["train"].get("lr") is None
    if not own:
        p["train"]["lr"] = factor * rule_lr(params)
    p["main"]["seeds"] = list(seeds)
    paths = p["paths"]
    trunk = st.path("models", checkpoint_name(TRUNK))  # the kNN miner of every arm: the run's own start
    if not trunk.is_file():
        raise FileNotFoundError(f"{trunk}: the run's start is missing (dvc repro train_trunk first)")
    paths.update({"data": str(st.path("data")), "models": str(st.path("models")) if own else "models",
                  "runs": str(st.path("runs")) if own else "runs", "features": "features", "reports": "reports",
                  "pair_cache": str(st.path("pair_cache")) if st.paths.pair_cache else None})
    for key in ("trunk", "backbone", "matcher_backbone"):
        if paths.get(key):
            paths[key] = str(st.path(key))
    folder.mkdir(parents=True, exist_ok=True)
    if not own:
        (folder / "models").mkdir(exist_ok=True)
        shutil.copyfile(trunk, folder / "models" / checkpoint_name(TRUNK))
    (folder / "params.yaml").write_text(json.dumps(p, indent=1))
    return folder / "params.yaml"


def grid(run: Path, arms: list[str], factors: list[float], seeds: list[int], splits: list[str]) -> pd.DataFrame:
    """Train every (arm, factor, seed) and score it on every split; one row each, with its prediction file."""
    params = load_params(run / "params.yaml")
    cfg = section(params, "eval", EvalConfig, "params.yaml")
    rows = []
    for factor in factors:
        pfile = variant_params(run, params, factor, seeds)
        train_arms(pfile, arms)
        st = Stage(pfile)
        benches = {sp: Benchmark(st.path("data"), sp, cfg) for sp in splits}
        for bench in benches.values():  # embeddings kept by weights and images: a rerun embeds nothing again
            bench.feature_cache = st.path("features", "embeddings")
        for arm in arms:
            for seed in seeds:
                model, meta = load_checkpoint(seed_checkpoint(st, arm, seed), "descriptor")
                lr = TrainConfig(**meta["run"]["train"]).peak_lr  # the lr this checkpoint trained at
                for split, bench in benches.items():
                    preds = bench.descriptor(model, int(meta["config"]["img_size"]), f"{arm}_s{seed}")["plain"]
                    path = st.path("features", "robustness", split, f"{arm}_s{seed}.csv")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    preds.to_csv(path, index=False)
                    metrics, _ = bench.score(preds)
                    rows.append({"arm": arm, "factor": factor, "lr": lr, "seed": seed, "split": split,
                                 "uAP": float(metrics.uAP), "predictions": str(path)})
                    print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def choose(frame: pd.DataFrame, split: str) -> dict[str, float]:
    """Each arm's factor with the best mean uAP over seeds on ``split`` (ties: the smaller factor)."""
    mean = frame[frame["split"] == split].groupby(["arm", "factor"])["uAP"].mean().reset_index()
    best = mean.sort_values(["arm", "uAP", "factor"], ascending=[True, False, True]).groupby("arm").head(1)
    return dict(zip(best["arm"], best["factor"]))


def claims(frame: pd.DataFrame, best: dict[str, float], split: str, ground_truth: Path, queries: list[str],
           n_boot: int) -> pd.DataFrame:
    """The claims on ``split`` with each arm at its chosen factor: :data:`COLUMNS`."""
    from icdlib.eval.metrics import read_ground_truth

    gt = read_ground_truth(ground_truth)
    gq, gr = list(gt["query_id"]), list(gt["reference_id"])

    def ranked(arm):
        sel = frame[(frame["arm"] == arm) & (frame["factor"] == best[arm]) & (frame["split"] == split)]
        return {int(r.seed): rank_predictions(pd.read_csv(r.predictions, dtype={"query_id": str, "reference_id": str}),
                                              gq, gr, queries) for r in sel.itertuples()}, float(sel["lr"].iloc[0])

    out = []
    for name, a, b in CLAIMS:
        if a not in best or b not in best:
            continue
        (ra, lr_a), (rb, lr_b) = ranked(a), ranked(b)
        iv = paired_interval(ra, rb, n_boot=n_boot)
        out.append({"claim": name, "a": a, "b": b, "lr_a": lr_a, "lr_b": lr_b, "gap": iv.gap, "ci_low": iv.low,
                    "ci_high": iv.high, "seeds": ",".join(map(str, iv.seeds)), "verdict": iv.verdict})
    return pd.DataFrame(out, columns=COLUMNS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("."))
    ap.add_argument("--arms", default="infonce,copynce,copynce_uniform")
    ap.add_argument("--factors", default="0.25,0.5,1,2,4", help="peak lr as multiples of the released rule's")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--select", default="final_queries", help="split the lr is chosen on")
    ap.add_argument("--table-split", default=None, help="split the claims are tested on (default: the run's "
                                                         "dataset.eval_split, the tables' split)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    st = Stage(a.run / "params.yaml")
    table_split = a.table_split or st.dataset.eval_split
    if a.select == table_split:
        raise SystemExit(f"robustness: --select {a.select} is the tables' split; choose the lr elsewhere")
    arms = [x for x in a.arms.split(",") if x]
    factors = [float(f) for f in a.factors.split(",") if f]
    seeds = [int(s) for s in a.seeds.split(",") if s]
    frame = grid(a.run, arms, factors, seeds, [a.select, table_split])
    best = choose(frame, a.select)
    bench = Benchmark(st.path("data"), table_split, section(st.params, "eval", EvalConfig, "params.yaml"))
    queries = [q for q, _ in bench.queries]
    table = claims(frame, best, table_split, bench.ds.gt_file(table_split), queries, a.bootstrap)
    a.out.mkdir(parents=True, exist_ok=True)
    start = st.params["paths"].get("trunk_start") or st.params["paths"].get("backbone") or "the trunk stage's own"
    kept = frame.drop(columns=["predictions"])
    kept.to_csv(a.out / "robustness_grid.csv", index=False, float_format="%.6g")
    table.to_csv(a.out / "robustness.csv", index=False, float_format="%.6g")
    means = kept.groupby(["arm", "factor", "split"])["uAP"].mean().unstack("split").reset_index()
    lines = ["# Claims at each arm's own best lr", "",
             f"Each arm's peak lr chosen on `{a.select}` (mean plain uAP over seeds {seeds}) from {factors} x the "
             f"released rule; the claims tested on `{table_split}`. Made by `python experiments/robustness.py "
             f"{' '.join(argv if argv is not None else sys.argv[1:])}` at commit `{run_commit(a.run)}` of the run "
             f"folder: profile `{st.profile}`, start `{start}`, data seed {st.params.get('seed')}, "
             f"{a.bootstrap} bootstrap draws.", "",
             "| claim | a | b | lr a | lr b | gap | 95 % interval | seeds | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| `{r.claim}` | {r.a} | {r.b} | {r.lr_a:.3g} | {r.lr_b:.3g} | {r.gap:+.4f} | "
                     f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {r.seeds} | **{r.verdict}** |")
    lines += ["", "The grid (mean uAP over seeds):", "", means.to_markdown(index=False, floatfmt=".4f")]
    (a.out / "robustness.md").write_text("\n".join(lines) + "\n")
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
