"""Traced training pairs computed once and shared: a store on disk that every arm reads.

Editing and tracing a pair costs far more CPU than reading it back, and the arms of one
seed (InfoNCE, CopyNCE, the ablations) train on the same pairs: a pair is a pure
function of ``(seed, epoch, index)`` and of the data settings (:mod:`icdlib.data.pairs`),
not of the loss. :func:`build_pair_cache` computes the pairs of a schedule once, with
every core, into a folder named by everything the pairs depend on; :class:`CachedPairs`
serves them to the training loader with no editing work, bit-identical to computing
them on the fly (images are stored as the uint8 pixels they were normalised from, and
checked to normalise back exactly).

A store grows: a longer run of the same data appends the pairs it lacks, so a 40-step
ablation run reads a prefix of a 450-step arm's pairs.

Layout of a store folder: ``meta.json`` (fields, dtypes, shapes, identity), ``keys.npy``
(``[n_items, 2]`` int64 ``(index, epoch)``), ``items.npy`` (``[n_items, 2]`` first pair
and pair count of each item: 2 for a descriptor item with a neighbour pair) and one raw
file per field, ``<field>.bin``, holding every pair's value in order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from icdlib.atomic import atomic_path, write_text
from icdlib.data.loading import worker_init
from icdlib.data.pairs import IMAGENET_MEAN, IMAGENET_STD
from icdlib.locks import file_lock

IMAGE_FIELDS = ("query", "reference")  # stored as uint8 pixels, [S, S, 3]
FORMAT = "icdlib-pair-cache-1"
_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _pixels(x: torch.Tensor) -> np.ndarray:
    """The uint8 ``[S, S, 3]`` image a normalised ``[3, S, S]`` tensor was made from."""
    u = torch.round((x * _STD + _MEAN) * 255.0).clamp_(0, 255).to(torch.uint8)
    return u.permute(1, 2, 0).contiguous().numpy()


def _normalised(u: np.ndarray) -> torch.Tensor:
    """:func:`icdlib.data.pairs.to_tensor` of uint8 pixels ``[S, S, 3]``: the same float ops."""
    x = torch.from_numpy(np.asarray(u, dtype=np.float32)).permute(2, 0, 1) / 255.0
    return (x - _MEAN) / _STD


def data_identity(dataset: Dataset) -> dict[str, Any]:
    """Everything a pair depends on: dataset class, data settings, edit settings, seed,
    the source files (path, size, mtime) and the neighbour table. The loss settings of
    ``pairs`` (``targets``) are left out: they do not change the pairs."""
    files = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in dataset.paths]
    nb = dataset.neighbours
    pairs = {k: v for k, v in dataclasses.asdict(dataset.config).items() if k != "targets"}
    return {
        "format": FORMAT,
        "dataset": type(dataset).__name__,
        "pairs": pairs,
        "edits": dataclasses.asdict(dataset.edit_config) if dataset.edit_config is not None else None,
        "seed": int(dataset.seed),
        "files": hashlib.sha256(json.dumps(files).encode()).hexdigest(),
        "neighbours": None if nb is None else hashlib.sha256(np.ascontiguousarray(nb).tobytes()).hexdigest(),
    }


def cache_folder(root: str | Path, dataset: Dataset) -> Path:
    """The store folder for ``dataset``'s pairs under ``root`` (named by :func:`data_identity`)."""
    digest = hashlib.sha256(json.dumps(data_identity(dataset), sort_keys=True, default=str).encode()).hexdigest()
    return Path(root) / digest[:16]


def _pairs_of(item) -> list[dict]:
    return list(item) if isinstance(item, (list, tuple)) else [item]


class _Store:
    """Reading and appending the files of one store folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        meta = folder / "meta.json"
        self.meta = json.loads(meta.read_text()) if meta.is_file() else None
        self.keys = np.load(folder / "keys.npy") if self.meta else np.zeros((0, 2), np.int64)
        self.items = np.load(folder / "items.npy") if self.meta else np.zeros((0, 2), np.int64)

    @property
    def n_pairs(self) -> int:
        return int(self.items[:, 0].max() + self.items[:, 1].max()) if len(self.items) else 0

    def lookup(self) -> dict[tuple[int, int], int]:
        return {(int(i), int(e)): row for row, (i, e) in enumerate(self.keys)}

    def append(self, keys: list[tuple[int, int]], items: list[list[dict[str, np.ndarray]]], identity: dict) -> None:
        """Append encoded items (:func:`_encode`: per item, its pairs as numpy fields)."""
        pairs = [p for it in items for p in it]
        if self.meta is None:
            fields = {name: {"dtype": v.dtype.str, "shape": list(v.shape)} for name, v in pairs[0].items()}
            self.meta = {"identity": identity, "fields": fields}
        start = self.n_pairs
        for name, spec in self.meta["fields"].items():
            with open(self.folder / f"{name}.bin", "ab") as f:
                for p in pairs:
                    if name not in p:
                        raise ValueError(f"pair cache {self.folder}: a pair lacks field {name!r}")
                    f.write(np.ascontiguousarray(p[name], dtype=np.dtype(spec["dtype"])).tobytes())
        counts = [len(it) for it in items]
        firsts = start + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.keys = np.concatenate([self.keys, np.asarray(keys, np.int64).reshape(-1, 2)])
        self.items = np.concatenate([self.items, np.stack([firsts, counts], 1).astype(np.int64)])
        for name, arr in (("keys", self.keys), ("items", self.items)):  # index last, atomically
            with atomic_path(self.folder / f"{name}.npy") as tmp:
                np.save(tmp, arr)
        write_text(self.folder / "meta.json", json.dumps(self.meta, indent=1, default=str))


def _encode(items: list) -> list[list[dict[str, np.ndarray]]]:
    """Loader collate (it runs in the worker): each item's pairs as compact numpy fields,
    images as the uint8 pixels they were normalised from, checked to normalise back exactly."""
    out = []
    for item in items:
        pairs = []
        for p in _pairs_of(item):
            enc = {}
            for name, value in p.items():
                if name in IMAGE_FIELDS:
                    enc[name] = _pixels(value)
                    if not torch.equal(_normalised(enc[name]), value):
                        raise ValueError(f"pair cache: field {name!r} does not round-trip through uint8 pixels")
                else:
                    enc[name] = value.numpy()
            pairs.append(enc)
        out.append(pairs)
    return out


def build_pair_cache(dataset: Dataset, keys: Sequence[tuple[int, int]], root: str | Path,
                     workers: int | None = None, chunk: int = 512, progress: bool = True) -> Path:
    """Compute the pairs of ``keys`` that the store lacks and append them; the store folder.

    Args:
        dataset: a :class:`~icdlib.data.TracedPairs` or :class:`~icdlib.data.MatcherPairs`.
        keys: ``(index, epoch)`` items in the order a run will read them (duplicates are
            computed once).
        root: folder holding stores; the store is ``root/<identity hash>``.
        workers: processes computing pairs (default: every core).
        chunk: items computed between two appends (a killed build keeps what it wrote).
    """
    folder = cache_folder(root, dataset)
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".lock"):  # runs side by side may share a store: one builds, the other waits
        return _build(dataset, keys, folder, workers, chunk, progress)


def _build(dataset: Dataset, keys: Sequence[tuple[int, int]], folder: Path, workers: int | None, chunk: int,
           progress: bool) -> Path:
    store = _Store(folder)
    identity = data_identity(dataset)
    if store.meta is not None and store.meta["identity"] != json.loads(json.dumps(identity, default=str)):
        raise ValueError(f"pair cache {folder}: its meta.json describes other data; remove the folder")
    have = store.lookup()
    todo = list(dict.fromkeys((int(i), int(e)) for i, e in keys if (int(i), int(e)) not in have))
    if not todo:
        return folder
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    bar = tqdm(total=len(todo), desc="pair cache", unit="item", disable=not progress)
    # one streaming loader for the whole build: workers encode small batches (numpy, not
    # shared-memory tensors), the main process only appends a chunk at a time
    batch = max(1, min(16, chunk))
    loader = DataLoader(dataset, sampler=todo, batch_size=batch, collate_fn=_encode, num_workers=workers,
                        worker_init_fn=worker_init if workers else None, prefetch_factor=4 if workers else None)
    pending: list = []
    done = 0
    for encoded in loader:
        pending += encoded
        bar.update(len(encoded))
        if len(pending) >= chunk:
            store.append(todo[done:done + len(pending)], pending, identity)
            done, pending = done + len(pending), []
    if pending:
        store.append(todo[done:done + len(pending)], pending, identity)
    bar.close()
    return folder


class CachedPairs(Dataset):
    """The pairs of a store, by ``(index, epoch)`` key, as the dataset that built it gives them.

    ``len()`` is the number of source images (as the live dataset), so the training
    sampler's keys are the same; a key the store lacks raises ``KeyError`` naming it.
    """

    def __init__(self, folder: str | Path, n_images: int):
        self.folder = Path(folder)
        store = _Store(self.folder)
        if store.meta is None:
            raise FileNotFoundError(f"pair cache: no store in {self.folder}")
        self.fields = store.meta["fields"]
        self.index = store.lookup()
        self.items = store.items
        self.n_images = int(n_images)
        self.arrays = None  # memory maps, opened lazily (once per loader worker)

    def __len__(self) -> int:
        return self.n_images

    def _open(self):
        n = int(self.items[:, 0].max() + self.items[:, 1].max()) if len(self.items) else 0
        self.arrays = {name: np.memmap(self.folder / f"{name}.bin", dtype=np.dtype(s["dtype"]), mode="r",
                                       shape=(n, *s["shape"])) for name, s in self.fields.items()}

    def _pair(self, row: int) -> dict[str, torch.Tensor]:
        out = {}
        for name, arr in self.arrays.items():
            v = np.array(arr[row])
            out[name] = _normalised(v) if name in IMAGE_FIELDS else torch.from_numpy(v)
        return out

    def __getitem__(self, key):
        if self.arrays is None:
            self._open()
        k = (int(key[0]), int(key[1]))
        if k not in self.index:
            raise KeyError(f"pair cache {self.folder}: no pair for (index, epoch) = {k}")
        first, count = self.items[self.index[k]]
        pairs = [self._pair(int(first) + j) for j in range(int(count))]
        return pairs[0] if count == 1 else pairs  # a descriptor item with a neighbour pair is a list
