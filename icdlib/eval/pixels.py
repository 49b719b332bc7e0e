"""Evaluation images decoded once and kept as pixels, for stages that score many models.

A pipeline stage scores many models on the same images: the evaluation stage embeds the
references, queries and auxiliary set once per descriptor and rescores the same pairs
with each matcher, and the ablation stage embeds the split once per run and per curve
point. Decoding and resizing a file costs more on a CPU than a small ViT's forward in
bf16, so a :class:`PixelCache` decodes each image set once, in worker processes, and keeps
the resized uint8 pixels (``S * S * 3`` bytes an image: 37.6 kB at 112 px). Batches are
normalised by :func:`icdlib.models.preprocess.from_pixels`, the function that normalises
decoded files too, so a model sees bit-identical inputs either way.

The cache has a byte budget (``eval.pixel_cache_mb``); an image set that would pass it is
not kept and streams from its files as before, so DISC21-scale splits cost no memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from icdlib.data import load_image, worker_errors
from icdlib.models.preprocess import resized_pixels


class _ResizedFiles(Dataset):
    """Item i: the uint8 ``[S, S, 3]`` pixels of file i, resized as the models' input is."""

    def __init__(self, paths: Sequence[str | Path], size: int):
        self.paths, self.size = list(paths), int(size)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return torch.from_numpy(resized_pixels(load_image(self.paths[i]), self.size))


def decode_pixels(paths: Sequence[str | Path], size: int, num_workers: int = 0, batch_size: int = 64,
                  desc: str = "decoding") -> torch.Tensor:
    """uint8 ``[n, size, size, 3]`` pixels of ``paths``, in order (a bad file raises naming it)."""
    out = torch.empty((len(paths), int(size), int(size), 3), dtype=torch.uint8)
    loader = DataLoader(_ResizedFiles(paths, size), batch_size=batch_size, num_workers=num_workers)
    row = 0
    with tqdm(total=len(paths), desc=desc, unit="img") as bar, worker_errors():
        for x in loader:
            out[row : row + len(x)] = x
            row += len(x)
            bar.update(len(x))
    return out


class PixelCache:
    """Decoded image sets by ``(paths, size)``, within a budget of ``max_mb`` MiB (0: none kept).

    :meth:`get` returns the pixels of a set, decoding it on first use, or ``None`` when the
    set does not fit in what is left of the budget (the caller then streams the files).
    """

    def __init__(self, max_mb: float, num_workers: int = 0, batch_size: int = 64):
        if max_mb < 0:
            raise ValueError(f"eval.pixel_cache_mb must be >= 0, got {max_mb}")
        self.budget = int(max_mb * 2**20)
        # while a set decodes nothing else runs, so the process that would embed decodes too
        self.num_workers, self.batch_size = int(num_workers) + (num_workers > 0), int(batch_size)
        self.sets: dict[tuple[tuple[str, ...], int], torch.Tensor] = {}

    @property
    def used(self) -> int:
        """Bytes held."""
        return sum(t.numel() for t in self.sets.values())

    def get(self, paths: Sequence[str | Path], size: int, desc: str = "decoding") -> torch.Tensor | None:
        key = (tuple(str(p) for p in paths), int(size))
        if key in self.sets:
            return self.sets[key]
        if len(paths) == 0 or self.used + len(paths) * int(size) ** 2 * 3 > self.budget:
            return None
        self.sets[key] = decode_pixels(paths, size, self.num_workers, self.batch_size, desc)
        return self.sets[key]

