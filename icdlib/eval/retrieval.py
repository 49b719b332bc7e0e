"""Descriptor retrieval and matcher rescoring for copy detection.

Pipeline (method.md s.6):

1. :func:`embed` streams image files through a descriptor in batches (a DataLoader
   decodes and resizes in worker processes); only the ``[n, d]`` float32 features stay
   in memory. :func:`save_features` writes them as ``NAME.npy`` plus ``NAME.ids.txt``.
2. :func:`search` finds the ``k`` most similar references per query with faiss on inner
   product (the descriptors are L2-normalised, so the score is the cosine). The index is
   a faiss factory string: ``"Flat"`` (exact) by default, e.g. ``"IVF4096,PQ32"`` at 1M.
3. :func:`normalize_scores` subtracts ``alpha * mean`` of each query's similarities to
   an auxiliary set at sorted ranks ``[start, end)`` (0-based): ``s' = s - alpha * m(q)``.
4. :func:`rescore` scores candidate pairs with a pairwise matcher, ``sigmoid(logit)``,
   optionally with Local Crop Ensembling (views defined here:
   :func:`query_views`, :func:`reference_views`), keeping the max over views.

Predictions and candidate pairs are DataFrames with columns ``query_id, reference_id,
score`` (higher = more similar); on disk they are the CSV that ``icdlib.metrics`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import faiss
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from icdlib.data import load_image, worker_errors
from icdlib.eval.views import VIEW_SETS
from icdlib.models import preprocess
from icdlib.models.preprocess import from_pixels
from icdlib.models.precision import autocast


@dataclass(frozen=True)
class EvalConfig:
    """``params.yaml:eval``: retrieval, normalisation and rescoring knobs."""

    k: int = 10  # candidates per query, as in the paper's descriptor evaluation
    index: str = "Flat"  # faiss factory string; exact search is affordable below ~1M refs
    nprobe: int = 16  # IVF lists visited per query (ignored by Flat)
    batch_size: int = 64  # images per descriptor forward pass; fits CPU RAM at 224 px
    num_workers: int = 1  # decoding processes; on the 2-core reference machine the other one embeds
    img_size: int = 0  # model input side; 0 = the checkpoint's own config img_size
    norm_alpha: float = 1.0  # score normalisation weight (method.md s.6)
    norm_start: int = 1  # first auxiliary rank averaged (0-based; skips the nearest)
    norm_end: int = 5  # one past the last auxiliary rank averaged: ranks 1..4
    matcher_batch_size: int = 32  # image pairs per matcher forward pass
    lce: bool = False  # Local Crop Ensembling for the matcher (35 passes per pair)
    lce_views: str = "light"  # LCE view set: full (26 query x 10 reference views, 35 passes) | light (6 x 5, 10 passes)
    lce_descriptor: bool = False  # multi-view query search for the descriptor (26 views)
    # a stage scoring many models keeps each image set it can fit decoded (icdlib.eval.pixels); 0 = stream files
    pixel_cache_mb: int = 1024
    # bf16 autocast for both models' forwards (CUDA; a CPU only with bf16 units): uAP within 0.0003 of fp32
    amp: bool = True
    device: str = "cpu"  # torch device for both models

    def __post_init__(self):
        for name in ("k", "batch_size", "matcher_batch_size", "nprobe"):
            if getattr(self, name) < 1:
                raise ValueError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.img_size < 0 or self.pixel_cache_mb < 0:
            raise ValueError(
                f"eval.num_workers, eval.img_size and eval.pixel_cache_mb must be >= 0, got {self.num_workers}, "
                f"{self.img_size}, {self.pixel_cache_mb}"
            )
        if self.lce_views not in VIEW_SETS:
            raise ValueError(f"eval.lce_views must be one of {sorted(VIEW_SETS)}, got {self.lce_views!r}")
        if not 0 <= self.norm_start < self.norm_end:
            raise ValueError(
                f"eval: need 0 <= norm_start < norm_end, got [{self.norm_start}, {self.norm_end})"
            )


# --------------------------------------------------------------------------- embedding


class ImageFiles(Dataset):
    """Decoded, preprocessed images: item i is ``[V, 3, S, S]`` float (V = 1 or the views)."""

    def __init__(self, paths: Sequence[str | Path], size: int, views: Callable | None = None):
        self.paths, self.size, self.views = list(paths), int(size), views

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = load_image(self.paths[i])
        return preprocess(self.views(img) if self.views else [img], self.size)


def _cat(batch):
    return torch.cat(batch, dim=0)


@torch.inference_mode()
def embed(
    model: torch.nn.Module,
    paths: Sequence[str | Path],
    size: int,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    views: Callable | None = None,
    desc: str = "embedding",
    amp: bool = False,
) -> np.ndarray:
    """Descriptors of image files.

    Args:
        model: ``images [B, 3, S, S] -> [B, D]`` L2-normalised descriptors.
        paths: n image files (any size/aspect; resized to ``size`` x ``size``).
        size: model input side S in pixels.
        views: optional ``PIL -> list of V PIL`` (e.g. :func:`query_views`).
        amp: bf16 autocast for the forward passes (:func:`icdlib.models.precision.autocast`:
            CUDA, or a CPU with bf16 units); the descriptors are returned as float32.

    Returns:
        float32 ``[n, D]``, or ``[n, V, D]`` with ``views``.
    """
    n_views = len(views(Image.new("RGB", (12, 12)))) if views else 1
    loader = DataLoader(
        ImageFiles(paths, size, views),
        batch_size=max(1, batch_size // n_views),
        num_workers=num_workers,
        collate_fn=_cat,
    )
    with worker_errors():
        out = _embed_batches(model, loader, len(paths), n_views, device, desc, amp)
    if not views:
        return out
    return out.reshape(len(paths), n_views, -1) if len(out) else np.zeros((0, n_views, 0), dtype=np.float32)


@torch.inference_mode()
def embed_pixels(model: torch.nn.Module, pixels: torch.Tensor, batch_size: int = 64, device: str = "cpu",
                 desc: str = "embedding", amp: bool = False) -> np.ndarray:
    """Descriptors of decoded images: uint8 ``[n, S, S, 3]`` (:mod:`icdlib.eval.pixels`).

    The same numbers as :func:`embed` of the files the pixels were decoded from.
    """
    batches = (from_pixels(pixels[s : s + batch_size]) for s in range(0, len(pixels), batch_size))
    return _embed_batches(model, batches, len(pixels), 1, device, desc, amp)


def _embed_batches(model, batches, n: int, n_views: int, device: str, desc: str, amp: bool) -> np.ndarray:
    """float32 ``[n * n_views, D]`` descriptors of ``batches`` of model input."""
    model = model.eval().to(device)
    out, row = None, 0
    with tqdm(total=n, desc=desc, unit="img") as bar, autocast(device, amp):
        for x in batches:
            f = model(x.to(device)).float().cpu().numpy()
            if out is None:
                out = np.zeros((n * n_views, f.shape[1]), dtype=np.float32)
            out[row : row + len(f)] = f
            row += len(f)
            bar.update(len(f) // n_views)
    return np.zeros((0, 0), dtype=np.float32) if out is None else out  # no images: the width is unknown


def save_features(path: str | Path, ids: Sequence[str], features: np.ndarray) -> Path:
    """Write ``PATH.npy`` (float32 features) and ``PATH.ids.txt`` (one id per line)."""
    path = Path(path).with_suffix("")
    if len(ids) != len(features):
        raise ValueError(f"save_features: {len(ids)} ids but {len(features)} feature rows")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".npy"), np.asarray(features, dtype=np.float32))
    path.with_suffix(".ids.txt").write_text("".join(f"{i}\n" for i in ids))
    return path.with_suffix(".npy")


def load_features(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read what :func:`save_features` wrote: ``(ids, float32 [n, ...])``."""
    path = Path(path).with_suffix("")
    npy, txt = path.with_suffix(".npy"), path.with_suffix(".ids.txt")
    for f in (npy, txt):
        if not f.is_file():
            raise FileNotFoundError(f"load_features: missing {f}")
    ids = txt.read_text().splitlines()
    feats = np.load(npy)
    if len(ids) != len(feats):
        raise ValueError(f"load_features: {txt} has {len(ids)} ids but {npy} has {len(feats)} rows")
    return ids, feats


# --------------------------------------------------------------------------- search


def build_index(references: np.ndarray, index: str = "Flat", nprobe: int = 16) -> faiss.Index:
    """A faiss inner-product index over ``references`` (float32 ``[nr, d]``).

    ``index`` is a faiss factory string (``"Flat"``, ``"IVF1024,Flat"``, ``"IVF4096,PQ32"``...);
    a trainable index is trained on the references themselves, so it needs enough of them:
    ``IVFn`` at least n (faiss advises 39 n) and ``PQ`` at least 256 (2^8 codes per
    sub-quantizer). Too few raise ``ValueError`` saying so; ``"Flat"`` needs no training.
    """
    r = np.ascontiguousarray(references, dtype=np.float32)
    if r.ndim != 2:
        raise ValueError(f"build_index: references must be [n, d], got shape {r.shape}")
    try:
        idx = faiss.index_factory(r.shape[1], index, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"search: bad faiss index string {index!r} ({e})") from e
    if not idx.is_trained:
        try:
            idx.train(r)
        except RuntimeError as e:
            reason = str(e).split("failed: ")[-1].strip()
            raise ValueError(
                f"search: faiss index {index!r} cannot be trained on {len(r)} references ({reason}); "
                f"use --index Flat (exact, fine below ~1M references) or fewer IVF lists / PQ bits") from e
    if "IVF" in index:
        faiss.ParameterSpace().set_index_parameter(idx, "nprobe", nprobe)
    idx.add(r)
    return idx


def search_index(idx: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best references of each query in a built index (see :func:`search`)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != idx.d:
        raise ValueError(f"search: queries {q.shape} do not fit an index of dimension {idx.d}")
    if k < 1:
        raise ValueError(f"search: k must be >= 1, got {k}")
    kk = min(k, idx.ntotal)
    if kk == 0 or len(q) == 0:
        return np.zeros((len(q), kk), np.float32), np.zeros((len(q), kk), np.int64)
    scores, indices = idx.search(q, kk)
    return scores, indices.astype(np.int64)


def search(
    queries: np.ndarray, references: np.ndarray, k: int, index: str = "Flat", nprobe: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest references by inner product (cosine for L2-normalised features).

    Args:
        queries: float32 ``[nq, d]``; references: float32 ``[nr, d]``.
        k: neighbours per query (clipped to nr).
        index: faiss factory string (``"Flat"``, ``"IVF1024,Flat"``, ``"IVF4096,PQ32"``...);
            a trainable index is trained on the references (:func:`build_index`).

    Returns:
        ``(scores float32 [nq, k'], indices int64 [nq, k'])``, best first; an index that
        finds fewer than k' neighbours marks the gap with index -1.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    r = np.ascontiguousarray(references, dtype=np.float32)
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise ValueError(f"search: queries {q.shape} and references {r.shape} must be [n, d] alike")
    if k < 1:
        raise ValueError(f"search: k must be >= 1, got {k}")
    kk = min(k, len(r))
    if kk == 0 or len(q) == 0:
        return np.zeros((len(q), kk), np.float32), np.zeros((len(q), kk), np.int64)
    return search_index(build_index(r, index, nprobe), q, kk)


def normalize_scores(
    scores: np.ndarray,
    queries: np.ndarray,
    auxiliary: np.ndarray,
    alpha: float = 1.0,
    start: int = 1,
    end: int = 5,
    index: str = "Flat",
) -> np.ndarray:
    """Query-side score normalisation: ``s'(q, r) = s(q, r) - alpha * mean_{i in [start, end)} a_i(q)``.

    ``a_i(q)`` is q's i-th largest similarity (0-based) to the auxiliary features, so a
    query that resembles everything (a flat texture, a logo) is pulled down.

    Args:
        scores: ``[nq, k]`` similarities of each query's candidates.
        queries: float32 ``[nq, d]``; auxiliary: float32 ``[na, d]`` with ``na >= end``.

    Returns:
        float32 ``[nq, k]``.
    """
    if not 0 <= start < end:
        raise ValueError(f"normalize_scores: need 0 <= start < end, got [{start}, {end})")
    if len(auxiliary) < end:
        raise ValueError(f"normalize_scores: auxiliary set has {len(auxiliary)} rows, need >= end={end}")
    if len(scores) != len(queries):
        raise ValueError(f"normalize_scores: {len(scores)} score rows but {len(queries)} queries")
    aux_sims, _ = search(queries, auxiliary, end, index=index)
    bias = aux_sims[:, start:end].mean(axis=1, keepdims=True)
    return (np.asarray(scores, dtype=np.float32) - alpha * bias).astype(np.float32)


def predictions_frame(
    query_ids: Sequence[str], reference_ids: Sequence[str], scores: np.ndarray, indices: np.ndarray
) -> pd.DataFrame:
    """Search output ``[nq, k]`` -> predictions ``query_id, reference_id, score`` (gaps dropped)."""
    scores, indices = np.asarray(scores), np.asarray(indices)
    if scores.shape != indices.shape or len(scores) != len(query_ids):
        raise ValueError(
            f"predictions_frame: scores {scores.shape}, indices {indices.shape}, {len(query_ids)} queries"
        )
    keep = indices.reshape(-1) >= 0
    q = np.repeat(np.asarray(query_ids, dtype=object), indices.shape[1])[keep]
    r = np.asarray(reference_ids, dtype=object)[indices.reshape(-1)[keep]] if keep.any() else q[:0]
    return pd.DataFrame({"query_id": q, "reference_id": r, "score": scores.reshape(-1)[keep].astype(np.float64)})


def merge_view_predictions(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Multi-view search: keep each (query, reference) pair's max score, then the top k per query."""
    best = df.groupby(["query_id", "reference_id"], sort=False, as_index=False)["score"].max()
    best = best.sort_values(["query_id", "score"], ascending=[True, False], kind="stable")
    return best.groupby("query_id", sort=False).head(k).reset_index(drop=True)


def descriptor_predictions(
    query_ids: Sequence[str],
    query_features: np.ndarray,
    reference_ids: Sequence[str],
    reference_features: np.ndarray,
    cfg: EvalConfig,
    auxiliary_features: np.ndarray | None = None,
) -> pd.DataFrame:
    """Search (and normalise) descriptor features into a predictions frame.

    ``query_features`` is ``[nq, d]``, or ``[nq, V, d]`` for multi-view queries, whose
    views are searched (and normalised) separately and merged by max per pair.
    """
    qf = np.asarray(query_features, dtype=np.float32)
    n_views = qf.shape[1] if qf.ndim == 3 else 1
    flat = qf.reshape(len(qf) * n_views, -1) if qf.ndim == 3 else qf
    scores, idx = search(flat, reference_features, cfg.k, cfg.index, cfg.nprobe)
    if auxiliary_features is not None:
        scores = normalize_scores(
            scores, flat, auxiliary_features, cfg.norm_alpha, cfg.norm_start, cfg.norm_end, cfg.index
        )
    ids = np.repeat(np.asarray(query_ids, dtype=object), n_views)
    df = predictions_frame(ids, reference_ids, scores, idx)
    return merge_view_predictions(df, cfg.k) if n_views > 1 else df
