"""kNN hard negatives: each training image's most similar other images under a descriptor.

Method s.4: a cosine kNN table over descriptor features of the training images (the
image itself skipped) feeds :class:`icdlib.data.pairs.MatcherPairs` negatives and the
descriptor's second, look-alike pair in :class:`icdlib.data.pairs.TracedPairs`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from icdlib.atomic import atomic_path
from icdlib.checkpoints import load_model
from icdlib.eval.retrieval import embed
from icdlib.locks import file_lock
from icdlib.models.precision import bf16_enabled


def mine_neighbours(checkpoint: str | Path, image_paths: Sequence[str | Path], k: int, *,
                    batch_size: int = 128, device: str = "cpu", workers: int = 0, amp: bool = False) -> np.ndarray:
    """kNN hard negatives: each image's ``k`` most similar other images.

    Embeds ``image_paths`` with the descriptor of ``checkpoint`` (at its input size) and
    searches them exactly with faiss ``IndexFlatIP`` (cosine on the L2-normalised
    descriptors), under bf16 autocast when ``amp`` (:func:`icdlib.eval.retrieval.embed`). The
    image itself (rank 0 of its own search) is skipped; should a duplicate outrank it, the
    image's own index is still removed wherever it falls.

    Returns:
        ``[n, k]`` int64 indices into ``image_paths``, most similar first.
    """
    n = len(image_paths)
    if not 1 <= k < n:
        raise ValueError(f"mine_neighbours: k must be in [1, n_images - 1 = {n - 1}], got {k}")
    model, meta = load_model(checkpoint, device=device)
    if meta.get("kind") != "descriptor":
        raise ValueError(f"mine_neighbours: {checkpoint} holds a {meta.get('kind')!r}, not a descriptor")
    size = int(meta["config"]["img_size"])
    feats = embed(model, list(image_paths), size, batch_size=batch_size, num_workers=workers,
                  device=device, desc="mining neighbours", amp=amp)
    return knn_from_features(feats, k)


def neighbours_file(checkpoint: str | Path, image_paths: Sequence[str | Path], k: int,
                    folder: str | Path, bf16: bool = False) -> Path:
    """Where :func:`cached_neighbours` keeps the table of these inputs.

    The name hashes the checkpoint's bytes, ``k``, the precision of the mining forwards
    (``bf16``: autocast in effect) and the image paths, so a retrained descriptor or
    another image list never reuses a stale table.
    """
    h = hashlib.sha1(Path(checkpoint).read_bytes())
    h.update(f"k={k}\n".encode())
    if bf16:  # fp32 tables keep the names they always had
        h.update(b"bf16\n")
    for p in image_paths:
        h.update(f"{Path(p).resolve()}\n".encode())
    return Path(folder) / f"neighbours_{h.hexdigest()[:16]}.npy"


def cached_neighbours(checkpoint: str | Path, image_paths: Sequence[str | Path], k: int,
                      folder: str | Path, **kwargs) -> np.ndarray:
    """:func:`mine_neighbours`, stored in ``folder`` and reused by any run with the same inputs."""
    bf16 = bool(kwargs.get("amp")) and bf16_enabled(kwargs.get("device", "cpu"))
    path = neighbours_file(checkpoint, image_paths, k, folder, bf16)
    with file_lock(path.with_name(path.stem + ".lock")):  # runs side by side: one mines, the other waits
        if path.is_file():
            return load_table(path, len(image_paths), k)
        table = mine_neighbours(checkpoint, image_paths, k, **kwargs)
        with atomic_path(path) as tmp:
            np.save(tmp, table)
        return table


def load_table(path: Path, n: int, k: int) -> np.ndarray:
    """A kNN table written by :func:`cached_neighbours`, checked: ``[n, k]`` integer indices
    in ``[0, n)`` (no pickle is ever loaded); ``ValueError`` naming the file otherwise."""
    try:
        table = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: unreadable kNN table ({e}); delete it to mine again") from None
    if (table.shape != (n, k) or not np.issubdtype(table.dtype, np.integer)
            or (table.size and (table.min() < 0 or table.max() >= n))):
        raise ValueError(f"{path}: kNN table of shape {table.shape}, dtype {table.dtype} is not "
                         f"[{n}, {k}] indices in [0, {n}); delete it to mine again")
    return table.astype(np.int64, copy=False)


def knn_from_features(features: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product kNN of every row among the others (faiss ``IndexFlatIP``).

    Args:
        features: ``[n, D]`` float, L2-normalised rows (inner product = cosine).
        k: neighbours per row, ``1 <= k < n``.
    Returns:
        ``[n, k]`` int64, most similar first, the row itself excluded.
    """
    import faiss

    feats = np.ascontiguousarray(features, dtype=np.float32)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"knn_from_features: need [n >= 2, D] features, got {feats.shape}")
    n = len(feats)
    if not 1 <= k < n:
        raise ValueError(f"knn_from_features: k must be in [1, n - 1 = {n - 1}], got {k}")
    index = faiss.IndexFlatIP(feats.shape[1])
    index.add(feats)
    _, found = index.search(feats, k + 1)
    out = np.empty((n, k), dtype=np.int64)
    for i, row in enumerate(found):
        row = row[(row != i) & (row >= 0)]  # normally drops column 0, the row itself
        out[i] = row[:k]
    return out
