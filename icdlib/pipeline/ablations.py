"""The ablation stage: paired runs of the paper's ablation arms over several seeds, from the shared trunk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icdlib.pipeline.curves import descriptor_curve
from icdlib.pipeline.evaluation import Evaluator
from icdlib.pipeline.stage import Stage, write_csv, write_json
from icdlib.pipeline.arms import seed_checkpoint
from icdlib.pipeline.training import Job, run_jobs
from icdlib.train import resolve_run
from icdlib.eval.engine import load_checkpoint


def run_ablations(params_file: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every ``ablation.arms`` run, each over its seeds (``ablation.arm_seeds``).

    Every run starts from the shared trunk, as the main arms do. A run that a main
    descriptor arm already made (same arm, a seed of ``main.seeds`` and ``ablation.steps``
    equal to its ``train.steps``) is evaluated from that checkpoint, not retrained; the
    others are resumable (finished ones return at once). Writes
    ``paths.reports/ablation/results.json``.
    """
    st = Stage(params_file)
    ev = Evaluator(params_file, predictions="ablation", normalise=False)  # the table compares arms without SN
    results: dict[str, Any] = {}
    plan = [(arm, seed) for seed in st.ablation.seeds for arm in st.ablation.arms if seed in st.ablation.seeds_of(arm)]
    ckpts = {(arm, seed): _main_run(st, arm, seed) for arm, seed in plan}
    jobs = [Job(arm, seed, f"ablation/{arm}_s{seed}", st.path("models", "ablation", f"{arm}_s{seed}.pt"),
                st.ablation.steps) for arm, seed in plan if ckpts[(arm, seed)] is None]
    ckpts.update(zip([(j.arm, j.seed) for j in jobs], run_jobs(params_file, jobs, progress)))  # side by side
    for arm, seed in plan:
        name, ckpt = f"{arm}_s{seed}", ckpts[(arm, seed)]
        model, meta = load_checkpoint(ckpt, "descriptor")
        res = ev.descriptor(model, int(meta["config"]["img_size"]), f"ablation_{name}")
        results.setdefault(arm, {"seeds": [], "runs": [], "predictions": [], "checkpoints": [],
                                 "config": st.tag(["data", "edits", "descriptor", "train", "pairs", f"arms.{arm}",
                                                   "ablation", "main"], arm=arm, steps=st.ablation.steps)})
        results[arm]["seeds"].append(int(seed))
        results[arm]["runs"].append(res["plain"]["metrics"])
        results[arm]["predictions"].append(res["plain"]["predictions"])
        results[arm]["checkpoints"].append(st.relative(ckpt))
    out = {"split": ev.bench.split, "ground_truth": st.relative(ev.bench.ds.gt_file(ev.bench.split)),
           "steps": st.ablation.steps, "profile": st.profile, "seed": st.seed, "arms": results}
    d = st.path("reports", "ablation")
    d.mkdir(parents=True, exist_ok=True)
    first = st.main.seeds[0]  # the curve's final points: this stage's own evaluations of the main runs
    finals = {arm: rec["runs"][rec["seeds"].index(first)]["uAP"] for arm, rec in results.items()
              if arm in ("infonce", "copynce") and first in rec["seeds"] and _main_run(st, arm, first)}
    curve = descriptor_curve(ev, tuple(a for a in ("infonce", "copynce") if a in st.ablation.arms), finals)
    write_csv(d / "curve.csv", curve)
    out["curve"] = st.relative(d / "curve.csv")
    write_json(d / "results.json", out)
    return out


def _main_run(st: Stage, arm: str, seed: int) -> Path | None:
    """The main descriptor run of ``(arm, seed)`` when it is exactly the ablation's run, else None."""
    if arm not in ("infonce", "copynce") or seed not in st.main.seeds:
        return None
    if resolve_run(st.params, arm, {}, st.params_path.name).train.steps != st.ablation.steps:
        return None
    ckpt = seed_checkpoint(st, arm, seed)
    if not ckpt.is_file():
        raise FileNotFoundError(f"ablation: {ckpt} (main arm {arm}, seed {seed}) is missing: run stage "
                                f"train_descriptor@{arm} first")
    return ckpt
