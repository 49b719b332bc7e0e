"""Summary of a ``gpu_smoke`` pipeline run: throughput, loader share and GPU use of every training run.

    python -m icdlib.profile gpu_smoke && dvc repro     # the whole pipeline on one GPU (profiles/gpu_smoke.yaml)
    python experiments/gpu_smoke.py [--params params.yaml] [--skip 10] [--out reports/benchmarks/gpu_smoke.json]

It reads the DVCLive logs that :func:`icdlib.train.train` writes in each run folder the pipeline
makes under ``paths.runs`` (``trunk``, ``<arm>_s<seed>``, ``matcher_bce``, ``matcher_copynce``,
``ablation/<arm>_s<seed>``) and writes ``reports/benchmarks/gpu_smoke.json`` with a markdown
twin, ``gpu_smoke.md``. Per run: steps and batch size, pairs/s (median, p10, p90), the loader's
share of step time (mean, p90: the time blocked waiting for a batch over the step's wall time)
and the mean GPU utilisation (null, with the run's own reason, where none was logged: a CPU
run, or no NVML). The first ``--skip`` steps are left out of every statistic: they pay for
CUDA's kernel selection and the loader workers' start, not for training. It times nothing
itself (it reads a finished run), so ``make bench`` does not run it.

A run folder that another profile left behind under a name these params also use would be
summarised as if it were this profile's: a run whose logged ``train.steps`` or
``train.batch_size`` differs from what the params give is refused, naming its folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from icdlib.pipeline.stage import Stage, write_json, write_text
from icdlib.pipeline.training import MAIN_CHECKPOINTS, arm_seeds, run_names
from icdlib.train import resolve_run
from icdlib.train.loop import LIVE_DIR
from icdlib.train.telemetry import UNAVAILABLE_PARAM, live_series

ROOT = Path(__file__).resolve().parents[1]

SKIP = 10  # warm-up steps left out: a few percent of a few-hundred-step arm


def pipeline_runs(params_file: str | Path) -> dict[str, dict[str, Any]]:
    """``name -> {arm, seed, steps, batch_size}`` of every training run the pipeline makes under
    these params, named as its run folder under ``paths.runs`` (the main arms'
    :func:`~icdlib.pipeline.training.run_names`, then the ablation's ``ablation/<arm>_s<seed>``)."""
    st = Stage(params_file)
    src = st.params_path.name
    wanted: list[tuple[str, str, int, int | None]] = []  # name, arm, seed, steps override
    for arm in MAIN_CHECKPOINTS:  # trunk, the two descriptor arms, the two matchers
        if arm not in (st.params.get("arms") or {}):
            continue
        kind = resolve_run(st.params, arm, {}, src).train.kind
        wanted += [(name, arm, seed, None) for seed, name in zip(arm_seeds(st, arm, kind), run_names(params_file, arm))]
    wanted += [(f"ablation/{arm}_s{seed}", arm, seed, st.ablation.steps)
               for arm in st.ablation.arms for seed in st.ablation.seeds_of(arm)]
    out = {}
    for name, arm, seed, steps in wanted:
        sets = {"train.seed": int(seed), **({"train.steps": int(steps)} if steps is not None else {})}
        t = resolve_run(st.params, arm, sets, src).train
        out[name] = {"arm": arm, "seed": int(seed), "steps": t.steps, "batch_size": t.batch_size}
    return out


def _stats(values: pd.Series) -> dict[str, float]:
    v = values.to_numpy()
    return {"mean": float(v.mean()), "median": float(np.median(v)),
            "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90))}


def summarise_run(run_dir: Path, expected: dict[str, Any], skip: int, params_file: Path) -> dict[str, Any]:
    """The statistics of one run folder, after checking that it is the run these params make."""
    live = run_dir / LIVE_DIR
    logged = yaml.safe_load((live / "params.yaml").read_text()) if (live / "params.yaml").is_file() else {}
    for key in ("steps", "batch_size"):
        got = logged.get(f"train.{key}")
        if got is not None and int(got) != int(expected[key]):
            raise ValueError(f"{run_dir}: trained with train.{key}={got}, but {params_file} gives "
                             f"{expected[key]} for it: another profile's run; `dvc repro` these params first")
    pps = live_series(live, "pairs_per_s")
    if pps is None or pps.empty:
        raise FileNotFoundError(f"{live}: no train/pairs_per_s rows: has the run trained a step?")
    skipped = min(int(skip), int(pps.index.max()) - 1)  # the last step always counts

    def kept(series: pd.Series) -> pd.Series:
        return series[series.index > skipped]

    out: dict[str, Any] = {
        "arm": expected["arm"], "kind": logged.get("train.kind"), "seed": expected["seed"],
        "device": logged.get("device_name"), "world_size": logged.get("world_size"),
        "steps": int(pps.index.max()), "batch_size": expected["batch_size"], "steps_skipped": skipped,
        "pairs_per_s": {k: v for k, v in _stats(kept(pps)).items() if k != "mean"},
    }
    share = live_series(live, "loader_share")
    if share is None:
        out["loader_share"] = None
        out["loader_share_reason"] = "not logged: the run predates icdlib's train/loader_share"
    else:
        s = _stats(kept(share))
        out["loader_share"] = {"mean": s["mean"], "p90": s["p90"]}
        wait = live_series(live, "data_wait_s")
        out["data_wait_s_mean"] = float(kept(wait).mean()) if wait is not None else None
    util = live_series(live, "gpu_util")
    if util is not None and not kept(util).empty:
        out["gpu_util_mean"] = float(kept(util).mean())
    else:
        out["gpu_util_mean"] = None
        out["gpu_util_reason"] = logged.get(UNAVAILABLE_PARAM) or "no train/gpu_util rows logged"
    return out


def summarise(params_file: str | Path, skip: int = SKIP) -> dict[str, Any]:
    """The whole summary (the JSON file's content) of the runs under the params' ``paths.runs``."""
    params_file = Path(params_file).resolve()
    st = Stage(params_file)
    runs_dir = st.path("runs")
    wanted = pipeline_runs(params_file)
    found = {name: spec for name, spec in wanted.items() if (runs_dir / name / LIVE_DIR).is_dir()}
    if not found:
        raise FileNotFoundError(
            f"no training runs in {runs_dir}: none of {', '.join(wanted)} has a {LIVE_DIR}/ folder; "
            f"run the pipeline under {params_file} first (python -m icdlib.profile gpu_smoke && dvc repro)")
    runs = {name: summarise_run(runs_dir / name, spec, skip, params_file) for name, spec in found.items()}
    shares = [r["loader_share"]["mean"] for r in runs.values() if r["loader_share"] is not None]
    utils = [r["gpu_util_mean"] for r in runs.values() if r["gpu_util_mean"] is not None]
    logged = sorted({str(r["device"]) for r in runs.values() if r["device"]})
    return {
        "benchmark": "gpu_smoke",
        # the devices the runs logged they trained on (DVCLive param device_name); this machine's only
        # when no run logged one (runs from before icdlib logged it)
        "device": ", ".join(logged) if logged else (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                                   else "cpu"),
        "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
        "profile": st.profile, "seed": st.seed,
        "params": os.path.relpath(params_file, ROOT) if params_file.is_relative_to(ROOT) else params_file.name,
        "what": ("per training run of the pipeline: pairs/s, the loader's share of step time (host time blocked "
                 f"in the loader / step wall time) and NVML GPU utilisation, after the first {skip} steps"),
        "warmup_steps_skipped": int(skip),
        "runs": runs,
        "overall": {"runs": len(runs), "loader_share_mean": float(np.mean(shares)) if shares else None,
                    "gpu_util_mean": float(np.mean(utils)) if utils else None},
    }


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a short markdown table (``gpu_smoke.md``)."""
    def num(x: float | None, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    intro = (f"Profile `{summary['profile']}`, seed {summary['seed']}, torch {summary['torch']}, {summary['cpus']} "
             f"CPUs. Each run's statistics leave out its first {summary['warmup_steps_skipped']} warm-up steps (fewer "
             "in a shorter run: its last step always counts). Loader share: host time blocked waiting for a batch "
             "over the step's wall time. GPU utilisation: NVML's percent of time a kernel ran.")
    lines = [f"# GPU smoke run: {summary['device']}", "", intro,
             "", "| run | kind | steps | batch | pairs/s median | p10 | p90 | loader share mean | p90 | GPU util % |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in summary["runs"].items():
        p, ls = r["pairs_per_s"], r["loader_share"] or {}
        lines.append(f"| {name} | {r['kind'] or ''} | {r['steps']} | {r['batch_size']} | {p['median']:.0f} | "
                     f"{p['p10']:.0f} | {p['p90']:.0f} | {num(ls.get('mean'), '.3f')} | {num(ls.get('p90'), '.3f')} | "
                     f"{num(r['gpu_util_mean'], '.0f')} |")
    reasons = sorted({r["gpu_util_reason"] for r in summary["runs"].values() if r["gpu_util_mean"] is None})
    if reasons:
        lines += ["", "No GPU utilisation: " + "; ".join(reasons) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=str(ROOT / "params.yaml"), help="the params file the pipeline ran with")
    p.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "gpu_smoke.json"),
                   help="JSON summary; the markdown twin goes beside it (.md)")
    p.add_argument("--skip", type=int, default=SKIP, help="warm-up steps left out of each run's statistics")
    args = p.parse_args(argv)
    if args.skip < 0:
        p.error(f"--skip must be >= 0, got {args.skip}")
    try:
        summary = summarise(args.params, args.skip)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, summary)
    write_text(out.with_suffix(".md"), markdown(summary))
    for name, r in summary["runs"].items():
        ls = r["loader_share"]["mean"] if r["loader_share"] else float("nan")
        util = "n/a" if r["gpu_util_mean"] is None else f"{r['gpu_util_mean']:.0f} %"
        print(f"{name}: {r['pairs_per_s']['median']:.0f} pairs/s, loader share {ls:.3f}, GPU {util}", flush=True)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
