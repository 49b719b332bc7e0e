"""The ablation stage: short paired runs of the paper's ablation arms over several seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icdlib.pipeline.evaluation import Evaluator
from icdlib.pipeline.stage import Stage, write_json
from icdlib.pipeline.training import train_arm
from icdlib.eval.engine import load_checkpoint


def run_ablations(params_file: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train every ``ablation.arms`` x ``ablation.seeds`` run (short, paired) and evaluate it.

    Runs are resumable (finished ones return at once). Writes
    ``paths.reports/ablation/results.json``.
    """
    st = Stage(params_file)
    ev = Evaluator(params_file, predictions="ablation", normalise=False)  # the table compares arms without SN
    results: dict[str, Any] = {}
    for seed in st.ablation.seeds:
        for arm in st.ablation.arms:
            name = f"{arm}_s{seed}"
            ckpt = train_arm(params_file, arm, seed=seed, steps=st.ablation.steps, run_name=f"ablation/{name}",
                             out=st.path("models", "ablation", f"{name}.pt"), progress=progress)
            model, meta = load_checkpoint(ckpt, "descriptor")
            res = ev.descriptor(model, int(meta["config"]["img_size"]), f"ablation_{name}")
            results.setdefault(arm, {"seeds": [], "runs": [], "predictions": [],
                                     "config": st.tag(["data", "edits", "descriptor", "train", "pairs", f"arms.{arm}", "ablation"],
                                                      arm=arm, steps=st.ablation.steps)})
            results[arm]["seeds"].append(int(seed))
            results[arm]["runs"].append(res["plain"]["metrics"])
            results[arm]["predictions"].append(res["plain"]["predictions"])
    out = {"split": ev.bench.split, "ground_truth": st.relative(ev.bench.ds.gt_file(ev.bench.split)), "steps": st.ablation.steps, "profile": st.profile, "seed": st.seed, "arms": results}
    d = st.path("reports", "ablation")
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "results.json", out)
    return out
