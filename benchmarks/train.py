"""Training throughput of the descriptor arms, in pairs/s: compute alone and end to end.

    python benchmarks/train.py [--out reports/benchmarks/train.json] [--steps 8] [--e2e-steps 30]
                               [--batch 64] [--sources 512]

Keys ``cpu_end_to_end_pairs_per_s`` (the default CopyNCE arm of params.yaml, trained by
:func:`icdlib.train.train` with its real loader: kNN look-alike pairs, the profile's
autocast, pairs from the shared pair cache as the pipeline reads them) and
``cpu_compute_only_pairs_per_s`` (the same arm's optimiser steps on a fixed batch of 64
pairs) lead the file, with ``cpu_side_by_side_pairs_per_s``: two single-thread runs of that
arm at once, their pairs per second together (``launch.parallel_runs``, how a stage trains
its seeds and ablation runs). The sections below give each lever side by side, measured in
one run (fp32 against bf16 autocast; the live loader against the pair cache; one run with
both cores against two runs with one core each).

Compute alone: complete optimiser steps (forward, losses, backward, gradient clipping,
AdamW) of :mod:`icdlib.train`'s objectives on a fixed batch of real traced pairs:

- CPU, 2 threads: the default CPU descriptor (``vit_tiny_cpu``, 112 px) at 64 pairs,
  arms ``infonce`` and ``copynce`` in fp32 and in bf16 autocast, timed in interleaved
  rounds (median and best step), with the load average, since other processes may share
  the cores;
- CUDA, when available: ViT-S/16 at 224 px (``vit_small``, bf16 autocast), the same two
  arms at doubling batch sizes up to the largest that fits in GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import statistics
import sys
import time
from pathlib import Path

import torch

from icdlib.data import PROCEDURAL_KINDS, TracedPairs, collate, render
from icdlib.models.precision import bf16_enabled, cpu_has_amx, cpu_has_bf16, describe, probe_cpu_matmul
from icdlib.params import load_params
from icdlib.train import loop as T

ROOT = Path(__file__).resolve().parents[1]

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
    """One arm's objective + AdamW on ``device``; :meth:`step` times one optimiser step
    (bf16 autocast on CUDA, and on CPU when ``cpu_bf16``)."""

    def __init__(self, run: T.RunConfig, device: str, cpu_bf16: bool = False):
        torch.manual_seed(0)
        self.run, self.device = run, device
        self.objective = T.build_objective(run, T.build_run_model(run)).to(device).train()
        self.optimizer = T.build_optimizer(self.objective, run.train)
        self.params = [p for p in self.objective.parameters() if p.requires_grad]
        self.cuda = device.startswith("cuda")
        self.autocast = ("cuda" if self.cuda else "cpu", self.cuda or cpu_bf16)

    def step(self, batch: dict) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        tic = time.perf_counter()
        with torch.autocast(self.autocast[0], dtype=torch.bfloat16, enabled=self.autocast[1]):
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


def cpu_section(steps: int, tmp: Path, params: dict, rounds: int = 3, pairs: int = 64) -> dict:
    """Both arms in fp32 and in bf16 autocast on a fixed batch of ``pairs`` pairs, interleaved
    in ``rounds`` so that load from other processes hits all four alike."""
    torch.set_num_threads(2)
    out = {"threads": 2, "batch_pairs": pairs, "preset": "vit_tiny_cpu", "img_size": 112,
           "cpu_bf16_units": cpu_has_bf16(), "cpu_amx": cpu_has_amx(), "cpu_precision": describe("cpu"),
           "cpu_probe_seconds": probe_cpu_matmul() if cpu_has_bf16() else {},  # what bf16 would give here, now
           "loadavg_1min_before": os.getloadavg()[0]}
    runs = {arm: T.resolve_run(params, arm, {"train.batch_size": pairs}) for arm in ARMS}
    batch = batch_of(pair_pool(runs["copynce"], pairs, tmp / "cpu"), pairs, "cpu")
    steppers = {(arm, amp): Stepper(run, "cpu", cpu_bf16=amp == "bf16")
                for arm, run in runs.items() for amp in ("fp32", "bf16")}
    times: dict[tuple[str, str], list[float]] = {k: [] for k in steppers}
    for s in steppers.values():
        s.step(batch)  # warm-up
    for _ in range(rounds):
        for k, s in steppers.items():
            times[k] += [s.step(batch) for _ in range(max(1, steps // rounds))]
    for (arm, amp), t in times.items():
        med, best = statistics.median(t), min(t)
        key = arm if amp == "fp32" else f"{arm}_bf16"
        out[key] = {"step_s_median": med, "step_s_min": best, "pairs_per_s": pairs / med,
                    "pairs_per_s_best": pairs / best, "steps_timed": len(t), "autocast": amp}
        print(f"cpu {arm} {amp}: {pairs / med:.1f} pairs/s median, {pairs / best:.1f} best", flush=True)
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


def end_to_end_section(steps: int, tmp: Path, params: dict, n_sources: int = 512,
                       sets: dict | None = None) -> dict:
    """``icdlib.train.train`` of the default CopyNCE arm as the pipeline runs it (kNN look-alike
    pairs, so 2 pairs per item; the profile's autocast), timed step by step after warm-up: pairs
    made on the fly by the loader workers, and read from a pair cache built first (its build
    time reported apart: it is paid once per seed and shared by every arm of that seed).
    ``n_sources`` procedural sources; ``sets``: more ``--set`` keys of the arm (none by default)."""
    import numpy as np

    torch.set_num_threads(2)
    folder = tmp / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_sources):
        p = folder / f"T{i:06d}.jpg"
        render(PROCEDURAL_KINDS[i % len(PROCEDURAL_KINDS)], 5000 + i, 128).save(p, quality=90)
        paths.append(p)
    # a kNN table of the right shape (which look-alikes does not change the cost)
    rng = np.random.default_rng(0)
    neighbours = np.stack([rng.permutation(n_sources)[:17] for _ in range(n_sources)])
    out = {"sources": n_sources, "steps_timed": steps, "loadavg_1min_before": os.getloadavg()[0]}
    warm = 3
    base = {"train.steps": steps + warm, "train.checkpoint_every": 10**6, "train.warmup_steps": 1, "train.snapshots": [],
            **(sets or {})}
    for name, extra in (("live_loader", {}), ("pair_cache", {"train.pair_cache": str(tmp / "pairs")})):
        run = T.resolve_run(params, "copynce", {**base, **extra})
        if extra:
            from icdlib.data.cache import build_pair_cache

            ds = T.pair_dataset(run, paths, neighbours)
            tic = time.perf_counter()
            build_pair_cache(ds, T.schedule_keys(run.train, len(ds)), extra["train.pair_cache"], progress=False)
            built = time.perf_counter() - tic
            out["pair_cache_build_items_per_s"] = (steps + warm) * run.train.batch_size / built
        stamps: list[float] = []
        seen: list[int] = []
        T.train(run, tmp / f"run_{name}", image_paths=paths, progress=False, resume=False, neighbours=neighbours,
                callback=lambda done, m: (stamps.append(time.perf_counter()), seen.append(m["pairs_per_s"])))
        per_step = 2 * run.train.batch_size  # each item brings its look-alike's pair
        rate = steps * per_step / (stamps[-1] - stamps[warm - 1])
        out[name] = {"pairs_per_s": rate, "workers": run.train.workers, "items_per_step": run.train.batch_size,
                     "pairs_per_step": per_step, "img_size": run.pairs.size,
                     "cpu_bf16": bf16_enabled("cpu", True, run.train.amp_cpu)}
        print(f"end to end, {name}: {rate:.1f} pairs/s", flush=True)
    out["side_by_side"] = side_by_side(T.resolve_run(params, "copynce", {**base, "train.pair_cache": str(tmp / "pairs")}),
                                       tmp, paths, neighbours, steps, warm)
    out["side_by_side"]["speedup_vs_one_run"] = out["side_by_side"]["pairs_per_s"] / out["pair_cache"]["pairs_per_s"]
    print(f"end to end, two single-thread runs side by side: {out['side_by_side']['pairs_per_s']:.1f} pairs/s "
          f"together", flush=True)
    out["loadavg_1min_after"] = os.getloadavg()[0]
    return out


def _side_by_side_run(run, folder: str, paths, neighbours, warm: int, start, results) -> None:
    torch.set_num_threads(1)
    start.wait(timeout=600)  # both runs start their steps together, past both processes' imports
    stamps: list[float] = []
    T.train(run, folder, image_paths=paths, progress=False, resume=False, neighbours=neighbours,
            callback=lambda done, m: stamps.append(time.perf_counter()))
    results.put((stamps[warm - 1], stamps[-1], len(stamps) - warm))


def side_by_side(run, tmp: Path, paths, neighbours, steps: int, warm: int, n: int = 2) -> dict:
    """``n`` single-thread runs of ``run`` at once (``launch.parallel_runs``: how a stage trains its
    seeds and ablation runs), from the pair cache already built; their pairs per second together."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    results, start = ctx.Queue(), ctx.Barrier(n)
    procs = [ctx.Process(target=_side_by_side_run, args=(run, str(tmp / f"side_{i}"), paths, neighbours, warm,
                                                          start, results)) for i in range(n)]
    for p in procs:
        p.start()
    spans = []
    while len(spans) < n:  # a run that dies (or cannot start) fails the benchmark instead of hanging it
        try:
            spans.append(results.get(timeout=5))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"side by side: a training run exited with code {dead[0]}") from None
    for p in procs:
        p.join()
    per_step = 2 * run.train.batch_size
    rates = [k * per_step / (t1 - t0) for t0, t1, k in spans]
    return {"runs": n, "threads_per_run": 1, "pairs_per_s": float(sum(rates)), "per_run_pairs_per_s": rates}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "train.json"))
    p.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    p.add_argument("--max-batch", type=int, default=4096, help="CUDA: largest batch tried")
    p.add_argument("--skip-cpu", action="store_true", help="only the CUDA measurement")
    p.add_argument("--e2e-steps", type=int, default=30, help="end to end: timed training steps per loader")
    p.add_argument("--batch", type=int, default=None,
                   help="pairs per compute-only CPU step (default 64) and items per end-to-end step (default: the arm's)")
    p.add_argument("--sources", type=int, default=512, help="end to end: procedural source images")
    args = p.parse_args(argv)
    if min(args.steps, args.e2e_steps, args.batch or 1) < 1 or args.sources < 18:
        p.error("--steps, --e2e-steps and --batch must be >= 1, --sources >= 18 (17 look-alikes each)")
    import tempfile

    params = load_params(ROOT / "params.yaml")
    e2e_sets = {"train.batch_size": args.batch} if args.batch else {}

    result = {"benchmark": "train", "torch": torch.__version__, "python": platform.python_version(),
              "what": "cpu/cuda: optimiser steps on a fixed batch of real traced pairs (no loading); cpu_end_to_end: train() with its loader"}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_cpu:
            result["cpu"] = cpu_section(args.steps, Path(tmp), params, pairs=args.batch or 64)
            result["cpu_end_to_end"] = end_to_end_section(args.e2e_steps, Path(tmp), params, args.sources, e2e_sets)
            # the pipeline's arms read the shared pair cache unless paths.pair_cache is null
            chosen = "pair_cache" if (params.get("paths") or {}).get("pair_cache") else "live_loader"
            amp = "copynce_bf16" if bf16_enabled("cpu", True, T.resolve_run(params, "copynce").train.amp_cpu) else "copynce"
            result = {"cpu_end_to_end_pairs_per_s": result["cpu_end_to_end"][chosen]["pairs_per_s"],
                      "cpu_end_to_end_loader": chosen,
                      "cpu_side_by_side_pairs_per_s": result["cpu_end_to_end"]["side_by_side"]["pairs_per_s"],
                      "cpu_compute_only_pairs_per_s": result["cpu"][amp]["pairs_per_s"], **result}
        if torch.cuda.is_available():
            result["cuda"] = cuda_section(args.steps, Path(tmp), args.max_batch)
    out = Path(args.out)
    if out.exists():  # keep a section measured elsewhere (e.g. CUDA on a GPU machine)
        old = json.loads(out.read_text())
        kept = ("cpu", "cuda", "cpu_end_to_end", "cpu_end_to_end_pairs_per_s", "cpu_end_to_end_loader",
                "cpu_side_by_side_pairs_per_s", "cpu_compute_only_pairs_per_s")
        result = {**{k: v for k, v in old.items() if k in kept}, **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
