"""Batching pairs: :func:`collate` stacks pair dicts, :func:`make_loader` is a seeded
DataLoader over them, and :func:`worker_init` sets up each loader worker (the training
loop's and the pair store's loaders use it too).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import torch
from torch.utils.data import DataLoader, Dataset


def collate(items: Sequence) -> dict[str, torch.Tensor]:
    """Stack pair dicts into a batch: every key ``[B, ...]``.

    Items that are lists of pairs (TracedPairs with neighbours) are flattened in order,
    so item ``b``'s pairs sit at consecutive rows.
    """
    flat = []
    for it in items:
        flat.extend(it if isinstance(it, (list, tuple)) else [it])
    if not flat:
        raise ValueError("collate: empty batch")
    keys = flat[0].keys()
    for i, d in enumerate(flat):
        if d.keys() != keys:
            raise ValueError(f"collate: pair {i} has keys {sorted(d)}, expected {sorted(keys)}")
    return {k: torch.stack([d[k] for d in flat]) for k in keys}


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of every icdlib DataLoader: torch on one thread in each worker.

    Samples draw from explicit ``(seed, epoch, index)`` generators, so this changes no
    data; it keeps W workers from running W x cores intra-op threads."""
    torch.set_num_threads(1)


class _Loader(DataLoader):
    """Forks its workers with OpenCV on one thread, then restores the caller's setting
    (``cv2.setNumThreads`` in a forked worker can deadlock once the parent ran OpenCV's pool)."""

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        n = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            return super().__iter__()  # non-persistent workers are forked here
        finally:
            cv2.setNumThreads(n)


def make_loader(dataset: Dataset, batch_size: int, workers: int = 0, seed: int = 0,
                pin_memory: bool = False, shuffle: bool = True, drop_last: bool = True) -> DataLoader:
    """A DataLoader with :func:`collate` and a seeded order.

    The order is drawn from ``torch.Generator().manual_seed(seed)`` (epoch e of one
    loader = the e-th permutation); the samples themselves depend only on the dataset's
    ``(seed, epoch, index)``. Call ``dataset.set_epoch(e)`` before each epoch; workers
    are not persistent, so they see it. Workers run torch and OpenCV on one thread each.
    """
    if batch_size < 1 or workers < 0:
        raise ValueError(f"make_loader: need batch_size >= 1 and workers >= 0, got {batch_size}, {workers}")
    g = torch.Generator()
    g.manual_seed(int(seed))
    return _Loader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=workers,
        collate_fn=collate, pin_memory=pin_memory, drop_last=drop_last,
        worker_init_fn=worker_init if workers > 0 else None, persistent_workers=False,
    )
