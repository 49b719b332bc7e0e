"""Training throughput of the descriptor arms, in pairs/s: compute alone and end to end.

    python benchmarks/train.py [--out reports/benchmarks/train.json] [--steps 8]

Keys ``cpu_end_to_end_pairs_per_s`` (the default CopyNCE arm of params.yaml, trained by
:func:`icdlib.train.train` with its real loader) and ``cpu_compute_only_pairs_per_s``
(the same arm's optimiser steps on a fixed batch) lead the file; the sections below
give each lever side by side, measured in one run.

Compute alone: complete optimiser steps (forward, losses, backward, gradient clipping,
AdamW) of :mod:`icdlib.train`'s objectives on a fixed batch of real traced pairs:

- CPU, 2 threads: the default CPU descriptor (``vit_tiny_cpu``, 112 px) at batch 64,
  arms ``infonce`` and ``copynce`` timed in interleaved rounds (median and best step),
  with the load average, since other processes may share the cores;
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from icdlib.data import PROCEDURAL_KINDS, TracedPairs, collate, render
from icdlib.params import load_params
from icdlib.train import loop as T

ARMS = ("infonce", "copynce")
ARM_DEFS = {"arms": load_params(ROOT / "params.yaml")["arms"]}  # the arms' only definition


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


class Stepper:
    """One arm's objective + AdamW on ``device``; :meth:`step` times one optimiser step."""

    def __init__(self, run: T.RunConfig, device: str):
        torch.manual_seed(0)
        self.run, self.device = run, device
        self.objective = T._objective(run, T._build_model(run)).to(device).train()
        self.optimizer = T._optimizer(self.objective, run.train)
        self.params = [p for p in self.objective.parameters() if p.requires_grad]
        self.cuda = device.startswith("cuda")

    def step(self, batch: dict) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        tic = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
            loss = self.objective(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.run.train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - tic


def time_steps(run: T.RunConfig, batch: dict, device: str, steps: int, warmup: int) -> list[float]:
    """Seconds of each of ``steps`` optimiser steps after ``warmup`` untimed ones."""
    stepper = Stepper(run, device)
    return [stepper.step(batch) for _ in range(warmup + steps)][warmup:]


def cpu_section(steps: int, tmp: Path, params: dict, rounds: int = 3) -> dict:
    """Both arms, interleaved in ``rounds`` so that load from other processes hits both."""
    torch.set_num_threads(2)
    out = {"threads": 2, "batch_size": 64, "preset": "vit_tiny_cpu", "img_size": 112,
           "loadavg_1min_before": os.getloadavg()[0]}  # other processes share these cores
    runs = {arm: T.resolve_run(params, arm, {"train.batch_size": 64}) for arm in ARMS}
    batch = batch_of(pair_pool(runs["copynce"], 64, tmp / "cpu"), 64, "cpu")
    steppers = {arm: Stepper(run, "cpu") for arm, run in runs.items()}
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for s in steppers.values():
        s.step(batch)  # warm-up
    for _ in range(rounds):
        for arm, s in steppers.items():
            times[arm] += [s.step(batch) for _ in range(max(1, steps // rounds))]
    for arm, t in times.items():
        med, best = statistics.median(t), min(t)
        out[arm] = {"step_s_median": med, "step_s_min": best, "pairs_per_s": 64 / med,
                    "pairs_per_s_best": 64 / best, "steps_timed": len(t)}
        print(f"cpu {arm}: {64 / med:.1f} pairs/s median, {64 / best:.1f} best", flush=True)
    out["loadavg_1min_after"] = os.getloadavg()[0]
    return out


def cuda_section(steps: int, tmp: Path, max_batch: int) -> dict:
    sets = {"descriptor.preset": "vit_small", "pairs.size": 224, "pairs.patch": 16}
    out = {"device": torch.cuda.get_device_name(0), "preset": "vit_small", "img_size": 224,
           "amp": "bf16", "max_batch_tried": max_batch, "by_batch": {}}
    pool = pair_pool(T.resolve_run(ARM_DEFS, "copynce", sets), 64, tmp / "cuda")
    for arm in ARMS:
        run = T.resolve_run(ARM_DEFS, arm, sets)
        rows, b, stopped_by = {}, 64, "max_batch"
        while b <= max_batch:
            torch.cuda.reset_peak_memory_stats()
            try:
                t = time_steps(run, batch_of(pool, b, "cuda"), "cuda", steps, warmup=2)
            except torch.OutOfMemoryError:
                stopped_by = "out_of_memory"
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
            out[arm] = {"largest_batch": largest, "stopped_by": stopped_by, **rows[largest]}
    return out


def end_to_end_section(steps: int, tmp: Path, params: dict) -> dict:
    """``icdlib.train.train`` of the default CopyNCE arm, timed step by step after warm-up:
    pairs made on the fly by the loader workers, and read from a pair cache built first
    (its build time reported apart: it is paid once per seed and shared by every arm)."""
    torch.set_num_threads(2)
    n_sources = 512
    folder = tmp / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_sources):
        p = folder / f"T{i:06d}.jpg"
        render(PROCEDURAL_KINDS[i % len(PROCEDURAL_KINDS)], 5000 + i, 128).save(p, quality=90)
        paths.append(p)
    out = {"sources": n_sources, "steps_timed": steps, "loadavg_1min_before": os.getloadavg()[0]}
    warm = 3
    base = {"train.steps": steps + warm, "train.checkpoint_every": 10**6, "train.warmup_steps": 1}
    for name, extra in (("live_loader", {}), ("pair_cache", {"train.pair_cache": str(tmp / "pairs")})):
        run = T.resolve_run(params, "copynce", {**base, **extra})
        if extra:
            from icdlib.data.cache import build_pair_cache

            ds = T._dataset(run, paths, None)
            tic = time.perf_counter()
            build_pair_cache(ds, T.schedule_keys(run.train, len(ds)), extra["train.pair_cache"], progress=False)
            built = time.perf_counter() - tic
            out["pair_cache_build_pairs_per_s"] = (steps + warm) * run.train.batch_size / built
        stamps: list[float] = []
        T.train(run, tmp / f"run_{name}", image_paths=paths, progress=False, resume=False,
                callback=lambda done, m, stamps=stamps: stamps.append(time.perf_counter()))
        rate = steps * run.train.batch_size / (stamps[-1] - stamps[warm - 1])
        out[name] = {"pairs_per_s": rate, "workers": run.train.workers, "batch_size": run.train.batch_size,
                     "img_size": run.pairs.size}
        print(f"end to end, {name}: {rate:.1f} pairs/s", flush=True)
    out["loadavg_1min_after"] = os.getloadavg()[0]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "train.json"))
    p.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    p.add_argument("--max-batch", type=int, default=4096, help="CUDA: largest batch tried")
    p.add_argument("--skip-cpu", action="store_true", help="only the CUDA measurement")
    p.add_argument("--e2e-steps", type=int, default=30, help="end to end: timed training steps per loader")
    args = p.parse_args(argv)
    import tempfile


    params = load_params(ROOT / "params.yaml")

    result = {"benchmark": "train", "torch": torch.__version__, "python": platform.python_version(),
              "what": "complete optimiser steps on a fixed batch of real traced pairs; no data loading"}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_cpu:
            result["cpu"] = cpu_section(args.steps, Path(tmp), params)
            result["cpu_end_to_end"] = end_to_end_section(args.e2e_steps, Path(tmp), params)
            chosen = "pair_cache" if T.resolve_run(params, "copynce").train.pair_cache else "live_loader"
            result = {"cpu_end_to_end_pairs_per_s": result["cpu_end_to_end"][chosen]["pairs_per_s"],
                      "cpu_end_to_end_loader": chosen,
                      "cpu_compute_only_pairs_per_s": result["cpu"]["copynce"]["pairs_per_s"], **result}
        if torch.cuda.is_available():
            result["cuda"] = cuda_section(args.steps, Path(tmp), args.max_batch)
    out = Path(args.out)
    if out.exists():  # keep a section measured elsewhere (e.g. CUDA on a GPU machine)
        old = json.loads(out.read_text())
        kept = ("cpu", "cuda", "cpu_end_to_end", "cpu_end_to_end_pairs_per_s", "cpu_end_to_end_loader",
                "cpu_compute_only_pairs_per_s")
        result = {**{k: v for k, v in old.items() if k in kept}, **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
