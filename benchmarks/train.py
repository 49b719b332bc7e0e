"""Training throughput: optimiser steps per second of the descriptor arms, in pairs/s.

    python benchmarks/train.py [--out reports/benchmarks/train.json] [--steps 8]

Times complete optimiser steps (forward, losses, backward, gradient clipping, AdamW) of
:mod:`icdlib.train`'s objectives on a fixed batch of real traced pairs, so the numbers
exclude data loading (see benchmarks/loader.py for that side). Reported per arm:

- CPU, 2 threads: the default CPU descriptor (``vit_tiny_cpu``, 112 px) at batch 64,
  arms ``infonce`` and ``copynce``;
- CUDA, when available: ViT-S/16 at 224 px (``vit_small``, bf16 autocast), the same two
  arms at doubling batch sizes up to the largest that fits in GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from icdlib import train as T  # noqa: E402
from icdlib.pairs import TracedPairs, collate  # noqa: E402
from icdlib.sources import PROCEDURAL_KINDS, render  # noqa: E402

ARMS = ("infonce", "copynce")


def pair_pool(run: T.RunConfig, n: int, folder: Path) -> list[dict]:
    """``n`` real traced pairs from procedural sources (edits + PixTrace overlaps)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"T{i:06d}.png"
        render(PROCEDURAL_KINDS[i % len(PROCEDURAL_KINDS)], i, 160).save(p)
        paths.append(p)
    ds = TracedPairs(paths, run.pairs, seed=0)
    return [ds[(i, 0)] for i in range(n)]


def batch_of(pool: list[dict], size: int, device: str) -> dict:
    items = [pool[i % len(pool)] for i in range(size)]
    return {k: v.to(device) for k, v in collate(items).items()}


def time_steps(run: T.RunConfig, batch: dict, device: str, steps: int, warmup: int) -> list[float]:
    """Seconds per optimiser step (median-ready list) of ``run``'s objective on ``batch``."""
    torch.manual_seed(0)
    objective = T._objective(run, T._build_model(run)).to(device).train()
    optimizer = T._optimizer(objective, run.train)
    params = [p for p in objective.parameters() if p.requires_grad]
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    times = []
    for i in range(warmup + steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        tic = time.perf_counter()
        with amp:
            loss = objective(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, run.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - tic)
    return times


def cpu_section(steps: int, tmp: Path) -> dict:
    torch.set_num_threads(2)
    out = {"threads": 2, "batch_size": 64, "preset": "vit_tiny_cpu", "img_size": 112,
           "loadavg_1min_before": os.getloadavg()[0]}  # other processes share these cores
    pool = None
    for arm in ARMS:
        run = T.resolve_run({}, arm, {"train.batch_size": 64})
        if pool is None:
            pool = pair_pool(run, 64, tmp / "cpu")
        t = time_steps(run, batch_of(pool, 64, "cpu"), "cpu", steps, warmup=2)
        med = statistics.median(t)
        out[arm] = {"step_s_median": med, "pairs_per_s": 64 / med, "steps_timed": len(t)}
        print(f"cpu {arm}: {64 / med:.1f} pairs/s ({med * 1e3:.0f} ms/step)", flush=True)
    out["loadavg_1min_after"] = os.getloadavg()[0]
    return out


def cuda_section(steps: int, tmp: Path, max_batch: int) -> dict:
    sets = {"descriptor.preset": "vit_small", "pairs.size": 224, "pairs.patch": 16}
    out = {"device": torch.cuda.get_device_name(0), "preset": "vit_small", "img_size": 224,
           "amp": "bf16", "by_batch": {}}
    pool = pair_pool(T.resolve_run({}, "copynce", sets), 64, tmp / "cuda")
    for arm in ARMS:
        run = T.resolve_run({}, arm, sets)
        rows, b = {}, 64
        while b <= max_batch:
            torch.cuda.reset_peak_memory_stats()
            try:
                t = time_steps(run, batch_of(pool, b, "cuda"), "cuda", steps, warmup=2)
            except torch.OutOfMemoryError:
                break
            finally:
                torch.cuda.empty_cache()
            med = statistics.median(t)
            rows[b] = {"step_s_median": med, "pairs_per_s": b / med,
                       "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
            print(f"cuda {arm} b={b}: {b / med:.0f} pairs/s", flush=True)
            b *= 2
        out["by_batch"][arm] = rows
        if rows:
            largest = max(rows)
            out[arm] = {"largest_batch": largest, **rows[largest]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "train.json"))
    p.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    p.add_argument("--max-batch", type=int, default=4096, help="CUDA: largest batch tried")
    p.add_argument("--skip-cpu", action="store_true", help="only the CUDA measurement")
    args = p.parse_args(argv)
    import tempfile

    result = {"benchmark": "train", "torch": torch.__version__, "python": platform.python_version(),
              "what": "complete optimiser steps on a fixed batch of real traced pairs; no data loading"}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_cpu:
            result["cpu"] = cpu_section(args.steps, Path(tmp))
        if torch.cuda.is_available():
            result["cuda"] = cuda_section(args.steps, Path(tmp), args.max_batch)
    out = Path(args.out)
    if out.exists():  # keep a section measured elsewhere (e.g. CUDA on a GPU machine)
        old = json.loads(out.read_text())
        result = {**{k: v for k, v in old.items() if k in ("cpu", "cuda")}, **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
