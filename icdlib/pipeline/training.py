"""The training stages: each named arm trained into ``paths.models``, and its DVCLive curves.

Which runs an arm makes, where they start and where their files go: :mod:`icdlib.pipeline.arms`
(its names are importable from here too)."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

import torch

from icdlib.atomic import atomic_path
from icdlib.checkpoints import load_backbone_weights
from icdlib.locks import HAVE_LOCKS
from icdlib.models import build_descriptor
from icdlib.pipeline.arms import (  # noqa: F401  (MAIN_CHECKPOINTS, snapshots, start_sets: re-exported)
    MAIN_CHECKPOINTS, TRUNK, arm_seeds, checkpoint_name, copy_trunk_start, curve_path, run_names, seed_checkpoint,
    snapshots, stage_run, start_sets, write_start,
)
from icdlib.pipeline.stage import Stage
from icdlib.train import prepare, resolve_run, train


def train_arm(
    params_file: str | Path,
    arm: str,
    *,
    seed: int | None = None,
    steps: int | None = None,
    run_name: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train one named arm (``params.yaml: arms``) and copy its final checkpoint to ``out``.

    The run folder ``paths.runs/<run_name>`` keeps the resumable checkpoint and DVCLive
    logs: an interrupted stage continues where it stopped. Where the arm starts and
    what it mines kNN negatives with: :func:`start_sets` (keys the arm or a ``--set``
    already gives win).
    """
    st = Stage(params_file)
    run, sets = stage_run(st, arm, seed, steps)
    run_dir = st.path("runs", run_name or arm)
    print(f"{run_name or arm}: {run.train.lr_source()}", flush=True)
    if st.launch.nproc_per_node > 1 or st.launch.nnodes > 1:
        final = _torchrun(st, arm, run_dir, sets.items())
    else:
        final = train(run, run_dir, data_root=st.path("data"), resume="auto", progress=progress)
    dest = Path(out) if out is not None else st.path("models", checkpoint_name(arm))
    with atomic_path(dest) as tmp:
        shutil.copyfile(final, tmp)
    return dest


@dataclass(frozen=True)
class Job:
    """One training run of a stage: :func:`train_arm`'s arguments."""

    arm: str
    seed: int
    run_name: str
    out: Path | None = None
    steps: int | None = None


def parallel_slots(st: Stage) -> int:
    """How many runs of a stage train side by side: ``launch.parallel_runs``, at most one per
    core; one under DDP, with CUDA, or without file locks."""
    if st.launch.nproc_per_node > 1 or st.launch.nnodes > 1 or torch.cuda.is_available() or not HAVE_LOCKS:
        return 1
    return max(1, min(int(st.launch.parallel_runs), len(os.sched_getaffinity(0))))


def run_jobs(params_file: str | Path, jobs: Sequence[Job], progress: bool = True) -> list[Path]:
    """:func:`train_arm` of every job; their checkpoints, in order.

    With more than one slot (:func:`parallel_slots`) the jobs run in waves of that many
    processes, the cores split evenly between a wave's runs: on a 2-core CPU two
    single-thread runs make about 1.3x the pairs per second of one two-thread run
    (``docs/protocol.md``). Before the first wave this process mines each run's kNN table
    and builds its pair store, one run at a time with every core (:func:`icdlib.train.prepare`):
    work that two single-thread runs would otherwise do at once, more slowly. A run's numbers
    depend on its thread count only through float rounding; its seed fixes its data, init
    and order either way.
    """
    st = Stage(params_file)
    slots = parallel_slots(st)
    if slots == 1 or len(jobs) < 2:
        return [train_arm(params_file, j.arm, seed=j.seed, steps=j.steps, run_name=j.run_name, out=j.out,
                          progress=progress) for j in jobs]
    for j in jobs:  # kNN mining and pair stores first, one run at a time, with every core
        try:
            prepare(stage_run(st, j.arm, j.seed, j.steps)[0], st.path("runs", j.run_name),
                    data_root=st.path("data"), progress=progress)
        except Exception as e:
            raise RuntimeError(f"training run(s) failed: {j.run_name}: {type(e).__name__}: {e}") from None
    cores = len(os.sched_getaffinity(0))
    ctx = multiprocessing.get_context("spawn")
    out: list[Path] = []
    for w in range(0, len(jobs), slots):
        wave = list(jobs[w : w + slots])
        threads = max(1, cores // len(wave))
        results = ctx.Queue()
        procs = [ctx.Process(target=_job_process, args=(str(params_file), j, threads, results), name=j.run_name)
                 for j in wave]
        tic = time.perf_counter()
        for p in procs:
            p.start()
        done = _collect(procs, results, tic, threads)
        failed = [f"{name}: {value}" for name, (ok, value) in done.items() if not ok]
        if failed:
            raise RuntimeError("training run(s) failed: " + "; ".join(failed))
        out += [Path(done[j.run_name][1]) for j in wave]
    return out


def _collect(procs: list, results, tic: float, threads: int) -> dict[str, tuple[bool, str]]:
    """Wait for a wave: run name -> (ok, checkpoint or error); a process that died without
    a word (killed, out of memory) is reported with its exit code."""
    done: dict[str, tuple[bool, str]] = {}
    while len(done) < len(procs):
        try:
            name, ok, value = results.get(timeout=2.0)
        except queue.Empty:
            for p in procs:
                if p.name not in done and not p.is_alive() and p.exitcode != 0 and results.empty():
                    done[p.name] = (False, f"process ended with exit code {p.exitcode}")
            continue
        if name in done:
            continue
        done[name] = (ok, value)
        print(f"{name}: trained in {(time.perf_counter() - tic) / 60:.1f} min ({threads} thread(s), "
              f"{len(procs)} run(s) side by side)" if ok else f"{name}: failed", flush=True)
    for p in procs:
        p.join()
    return done


def _job_process(params_file: str, job: Job, threads: int, results) -> None:
    """A spawned process: one :func:`train_arm` with ``threads`` intra-op threads; reports
    ``(run name, ok, checkpoint or error)`` on ``results``."""
    torch.set_num_threads(threads)
    try:
        path = train_arm(params_file, job.arm, seed=job.seed, steps=job.steps, run_name=job.run_name, out=job.out,
                         progress=False)
        results.put((job.run_name, True, str(path)))
    except BaseException as e:  # the parent names the run and the error
        results.put((job.run_name, False, f"{type(e).__name__}: {e}"))
        raise


def _torchrun(st: Stage, arm: str, run_dir: Path, sets: Sequence[tuple[str, Any]]) -> Path:
    """Run one arm under torchrun (DDP over ``launch.nproc_per_node`` processes per node)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={st.launch.nproc_per_node}",
           f"--nnodes={st.launch.nnodes}"]
    if st.launch.rdzv_endpoint:
        cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={st.launch.rdzv_endpoint}"]
    cmd += ["-m", "icdlib.train", "--params", str(st.params_path), "--arm", arm, "--out", str(run_dir),
            "--data", str(st.path("data"))]
    for key, value in sets:
        cmd += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    subprocess.run(cmd, check=True)
    return run_dir / "model.pt"


def train_arms(params_file: str | Path, arms: Sequence[str], progress: bool = True) -> dict[str, Path]:
    """:func:`train_arm` for each of ``arms`` and each of its seeds; run name -> checkpoint.

    A descriptor arm runs every seed of ``main.seeds`` (:func:`seed_checkpoint` names the
    files); the trunk and the matchers run the first. Each run's DVCLive curves are then
    published under ``paths.reports/train/`` (:func:`publish_curves`): the first seed's as
    ``<arm>/``, the others' as ``<arm>/seeds/s<seed>/``.
    """
    st = Stage(params_file)
    out = {}
    for arm in arms:
        if arm == TRUNK and st.paths.trunk is None:
            out[arm] = write_untrained_trunk(params_file)
            continue
        if arm == TRUNK and st.paths.trunk_start:
            out[arm] = copy_trunk_start(params_file)
            continue
        kind = resolve_run(st.params, arm, {}, st.params_path.name).train.kind
        st.path("models", f"{arm}_steps").mkdir(parents=True, exist_ok=True)  # a stage output, even if empty
        if kind == "descriptor" and arm != TRUNK:  # stage outputs, present even with one seed
            st.path("models", f"{Path(checkpoint_name(arm)).stem}_seeds").mkdir(parents=True, exist_ok=True)
            st.path("reports", "train", arm, "seeds").mkdir(parents=True, exist_ok=True)
        seeds, names = arm_seeds(st, arm, kind), run_names(params_file, arm)
        jobs = [Job(arm, seed, name, seed_checkpoint(st, arm, seed) if kind == "descriptor" else None)
                for seed, name in zip(seeds, names)]
        out.update(zip(names, run_jobs(params_file, jobs, progress)))
        for seed, name in zip(seeds, names):
            keep_snapshots(st, arm, seed, st.path("runs", name))
            publish_curves(params_file, name, arm if seed == st.main.seeds[0] else f"{arm}/seeds/s{seed}")
    return out


def keep_snapshots(st: Stage, arm: str, seed: int, run_dir: Path) -> list[Path]:
    """Copy a run's ``train.snapshots`` weights to ``paths.models/<arm>_steps/s<seed>_step<N>.pt``
    (a stage output: the learning curves of the evaluation and ablation stages read them)."""
    dest_dir = st.path("models", f"{arm}_steps")
    dest_dir.mkdir(parents=True, exist_ok=True)
    kept = []
    for f in sorted(run_dir.glob("model_step*.pt")):
        dest = dest_dir / f"s{int(seed)}_{f.name[len('model_'):]}"
        with atomic_path(dest) as tmp:
            shutil.copyfile(f, tmp)
        kept.append(dest)
    return kept


def write_untrained_trunk(params_file: str | Path) -> Path:
    """``paths.trunk: null`` (the disc21 profile: every arm starts from DINO): the trunk stage
    trains nothing and writes the start itself, ``paths.backbone`` (or the seed's random
    init) as a descriptor checkpoint, with a ``metrics.json`` that says so."""
    st = Stage(params_file)
    run = resolve_run(st.params, TRUNK, {"train.seed": st.main.seeds[0]}, st.params_path.name)
    torch.manual_seed(run.train.seed)
    model = build_descriptor(run.model)
    if st.paths.backbone:
        load_backbone_weights(model, st.path("backbone"))
    return write_start(st, model, {"seed": run.train.seed, "step": 0},
                       {"start": st.paths.backbone or "random init",
                        "why": "paths.trunk is null: every arm starts from paths.backbone"})


LIVE_FILES = ("metrics.json", "params.yaml")  # DVCLive's last values and logged params


def publish_curves(params_file: str | Path, run_name: str, dest_name: str | None = None) -> Path:
    """Copy a run's DVCLive files into ``paths.reports/train/<dest_name or run_name>/``; that folder.

    The run folder (``paths.runs``) is resumable scratch space that git ignores; the copy is
    what git versions and what ``dvc plots`` / ``dvc exp show`` read: ``metrics.json`` (last
    values), ``params.yaml`` and ``plots/metrics/train/<metric>.tsv`` (``timestamp, step, <metric>``).
    """
    st = Stage(params_file)
    live = st.path("runs", run_name, "dvclive")
    if not (live / "metrics.json").is_file():
        raise FileNotFoundError(f"no DVCLive metrics.json under {live}: has run {run_name!r} trained?")
    dest = st.path("reports", "train", dest_name or run_name)
    if (dest / "plots").exists():
        shutil.rmtree(dest / "plots")
    for name in LIVE_FILES:
        (dest / name).unlink(missing_ok=True)
    dest.mkdir(parents=True, exist_ok=True)  # keeps <arm>/seeds/, the other seeds' curves
    for name in LIVE_FILES:
        if (live / name).is_file():
            shutil.copyfile(live / name, dest / name)
    if (live / "plots" / "metrics").is_dir():
        shutil.copytree(live / "plots" / "metrics", dest / "plots" / "metrics")
    return dest


def training_curves(params_file: str | Path, runs: Sequence[str]) -> pd.DataFrame:
    """Long-format DVCLive curves of several runs or main arms (an arm: its seeds' runs,
    :func:`run_names`): ``run, step, metric, value``."""
    frames = []
    st = Stage(params_file)
    runs = [r for arm in runs for r in (run_names(params_file, arm) if arm in st.params.get("arms", {}) else [arm])]
    for run in runs:
        wide = training_curve(params_file, run)
        long = wide.melt(id_vars="step", var_name="metric", value_name="value").dropna()
        long.insert(0, "run", run)
        frames.append(long)
    return pd.concat(frames, ignore_index=True)


def training_curve(params_file: str | Path, run_name: str) -> pd.DataFrame:
    """The DVCLive metric rows of a run (``step`` plus one column per logged metric)."""
    st = Stage(params_file)
    plots = st.path("runs", run_name, "dvclive", "plots", "metrics")
    curve = dvclive_curve(plots)
    if len(curve.columns) > 1:
        return curve
    if run_name == TRUNK and st.paths.trunk is not None and st.paths.trunk_start:
        recorded = curve_path(st.path("trunk_start"))  # a committed trunk, not trained here: its recorded curve
        if recorded.is_file():
            df = pd.read_csv(recorded)
            return df.rename(columns={c: f"train/{c}" for c in df.columns if c != "step"})
    if run_name == TRUNK and st.paths.trunk is None:  # the backbone, untrained: no curve
        return pd.DataFrame({"step": []})
    raise FileNotFoundError(f"no DVCLive metrics under {plots}")


def dvclive_curve(plots: Path) -> pd.DataFrame:
    """DVCLive's per-step metric TSVs under ``plots`` (a run's ``dvclive/plots/metrics``) joined on
    step: ``step`` plus one column per metric, named by its path there (``train/loss``); only
    ``step`` when there are none."""
    frames = []
    for f in sorted(Path(plots).rglob("*.tsv")):
        df = pd.read_csv(f, sep="\t")
        name = f.relative_to(plots).with_suffix("").as_posix()
        frames.append(df.rename(columns={df.columns[-1]: name})[["step", name]].set_index("step"))
    return pd.concat(frames, axis=1).reset_index() if frames else pd.DataFrame({"step": []})
