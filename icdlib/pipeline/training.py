"""The training stages: each named arm trained into ``paths.models``, and its DVCLive curves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from icdlib.params import resolve
from icdlib.pipeline.stage import Stage
from icdlib.train import resolve_run, train


MAIN_CHECKPOINTS = {
    "infonce": "descriptor_infonce.pt",
    "copynce": "descriptor_copynce.pt",
    "matcher_bce": "matcher_bce.pt",
    "matcher_copynce": "matcher.pt",
}


def checkpoint_name(arm: str) -> str:
    """File name of an arm's final checkpoint under ``paths.models``."""
    return MAIN_CHECKPOINTS.get(arm, f"{arm}.pt")


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
    logs: an interrupted stage continues where it stopped. Matcher arms that draw kNN
    negatives (``pairs.neg_knn_p > 0``) mine them once with the CopyNCE descriptor
    checkpoint, in ``paths.runs/knn``.
    """
    st = Stage(params_file)
    sets: dict[str, Any] = {"train.seed": st.seed if seed is None else int(seed)}
    if steps is not None:
        sets["train.steps"] = int(steps)
    run = resolve_run(st.params, arm, sets, st.params_path.name)
    if run.train.steps <= run.train.warmup_steps:
        sets["train.warmup_steps"] = max(0, run.train.steps // 10)
        run = resolve_run(st.params, arm, sets, st.params_path.name)
    start = st.paths.matcher_backbone if run.train.kind == "matcher" and st.paths.matcher_backbone else st.paths.backbone
    if start and run.train.backbone is None and run.train.init is None:
        sets["train.backbone"] = str(resolve(st.params_path, start))
        run = resolve_run(st.params, arm, sets, st.params_path.name)
    if run.train.kind == "matcher" and run.train.knn_checkpoint is None and run.pairs.neg_knn_p > 0:
        knn = st.path("models", checkpoint_name("copynce"))
        if knn.is_file():
            sets["train.knn_checkpoint"] = str(knn)
            if run.train.knn_cache is None:  # both matcher arms mine once
                sets["train.knn_cache"] = str(st.path("runs", "knn"))
            run = resolve_run(st.params, arm, sets, st.params_path.name)
    if st.paths.pair_cache and run.train.pair_cache is None:  # shared by the arms that read the same pairs
        sets["train.pair_cache"] = str(st.path("pair_cache"))
        run = resolve_run(st.params, arm, sets, st.params_path.name)
    run_dir = st.path("runs", run_name or arm)
    if st.launch.nproc_per_node > 1 or st.launch.nnodes > 1:
        final = _torchrun(st, arm, run_dir, sets.items())
    else:
        final = train(run, run_dir, data_root=st.path("data"), resume="auto", progress=progress)
    dest = Path(out) if out is not None else st.path("models", checkpoint_name(arm))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    shutil.copyfile(final, tmp)
    tmp.replace(dest)
    return dest


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
    """:func:`train_arm` for each of ``arms`` (the main runs, seed from params); name -> checkpoint.

    Each run's DVCLive curves are then published to ``paths.reports/train/<arm>/`` (:func:`publish_curves`).
    """
    out = {}
    for arm in arms:
        out[arm] = train_arm(params_file, arm, progress=progress)
        publish_curves(params_file, arm)
    return out


LIVE_FILES = ("metrics.json", "params.yaml")  # DVCLive's last values and logged params


def publish_curves(params_file: str | Path, run_name: str) -> Path:
    """Copy a run's DVCLive files into ``paths.reports/train/<run_name>/``; that folder.

    The run folder (``paths.runs``) is resumable scratch space that git ignores; the copy is
    what git versions and what ``dvc plots`` / ``dvc exp show`` read: ``metrics.json`` (last
    values), ``params.yaml`` and ``plots/metrics/train/<metric>.tsv`` (``timestamp, step, <metric>``).
    """
    st = Stage(params_file)
    live = st.path("runs", run_name, "dvclive")
    if not (live / "metrics.json").is_file():
        raise FileNotFoundError(f"no DVCLive metrics.json under {live}: has run {run_name!r} trained?")
    dest = st.path("reports", "train", run_name)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in LIVE_FILES:
        if (live / name).is_file():
            shutil.copyfile(live / name, dest / name)
    if (live / "plots" / "metrics").is_dir():
        shutil.copytree(live / "plots" / "metrics", dest / "plots" / "metrics")
    return dest


def training_curves(params_file: str | Path, runs: Sequence[str]) -> pd.DataFrame:
    """Long-format DVCLive curves of several runs: ``run, step, metric, value``."""
    frames = []
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
    frames = []
    for f in sorted(plots.rglob("*.tsv")):
        df = pd.read_csv(f, sep="\t")
        name = str(f.relative_to(plots).with_suffix(""))
        frames.append(df.rename(columns={df.columns[-1]: name})[["step", name]].set_index("step"))
    if not frames:
        raise FileNotFoundError(f"no DVCLive metrics under {plots}")
    return pd.concat(frames, axis=1).reset_index()
