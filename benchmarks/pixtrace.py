"""Benchmark PixTrace: trace building + patch overlap against the cost of the edits.

Usage::

    python benchmarks/pixtrace.py                  # writes reports/benchmarks/pixtrace.json
    python benchmarks/pixtrace.py --pairs 16 --repeats 3 --out /tmp/pixtrace.json

Workload (per pair, the training-time work of CopyNCE targets): a 256 x 256 procedural
source; the query is ``icdlib.edits.apply(source, sample_chain(seed) + resize 224)``;
copy-vs-original references are the source resized to 224 x 224, copy-vs-copy references
get their own sampled chain + resize 224. Timed parts:

* ``edit_ms_per_pair``: applying the query chain and the reference resize to the images
  (what a data loader pays anyway);
* ``trace_overlap_ms_per_pair``: building both :class:`Trace` objects from the logged
  steps plus :func:`icdlib.pixtrace.overlap` at patch 16, one pair at a time;
* ``overlap_only_ms_per_pair`` / ``overlap_only_torch_path_ms_per_pair``: the overlap of
  prebuilt mappings alone, one pair at a time, by the compiled CPU kernel
  (:func:`icdlib.pixtrace.overlap_from_mappings`) and by the torch row-segment path on the
  CPU (:func:`icdlib.pixtrace.torch_counts.overlap_torch`, the path CUDA runs);
* ``batched_overlap_256_ms``: :func:`icdlib.pixtrace.overlap_batch` over 256 prebuilt
  pairs (transfer + overlap), with ``--batch-threads`` CPU threads (numba threads; set
  ``NUMBA_NUM_THREADS`` at least that high, or leave it unset).

Per-pair figures run single-threaded (``torch.set_num_threads(1)``; the CPU overlap then
runs its compiled kernel serially) and are timed in process CPU time
(``time.process_time``), which a busy machine does not inflate by waiting; the batched
figure is wall time (``time.perf_counter``; its CPU time, summed over threads, is given
beside it). The first call of every timed function is a warm-up (it loads or compiles
the numba kernels). Every figure is the median over ``--repeats`` repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numba
import torch
from tqdm import tqdm

from icdlib.data import render
from icdlib.edits import apply, sample_chain
from icdlib.pixtrace import (
    Trace,
    overlap,
    overlap_batch,
    overlap_from_mappings,
    transfer,
)
from icdlib.pixtrace.torch_counts import overlap_torch

OFFICIAL_DENSE_MS_PER_PAIR = 12.6  # official dense-table PixTrace, same work, this CPU class
SIZE, SOURCE, PATCH = 224, 256, 16
RESIZE = {"op": "resize", "width": SIZE, "height": SIZE}


def make_pairs(n: int, copy_vs_copy: bool, seed0: int = 0):
    """``n`` pairs of (source image, query spec, reference spec)."""
    pairs = []
    for i in tqdm(range(n), desc="sampling chains", leave=False):
        src = render("mixed", seed0 + i, SOURCE)
        q = sample_chain(seed0 + i) + [RESIZE]
        r = (sample_chain(10_000 + seed0 + i) if copy_vs_copy else []) + [RESIZE]
        pairs.append((src, q, r))
    return pairs


def _median_ms(fn, repeats: int, per: int = 1, clock=time.process_time) -> float:
    """Median over ``repeats`` of ``fn``'s time on ``clock``, ms per item (``per`` items)."""
    fn()  # warm-up (and numba compile / cache load)
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append((clock() - t) * 1e3 / per)
    return statistics.median(times)


def bench_pairs(pairs, repeats: int) -> dict:
    """Per-pair edit and trace+overlap times (single thread)."""
    edited = [(apply(src, q)[1], apply(src, r)[1]) for src, q, r in pairs]
    logged = [((qt.source_size, qt.steps), (rt.source_size, rt.steps)) for qt, rt in edited]

    def edits():
        for src, q, r in pairs:
            apply(src, q)
            apply(src, r)

    def traces_and_overlap():
        for (qs, qsteps), (rs, rsteps) in logged:
            overlap(Trace(qs, qsteps), Trace(rs, rsteps), PATCH)

    maps = [transfer(q, r) for q, r in edited]
    cpu = torch.device("cpu")

    def overlap_only():
        for m in maps:
            overlap_from_mappings([m], PATCH)

    def torch_path():
        for m in maps:
            overlap_torch([m], PATCH, cpu)

    n = len(pairs)
    masked = sum(bool(m.masks) for m in maps)
    return {
        "edit_ms_per_pair": _median_ms(edits, repeats, n),
        "trace_overlap_ms_per_pair": _median_ms(traces_and_overlap, repeats, n),
        "overlap_only_ms_per_pair": _median_ms(overlap_only, repeats, n),
        "overlap_only_torch_path_ms_per_pair": _median_ms(torch_path, repeats, n),
        "pairs": n,
        "pairs_with_masks": masked,
        "traces": edited,
    }


def bench_batched(traces, repeats: int, threads: int, device: str, n: int = 256) -> dict:
    """Wall and CPU ms of one :func:`overlap_batch` call over ``n`` pairs."""
    batch = [traces[i % len(traces)] for i in range(n)]
    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run():
        overlap_batch(batch, PATCH, device=device)
        sync()

    wall = _median_ms(run, repeats, clock=time.perf_counter)
    return {"wall_ms": wall, "cpu_ms": _median_ms(run, repeats)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=64, help="distinct pairs per workload")
    ap.add_argument("--repeats", type=int, default=7, help="repeats; medians are reported")
    ap.add_argument("--batch-threads", type=int, default=2, help="CPU threads, batched figure")
    ap.add_argument("--out", default="reports/benchmarks/pixtrace.json")
    args = ap.parse_args(argv)
    if args.pairs < 1 or args.repeats < 1 or args.batch_threads < 1:
        raise ValueError(f"pairs, repeats and batch-threads must be >= 1, got {vars(args)}")
    if args.batch_threads > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"batch-threads {args.batch_threads} > NUMBA_NUM_THREADS "
            f"{numba.config.NUMBA_NUM_THREADS}: unset it or raise it"
        )

    torch.set_num_threads(1)
    cvo = bench_pairs(make_pairs(args.pairs, copy_vs_copy=False), args.repeats)
    torch.set_num_threads(1)
    cvc = bench_pairs(make_pairs(args.pairs, copy_vs_copy=True), args.repeats)
    traces = cvo.pop("traces")
    cvc.pop("traces")
    batched = bench_batched(traces, args.repeats, args.batch_threads, "cpu")
    result = {
        "trace_overlap_ms_per_pair": cvo["trace_overlap_ms_per_pair"],
        "edit_ms_per_pair": cvo["edit_ms_per_pair"],
        "trace_overlap_share_of_edit": cvo["trace_overlap_ms_per_pair"] / cvo["edit_ms_per_pair"],
        "batched_overlap_256_ms": batched["wall_ms"],
        "batched_overlap_256_cpu_ms": batched["cpu_ms"],
        "batched_overlap_256_threads": args.batch_threads,
        "timer": {
            "per_pair": "time.process_time (process CPU time), 1 thread",
            "batched_overlap_256_ms": "time.perf_counter (wall), batch-threads numba threads",
            "batched_overlap_256_cpu_ms": "time.process_time, summed over threads",
        },
        "copy_vs_original": cvo,
        "copy_vs_copy": cvc,
        "official_dense_reference_ms_per_pair": OFFICIAL_DENSE_MS_PER_PAIR,
        "official_dense_reference_note": "official CopyNCE dense-table PixTrace, same per-pair "
        "work (both tables + overlap), on this class of CPU; quoted, not measured here",
        "workload": {"source": SOURCE, "size": SIZE, "patch": PATCH, "source_kind": "mixed"},
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numba": numba.__version__,
            "numba_threads_max": numba.config.NUMBA_NUM_THREADS,
            "per_pair_threads": 1,
            "load_average_1min": os.getloadavg()[0],  # > cpu_count: the machine was shared
        },
        "args": vars(args),
    }
    if torch.cuda.is_available():
        cuda = bench_batched(traces, args.repeats, 1, "cuda")
        result["batched_overlap_256_ms_cuda"] = cuda["wall_ms"]
        result["machine"]["cuda_device"] = torch.cuda.get_device_name()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
    return result


if __name__ == "__main__":
    main()
