"""Perceptual-hash baselines: PDQ (256 bits) and pHash (64 bits).

Each image gets a bit vector; the score of a (query, reference) pair is the hash
similarity ``1 - hamming / bits`` in ``[0, 1]`` (higher = more similar). Search is
brute force over all references: bits are packed into uint64 words, XOR-ed and counted
with ``np.bitwise_count``, in query chunks that bound memory.

The hash packages are optional (the ``[hashes]`` extra) and imported only when a hash
is computed: ``pdqhash`` (Facebook's PDQ) ships no Linux wheel and compiles from source
with a C++ compiler, so it may be missing where the rest of icdlib runs.
:func:`missing_reason` says why a method cannot run here; computing it anyway raises
:class:`HashUnavailable` with that reason.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from icdlib.data import load_image, worker_errors

# method -> (row label, import name, how to install it)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "pdq": ("PDQ", "pdqhash", "pip install 'icdlib[hashes]' (pdqhash builds from source: it needs a C++ compiler)"),
    "phash": ("pHash", "imagehash", "pip install 'icdlib[hashes]'"),
}


class HashUnavailable(RuntimeError):
    """A hash method's package is not installed (or does not import) in this environment."""


def missing_reason(method: str) -> str | None:
    """Why ``method`` cannot be computed here, or ``None`` when its package imports.

    The reason names the package, the import error and the install command, e.g.
    ``"PDQ needs the pdqhash package, which is not installed (No module named
    'pdqhash'); install it with pip install 'icdlib[hashes]' (...)"``.
    """
    _hash_fn(method)
    label, module, how = PACKAGES[method]
    try:
        importlib.import_module(module)
    except ImportError as e:
        return (f"{label} needs the {module} package, which is not installed or does not import ({e}); "
                f"install it with {how}")
    return None


def _package(method: str) -> ModuleType:
    reason = missing_reason(method)
    if reason is not None:
        raise HashUnavailable(reason)
    return importlib.import_module(PACKAGES[method][1])


def pdq_bits(image: Image.Image) -> np.ndarray:
    """PDQ hash of an image: (256,) bool (Facebook's PDQ, via the ``pdqhash`` package)."""
    bits, _quality = _package("pdq").compute(np.asarray(image.convert("RGB"), dtype=np.uint8))
    return np.asarray(bits, dtype=bool)


def phash_bits(image: Image.Image) -> np.ndarray:
    """DCT perceptual hash of an image: (64,) bool (``imagehash.phash``, 8x8)."""
    return np.asarray(_package("phash").phash(image.convert("RGB")).hash, dtype=bool).reshape(-1)


HASHES: dict[str, tuple[Callable[[Image.Image], np.ndarray], int]] = {
    "pdq": (pdq_bits, 256),
    "phash": (phash_bits, 64),
}


def _hash_fn(method: str):
    if method not in HASHES:
        raise ValueError(f"hashes: unknown method {method!r}; choose one of {sorted(HASHES)}")
    return HASHES[method]


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack (n, b) bool bits into (n, ceil(b/64)) uint64 words (zero-padded)."""
    bits = np.asarray(bits, dtype=bool)
    if bits.ndim != 2:
        raise ValueError(f"pack_bits: bits must be (n, b), got shape {bits.shape}")
    n, b = bits.shape
    words = -(-b // 64)
    padded = np.zeros((n, words * 64), dtype=bool)
    padded[:, :b] = bits
    return np.packbits(padded, axis=1).view(np.uint64).reshape(n, words)


def hash_images(images: Sequence[Image.Image], method: str = "pdq") -> np.ndarray:
    """Packed hashes of in-memory images: (n, words) uint64."""
    fn, bits = _hash_fn(method)
    if len(images) == 0:
        return np.zeros((0, -(-bits // 64)), dtype=np.uint64)
    return pack_bits(np.stack([fn(im) for im in images]))


class _HashFiles:
    """Map-style dataset: item i is the (bits,) bool hash of file i (decoded in a worker)."""

    def __init__(self, paths, method):
        self.paths, self.method = list(paths), method

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return HASHES[self.method][0](load_image(self.paths[i]))


def _stack(batch):
    return np.stack(batch)


def hash_files(
    paths: Sequence[str | Path], method: str = "pdq", num_workers: int = 0, desc: str = "hashing"
) -> np.ndarray:
    """Packed hashes of image files (decoded with ``icdlib.data.load_image``): (n, words) uint64.

    ``num_workers`` > 0 decodes and hashes in that many worker processes.
    """
    from torch.utils.data import DataLoader

    _, bits = _hash_fn(method)
    _package(method)  # a missing package fails here, before any worker starts
    out = np.zeros((len(paths), bits), dtype=bool)
    loader = DataLoader(_HashFiles(paths, method), batch_size=64, num_workers=num_workers, collate_fn=_stack)
    row = 0
    with tqdm(total=len(paths), desc=f"{desc} ({method})", unit="img") as bar, worker_errors():
        for b in loader:
            out[row : row + len(b)] = b
            row += len(b)
            bar.update(len(b))
    return pack_bits(out)


def hamming_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """All-pairs Hamming distances: (nq, words), (nr, words) uint64 -> (nq, nr) int32."""
    q = np.asarray(queries, dtype=np.uint64)
    r = np.asarray(references, dtype=np.uint64)
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise ValueError(f"hamming_distances: shapes {q.shape} and {r.shape} are not (n, words) alike")
    return np.bitwise_count(q[:, None, :] ^ r[None, :, :]).sum(axis=2, dtype=np.int32)


def hamming_topk(
    queries: np.ndarray, references: np.ndarray, k: int, chunk_bytes: int = 64 << 20
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force k nearest references per query by Hamming distance.

    Args:
        queries, references: packed hashes, (nq, words) and (nr, words) uint64.
        k: neighbours per query (clipped to nr).
        chunk_bytes: memory bound of one query chunk's XOR block.

    Returns:
        ``(distances, indices)``, both (nq, min(k, nr)) int64, sorted by distance
        ascending (ties by reference index).
    """
    if k < 1:
        raise ValueError(f"hamming_topk: k must be >= 1, got {k}")
    nq, nr = len(queries), len(references)
    kk = min(k, nr)
    dist_out = np.zeros((nq, kk), dtype=np.int64)
    idx_out = np.zeros((nq, kk), dtype=np.int64)
    if nq == 0 or nr == 0:
        return dist_out, idx_out
    words = max(references.shape[1], 1)
    step = max(1, chunk_bytes // (nr * words * 8))
    for s in range(0, nq, step):
        d = hamming_distances(queries[s : s + step], references)
        if kk < nr:
            part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(nr), d.shape).copy()
        pd_ = np.take_along_axis(d, part, axis=1)
        order = np.lexsort((part, pd_), axis=1)
        idx_out[s : s + step] = np.take_along_axis(part, order, axis=1)
        dist_out[s : s + step] = np.take_along_axis(pd_, order, axis=1)
    return dist_out, idx_out


def hash_predictions(
    queries: Sequence[tuple[str, Path]],
    references: Sequence[tuple[str, Path]],
    method: str = "pdq",
    k: int = 10,
    num_workers: int = 0,
) -> pd.DataFrame:
    """Top-k hash-similarity predictions of each query over all references.

    Args:
        queries, references: ``(id, path)`` items, as ``Disc21.images(split)`` returns.
        method: ``"pdq"`` or ``"phash"``.
        k: predictions per query.
        num_workers: hashing processes (0 = in this process).

    Returns:
        DataFrame with columns ``query_id, reference_id, score`` where
        ``score = 1 - hamming / bits`` in [0, 1].
    """
    _, bits = _hash_fn(method)
    qh = hash_files([p for _, p in queries], method, num_workers, desc="hashing queries")
    rh = hash_files([p for _, p in references], method, num_workers, desc="hashing references")
    dist, idx = hamming_topk(qh, rh, k)
    q_ids = np.asarray([i for i, _ in queries], dtype=object)
    r_ids = np.asarray([i for i, _ in references], dtype=object)
    return pd.DataFrame(
        {
            "query_id": np.repeat(q_ids, idx.shape[1]),
            "reference_id": r_ids[idx.reshape(-1)] if len(r_ids) else np.zeros(0, dtype=object),
            "score": 1.0 - dist.reshape(-1) / bits,
        }
    )
