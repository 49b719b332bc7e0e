"""Throughput of the traced training loader, per CPU core.

    python benchmarks/loader.py [--samples 200] [--repeats 3] [--gpu-pairs-per-s 3440] [--against REV]

Writes ``reports/benchmarks/loader.json``: descriptor pairs (``icdlib.data.pairs.TracedPairs``)
per CPU-second of one core (process CPU time, one thread) at the CPU default (112 px input from 128 px sources) and at the
paper size (224 px input from 256 px sources; ``pairs_per_s_per_core_224`` at top level),
the time per pair of each stage (``stages_ms_per_pair``): ``decode`` (the source),
``edit`` (the edit chain, donors included), ``trace`` (both traces resized to the input,
the transfers and both overlap matrices), ``tensor`` (both images resized to the input
and normalised) and ``other`` (the rest: chain sampling, bookkeeping), and the number of
cores needed to feed a ViT-S/16 at 224 px training CopyNCE on one GPU at
``--gpu-pairs-per-s`` (default: the rate measured by ``benchmarks/train.py``).
Each setting is timed ``--repeats`` times and the fastest repeat is kept (a shared
machine only ever slows a repeat down). Before timing, a few warm-up pairs fill the
font and import caches, then ``gc.collect(); gc.freeze()`` parks the interpreter's
start-up objects, so a full garbage collection (100+ ms with torch loaded) cannot land
in one timed window by chance.

``--against REV`` times the loader of git revision ``REV`` side by side: a temporary
``git worktree`` of ``REV``, and both trees timed by this same harness in subprocesses
(``PYTHONPATH`` set to each tree) on the same sources, repeats interleaved (this tree,
REV, this tree, REV, ...) so a noisy machine slows both alike. The report gains an
``against`` block (REV's pairs/s, ms per pair and stages, per setting) and the speedups
``speedup_224`` (whole pair, fastest repeats) and ``edit_speedup_224`` (edit stage, the
fastest repeat of each). Stage boundaries are each tree's own (``TracedPairs(timing=True)``).

``edit_ops_224`` (this tree, one more pass at 224 px): each edit op's calls per pair, ms per
call and ms per pair, heaviest first, and the edit stage's time outside the ops (chain
sampling, spec checks, building the trace): where the next speed-up has to come from.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch
from tqdm.auto import tqdm

from icdlib.data import PROCEDURAL_KINDS, PairsConfig, TracedPairs, render
from icdlib.params import to_dict

OUT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "loader.json"
SETTINGS = {"default_112": (128, 112), "paper_224": (256, 224)}  # name -> (source px, input px)
STAGES = ("decode", "edit", "trace", "tensor", "other")
TARGET_CORES_PER_GPU = 16  # the target: one 16-core share of a GPU node feeds one H200


def write_sources(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` procedural JPEG sources (quality 90, as the benchmark builder writes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"T{i:06d}.jpg"
        render(PROCEDURAL_KINDS[i % len(PROCEDURAL_KINDS)], 1000 + i, size).save(p, quality=90)
        paths.append(p)
    return paths


def setting_config(name: str) -> PairsConfig:
    """The pairs setting ``name`` times: its input size (``SETTINGS``), 16 px patches."""
    return PairsConfig(size=SETTINGS[name][1], patch=16)


def sources_in(folder: str | Path) -> list[Path]:
    """The JPEG sources :func:`write_sources` left in ``folder``, in order."""
    return sorted(Path(folder).glob("*.jpg"))


def measure(paths: list[Path], cfg: PairsConfig, samples: int, repeats: int = 1) -> dict:
    """The fastest of ``repeats`` timings of ``samples`` pairs (same pairs each time)."""
    ds = _warm(paths, cfg)
    return best_of([_timed(ds, paths, cfg, samples) for _ in range(max(1, repeats))])


def _warm(paths: list[Path], cfg: PairsConfig) -> TracedPairs:
    ds = TracedPairs(paths, cfg, seed=0, timing=True)
    for i in range(5):  # warm-up: font and import caches
        ds.sample(i % len(paths), epoch=99)
    gc.collect()
    gc.freeze()  # start-up objects leave the collector's generations (see the module docstring)
    return ds


def best_of(runs: list[dict]) -> dict:
    """The fastest run, with every run's ms per pair and the fastest edit stage of any run."""
    best = dict(min(runs, key=lambda r: r["ms_per_pair"]))
    best["repeats_ms_per_pair"] = [round(r["ms_per_pair"], 3) for r in runs]
    best["best_edit_ms_per_pair"] = min(r["ms_per_pair_by_stage"]["edit"] for r in runs)
    return best


def interleaved(repeats: int, trees: tuple[str, ...] = ("this", "against")) -> list[str]:
    """The order of timed runs: one of each tree per round, ``repeats`` rounds (A, B, A, B, ...)."""
    return [t for _ in range(max(1, repeats)) for t in trees]


def against_block(rev: str, sha: str, this: dict, other: dict) -> dict:
    """The report's ``against`` block and top-level speedups from per-setting results of
    this tree (``this``) and of revision ``rev`` (``other``), as :func:`best_of` gives them."""
    block = {
        "rev": rev, "commit": sha,
        "pairs_per_s_per_core_224": round(other["paper_224"]["pairs_per_s_per_core"], 2),
        "ms_per_pair_224": round(other["paper_224"]["ms_per_pair"], 3),
        "stages_ms_per_pair": {name: r["ms_per_pair_by_stage"] for name, r in other.items()},
        "repeats_ms_per_pair": {name: r["repeats_ms_per_pair"] for name, r in other.items()},
    }
    speed = {}
    for name, r in this.items():
        tag = name.split("_")[-1]
        speed[f"speedup_{tag}"] = round(other[name]["ms_per_pair"] / r["ms_per_pair"], 3)
        speed[f"edit_speedup_{tag}"] = round(other[name]["best_edit_ms_per_pair"] / r["best_edit_ms_per_pair"], 3)
    block.update(speed)
    return {"against": block, **{k: v for k, v in speed.items() if k.endswith("_224")}}


def _child(args) -> None:
    """Time one repeat of one setting of the icdlib on ``PYTHONPATH``; print JSON."""
    import icdlib

    cv2.setNumThreads(1)  # before any OpenCV call: one core, no thread pool
    torch.set_num_threads(1)
    paths, cfg = sources_in(args.sources), setting_config(args.child)
    r = _timed(_warm(paths, cfg), paths, cfg, args.samples)
    r["icdlib"] = str(Path(icdlib.__file__).parent)
    print("RESULT " + json.dumps(r))


def _run_child(tree: Path, setting: str, sources: Path, samples: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OPENCV_FOR_THREADS_NUM="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", setting, "--sources", str(sources),
           "--samples", str(samples)]
    out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"timing {tree} ({setting}) failed:\n{out.stderr[-3000:]}")
    r = json.loads(line[-1][len("RESULT "):])
    if Path(r.pop("icdlib")).resolve() != (tree / "icdlib").resolve():  # checked, not reported (a local path)
        raise RuntimeError(f"timing {tree}: imported icdlib from another tree, not {tree}")
    return r


def side_by_side(rev: str, folders: dict[str, Path], samples: int, repeats: int) -> tuple[dict, dict, str]:
    """Per-setting :func:`best_of` results of this tree and of ``rev`` (a temporary worktree)."""
    root = Path(__file__).resolve().parents[1]
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=root, check=True,
                         capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "against"
        subprocess.run(["git", "worktree", "add", "--detach", str(wt), sha], cwd=root, check=True, capture_output=True)
        try:
            trees = {"this": root, "against": wt}
            runs = {t: {name: [] for name in SETTINGS} for t in trees}
            for name in SETTINGS:
                for t in tqdm(interleaved(repeats), desc=f"{name}: this tree / {rev}", leave=False):
                    runs[t][name].append(_run_child(trees[t], name, folders[name], samples))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=root, capture_output=True, check=False)
    best = {t: {name: best_of(rs) for name, rs in per.items()} for t, per in runs.items()}
    return best["this"], best["against"], sha


def _timed(ds: TracedPairs, paths: list[Path], cfg: PairsConfig, samples: int) -> dict:
    ds.stats.clear()
    t0, w0 = time.process_time(), time.perf_counter()
    for i in tqdm(range(samples), desc=f"{cfg.size} px", leave=False):
        ds.sample(i % len(paths), epoch=i // len(paths))
    wall = time.process_time() - t0  # CPU seconds of this one-thread process: robust to a busy machine
    elapsed = time.perf_counter() - w0
    stages = {k: ds.stats.get(k, 0.0) / samples * 1000 for k in STAGES if k != "other"}
    stages["other"] = wall / samples * 1000 - sum(stages.values())
    return {
        "pairs_per_s_per_core": samples / wall,
        "ms_per_pair": wall / samples * 1000,
        "wall_s": round(elapsed, 2),
        "cpu_s": round(wall, 2),
        "ms_per_pair_by_stage": {k: round(v, 3) for k, v in stages.items()},
        "share_by_stage": {k: round(v / (wall / samples * 1000), 3) for k, v in stages.items()},
        "config": to_dict(cfg),
    }


@contextlib.contextmanager
def timed_ops():
    """Within the block every registered edit op counts its calls and CPU seconds into the
    yielded ``{name: [calls, seconds]}``; the registry is restored afterwards."""
    from icdlib.edits.registry import OPS

    saved = dict(OPS)
    acc: dict[str, list] = {name: [0, 0.0] for name in saved}

    def counted(op):
        def fn(img, params, ctx, _fn=op.fn, _tally=acc[op.name]):
            t0 = time.process_time()
            try:
                return _fn(img, params, ctx)
            finally:
                _tally[0] += 1
                _tally[1] += time.process_time() - t0
        return dataclasses.replace(op, fn=fn)

    OPS.update({name: counted(op) for name, op in saved.items()})
    try:
        yield acc
    finally:
        OPS.clear()
        OPS.update(saved)


def edit_ops(paths: list[Path], cfg: PairsConfig, samples: int) -> dict:
    """Where the edit stage's time goes: per op, calls per pair, ms per call and ms per pair
    (heaviest first), and the stage's time outside the ops (chain sampling, spec checks, the
    engine's PIL/array conversions where a PIL op meets an array op, building the trace) --
    one extra timed pass of ``samples`` pairs."""
    ds = _warm(paths, cfg)
    with timed_ops() as acc:
        r = _timed(ds, paths, cfg, samples)
    by_op = {name: {"calls_per_pair": round(n / samples, 3), "ms_per_call": round(sec / n * 1000, 3),
                    "ms_per_pair": round(sec / samples * 1000, 3)}
             for name, (n, sec) in sorted(acc.items(), key=lambda kv: -kv[1][1]) if n}
    inside = sum(sec for _, sec in acc.values()) / samples * 1000
    edit = r["ms_per_pair_by_stage"]["edit"]
    return {"edit_ms_per_pair": edit, "ops_ms_per_pair": round(inside, 3),
            "outside_ops_ms_per_pair": round(edit - inside, 3), "by_op": by_op}


def measured_gpu_rate(path: Path = OUT.parent / "train.json") -> tuple[float, str]:
    """Best CopyNCE pairs/s of ViT-S/16 at 224 px measured on a GPU by benchmarks/train.py."""
    try:
        cuda = json.loads(path.read_text())["cuda"]
        runs = cuda["by_batch"]["copynce"]
        batch, best = max(((b, r["pairs_per_s"]) for b, r in runs.items()), key=lambda t: t[1])
        return float(best), f"measured on {cuda['device']} (bf16, batch {batch}) by benchmarks/train.py"
    except (OSError, KeyError, ValueError):
        return 2000.0, "assumed (no GPU measurement in reports/benchmarks/train.json)"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200, help="pairs timed per setting")
    ap.add_argument("--repeats", type=int, default=3, help="timings per setting; the fastest is kept")
    ap.add_argument("--gpu-pairs-per-s", type=float, default=None,
                    help="ViT-S/16 224 px training throughput of one GPU, pairs/s (default: the CopyNCE "
                         "figure measured by benchmarks/train.py in reports/benchmarks/train.json, else 2000)")
    ap.add_argument("--against", default=None, metavar="REV",
                    help="also time git revision REV side by side (temporary worktree, interleaved repeats)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)  # internal: one timed repeat
    ap.add_argument("--sources", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    gpu_source = "given on the command line"
    if args.gpu_pairs_per_s is None:
        args.gpu_pairs_per_s, gpu_source = measured_gpu_rate()
    torch.set_num_threads(1)  # one core, as one DataLoader worker
    cv2.setNumThreads(1)
    results, extra = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: Path(tmp) / name for name in SETTINGS}
        if args.against:
            for name, (src_px, _) in SETTINGS.items():
                write_sources(folders[name], 64, src_px)
            results, other, sha = side_by_side(args.against, folders, args.samples, args.repeats)
            extra = against_block(args.against, sha, results, other)
        else:
            for name, (src_px, _) in SETTINGS.items():
                paths = write_sources(folders[name], 64, src_px)
                results[name] = measure(paths, setting_config(name), args.samples, args.repeats)
        for name, (src_px, _) in SETTINGS.items():
            results[name]["source_px"] = src_px
        ops = edit_ops(sources_in(folders["paper_224"]), setting_config("paper_224"), args.samples)
    per_core = results["paper_224"]["pairs_per_s_per_core"]
    cores = args.gpu_pairs_per_s / per_core
    report = {
        "pairs_per_s_per_core_224": round(per_core, 2),
        "ms_per_pair_224": round(results["paper_224"]["ms_per_pair"], 3),
        "stages_ms_per_pair": {name: r["ms_per_pair_by_stage"] for name, r in results.items()},
        "cores_needed_for_one_gpu_224": round(cores, 1),
        "target_cores_per_gpu": TARGET_CORES_PER_GPU,
        "meets_target": bool(cores <= TARGET_CORES_PER_GPU),
        **extra,
        "edit_ops_224": ops,
        "settings": results,
        "assumed_gpu_pairs_per_s": args.gpu_pairs_per_s,
        "gpu_assumption": "ViT-S/16 at 224 px, CopyNCE descriptor pairs (2 images) per second trained on one "
                          f"GPU: {gpu_source}",
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads()},
        "command": "python benchmarks/loader.py "
                   + f"--samples {args.samples} --repeats {args.repeats} --gpu-pairs-per-s {args.gpu_pairs_per_s:g}"
                   + (f" --against {args.against}" if args.against else ""),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name}: {r['pairs_per_s_per_core']:.1f} pairs/s/core; ms by stage {r['ms_per_pair_by_stage']}")
    print(f"cores to feed one GPU at {args.gpu_pairs_per_s:g} pairs/s (224 px): {report['cores_needed_for_one_gpu_224']} "
          f"(target <= {TARGET_CORES_PER_GPU})")
    if extra:
        a = extra["against"]
        print(f"against {args.against} ({a['commit'][:7]}): {a['pairs_per_s_per_core_224']} pairs/s/core at 224 px; "
              f"speedup {extra['speedup_224']}x per pair, {extra['edit_speedup_224']}x in the edit stage")
    return report


if __name__ == "__main__":
    main()
