"""What a training run reads: its source images, its kNN table, its pair store and the order
of its items; and :func:`prepare`, which makes the table and the store ahead of :func:`icdlib.train.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from icdlib.data import Disc21, MatcherPairs, TracedPairs
from icdlib.data.cache import build_pair_cache
from icdlib.models.precision import bf16_enabled
from icdlib.train.mining import cached_neighbours
from icdlib.train.runs import RunConfig, TrainConfig
from icdlib.train.schedule import global_batch
from icdlib.train.state import resumable_step

CHECKPOINT = "checkpoint.pt"  # a run's latest resumable state, rewritten atomically


def pair_dataset(run: RunConfig, paths: list[Path], neighbours: np.ndarray | None):
    """The live pair dataset a run reads: :class:`~icdlib.data.TracedPairs` (descriptor) or
    :class:`~icdlib.data.MatcherPairs` (matcher) of ``paths``, with the run's pairs and edit
    settings and seed; ``neighbours``: its ``[len(paths), k]`` kNN table, or None."""
    make = TracedPairs if run.train.kind == "descriptor" else MatcherPairs
    return make(paths, run.pairs, run.train.seed, neighbours=neighbours, edit_config=run.edits)


def training_images(data_root: str | Path, split: str = "training") -> list[Path]:
    """Image paths of ``split`` under a DISC21-layout ``data_root``, sorted by id."""
    return [p for _, p in Disc21(data_root).images(split)]


def source_paths(t: TrainConfig, data_root, image_paths, who: str) -> list[Path]:
    """The run's source images: ``image_paths``, else split ``t.split`` of ``data_root``;
    ``ValueError`` naming ``who`` (the caller) when neither is given or fewer than 2 images."""
    if image_paths is None:
        if data_root is None:
            raise ValueError(f"{who}: give data_root (a DISC21-layout folder) or image_paths")
        image_paths = training_images(data_root, t.split)
    paths = [Path(p) for p in image_paths]
    if len(paths) < 2:
        raise ValueError(f"{who}: need at least 2 source images, got {len(paths)}")
    return paths


def knn_folder(t: TrainConfig, out: Path) -> Path:
    """Where a run keeps its mined kNN tables: ``train.knn_cache`` (shared by runs), else its own folder."""
    return Path(t.knn_cache) if t.knn_cache else out


def knn_table(t: TrainConfig, paths: list[Path], out: Path, device: str, bf16: bool) -> np.ndarray:
    """The run's ``[len(paths), train.knn_k]`` int kNN table, mined with ``train.knn_checkpoint``
    in the precision the run trains in (on ``device``, bf16 autocast if ``bf16``), or read back
    from where an earlier run left it (:func:`knn_folder`)."""
    return cached_neighbours(t.knn_checkpoint, paths, t.knn_k, knn_folder(t, out), batch_size=t.knn_batch_size,
                             device=device, workers=t.workers, amp=bf16)


def prepare(run: RunConfig, out_path: str | Path, *, data_root: str | Path | None = None,
            image_paths: Sequence[str | Path] | None = None, progress: bool = True) -> None:
    """Do ahead of :func:`train` (CPU, one process) the work a run does before its first step:
    mine its kNN table (``train.knn_checkpoint``) and build its pair store (``train.pair_cache``)
    for the steps it has left, with every core this process has.

    :func:`train` then finds both done and starts its steps at once. The pipeline calls it
    before runs train side by side with one core each (:func:`icdlib.pipeline.training.run_jobs`),
    so that this work is not done on one core, or by two runs at once. The results are the
    same either way: the table and the store are pure functions of the run's settings.
    """
    t = run.train
    if not (t.knn_checkpoint or t.pair_cache):
        return
    out = Path(out_path)
    paths = source_paths(t, data_root, image_paths, "prepare")
    start = resumable_step(out / CHECKPOINT, run) or 0  # what train(resume="auto") would resume from
    if start >= t.steps:
        return
    neighbours = knn_table(t, paths, out, "cpu", bf16_enabled("cpu", t.amp, t.amp_cpu)) if t.knn_checkpoint else None
    if t.pair_cache:
        dataset = pair_dataset(run, paths, neighbours)
        build_pair_cache(dataset, schedule_keys(t, len(dataset), start), t.pair_cache, progress=progress)


def schedule_keys(t: TrainConfig, n: int, start: int = 0) -> list[tuple[int, int]]:
    """Every ``(index, epoch)`` item of steps ``[start, t.steps)``, in the order the run reads them."""
    keys = []
    for step in range(start, t.steps):
        idx, pos = global_batch(t.seed, step, t.batch_size, n)
        keys += [(int(i), int(p // n)) for i, p in zip(idx, pos)]
    return keys
