"""Matcher rescoring of candidate pairs, plain or with Local Crop Ensembling (LCE)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from icdlib.data import load_image, worker_errors
from icdlib.eval.views import lce_passes, query_views, reference_views
from icdlib.models import preprocess
from icdlib.models.preprocess import from_pixels
from icdlib.models.precision import autocast


class ImagePairs(Dataset):
    """Candidate pairs as matcher inputs: item i is ``(q [P, 3, S, S], r [P, 3, S, S])``.

    P = 1 without LCE; with LCE, P = :func:`icdlib.eval.views.lce_passes` of ``views``: each
    query view against the full reference, then the full query against each reference crop
    (35 = 26 + 9 for the ``full`` views, 10 = 6 + 4 for ``light``).
    """

    def __init__(self, query_paths, reference_paths, size: int, lce: bool = False, views: str = "full"):
        if len(query_paths) != len(reference_paths):
            raise ValueError(f"ImagePairs: {len(query_paths)} queries vs {len(reference_paths)} references")
        self.q, self.r = list(query_paths), list(reference_paths)
        self.size, self.lce, self.views = int(size), lce, views

    def __len__(self):
        return len(self.q)

    def __getitem__(self, i):
        q, r = load_image(self.q[i]), load_image(self.r[i])
        if not self.lce:
            return preprocess([q], self.size), preprocess([r], self.size)
        qv, rv = query_views(q, self.views), reference_views(r, self.views)
        qs = qv + [q] * (len(rv) - 1)
        rs = [r] * len(qv) + rv[1:]
        return preprocess(qs, self.size), preprocess(rs, self.size)


def _cat_pairs(batch):
    return torch.cat([b[0] for b in batch]), torch.cat([b[1] for b in batch])


N_LCE_PASSES = lce_passes("full")


@torch.inference_mode()
def rescore(
    matcher: torch.nn.Module,
    pairs: pd.DataFrame,
    query_paths: dict[str, Path],
    reference_paths: dict[str, Path],
    size: int,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str = "cpu",
    lce: bool = False,
    amp: bool = False,
    lce_views: str = "full",
) -> pd.DataFrame:
    """Matcher scores of candidate pairs: ``sigmoid(matcher(q, r))``, max over LCE passes.

    Args:
        matcher: ``(q [B, 3, S, S], r [B, 3, S, S]) -> logits [B]``.
        pairs: candidate pairs (``query_id, reference_id`` columns; ``score`` is replaced).
        query_paths, reference_paths: id -> image file.
        size: matcher input side S in pixels.
        batch_size: image pairs per forward pass (LCE packs its passes of a pair together).
        lce_views: the LCE view set, ``full`` (35 passes per pair) or ``light`` (10)
            (:mod:`icdlib.eval.views`).
        amp: bf16 autocast for the forward passes (:func:`icdlib.models.precision.autocast`);
            the sigmoid is taken in float32.

    Returns:
        A copy of ``pairs`` with ``score`` in (0, 1).
    """
    _check_ids(pairs, query_paths, reference_paths)
    passes = lce_passes(lce_views) if lce else 1
    data = ImagePairs(
        [query_paths[q] for q in pairs["query_id"]], [reference_paths[r] for r in pairs["reference_id"]], size, lce,
        lce_views,
    )
    loader = DataLoader(
        data, batch_size=max(1, batch_size // passes), num_workers=num_workers, collate_fn=_cat_pairs
    )
    with worker_errors():
        return _score_batches(matcher, loader, pairs, passes, batch_size, device, amp, lce)


@torch.inference_mode()
def rescore_pixels(
    matcher: torch.nn.Module,
    pairs: pd.DataFrame,
    query_rows: dict[str, int],
    query_pixels: torch.Tensor,
    reference_rows: dict[str, int],
    reference_pixels: torch.Tensor,
    batch_size: int = 32,
    device: str = "cpu",
    amp: bool = False,
    block_bytes: int = 512 * 2**20,
) -> pd.DataFrame:
    """:func:`rescore` (no LCE) of candidate pairs whose images are decoded already.

    ``query_pixels`` / ``reference_pixels``: uint8 ``[n, S, S, 3]`` (:mod:`icdlib.eval.pixels`),
    ``query_rows`` / ``reference_rows``: id -> row. The scores equal :func:`rescore`'s on
    the files the pixels came from (bit for bit for a matcher without ``encode``; up to float
    rounding with one).

    A matcher with ``encode`` / ``fuse`` / ``encoded_shape`` (:class:`icdlib.models.Matcher`)
    encodes each image once per block, however many of the block's pairs it is in (a query
    meets its k candidates, a reference every query that found it), then fuses the pairs. A
    block is the longest run of consecutive pairs whose distinct images' tokens fit in
    ``block_bytes`` (float32): 512 MiB holds about 14,000 images of ``vit_tiny_cpu`` at 112 px,
    so a benchmark of a few thousand queries is one block and each image is encoded once; a
    ViT-B/16 at 224 px gets about 900 images per block.
    """
    _check_ids(pairs, query_rows, reference_rows)
    qi, ri = (torch.from_numpy(np.fromiter((table[i] for i in pairs[col]), dtype=np.int64, count=len(pairs)))
              for col, table in (("query_id", query_rows), ("reference_id", reference_rows)))
    if all(hasattr(matcher, name) for name in ("encode", "fuse", "encoded_shape")):
        tokens, channels = matcher.encoded_shape
        per_block = max(2, int(block_bytes) // (4 * tokens * channels))  # at least one query and one reference
        return _score_encoded(matcher, pairs, qi, query_pixels, ri, reference_pixels, batch_size, per_block, device,
                              amp)
    batches = ((from_pixels(query_pixels[qi[s : s + batch_size]]),
                from_pixels(reference_pixels[ri[s : s + batch_size]])) for s in range(0, len(pairs), batch_size))
    return _score_batches(matcher, batches, pairs, 1, batch_size, device, amp, False)


def _score_encoded(matcher, pairs: pd.DataFrame, qi: torch.Tensor, query_pixels: torch.Tensor, ri: torch.Tensor,
                   reference_pixels: torch.Tensor, batch_size: int, block_images: int, device: str,
                   amp: bool) -> pd.DataFrame:
    """:func:`rescore_pixels` by ``matcher.encode`` once per image of each block of at most
    ``block_images`` distinct images, then ``matcher.fuse``."""
    matcher = matcher.eval().to(device)

    def encode(pixels: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unique, where = torch.unique(rows, return_inverse=True)
        tokens = torch.cat([matcher.encode(from_pixels(pixels[unique[s : s + batch_size]]).to(device))
                            for s in range(0, len(unique), batch_size)])
        return tokens, where.to(tokens.device)

    def logits():  # in pair order: block by block, batch by batch
        for start, stop in image_blocks(qi, ri, block_images):
            (tq, wq), (tr, wr) = encode(query_pixels, qi[start:stop]), encode(reference_pixels, ri[start:stop])
            for s in range(0, len(wq), batch_size):
                yield matcher.fuse(tq[wq[s : s + batch_size]], tr[wr[s : s + batch_size]])

    return _collect_scores(pairs, logits(), 1, device, amp, False)


def image_blocks(query_rows, reference_rows, limit: int) -> list[tuple[int, int]]:
    """``(start, stop)`` runs of consecutive pairs, each as long as its distinct query rows plus
    distinct reference rows stay within ``limit`` (at least one pair per run)."""
    q, r = np.asarray(query_rows).tolist(), np.asarray(reference_rows).tolist()
    blocks, start, seen_q, seen_r = [], 0, set(), set()
    for i, (a, b) in enumerate(zip(q, r)):
        grow = (a not in seen_q) + (b not in seen_r)
        if seen_q and len(seen_q) + len(seen_r) + grow > limit:
            blocks.append((start, i))
            start, seen_q, seen_r = i, set(), set()
        seen_q.add(a)
        seen_r.add(b)
    if q:
        blocks.append((start, len(q)))
    return blocks


def _check_ids(pairs: pd.DataFrame, queries, references) -> None:
    """Raise naming an id of ``pairs`` that ``queries`` / ``references`` (id -> image) lack."""
    for col, table, what in (("query_id", queries, "query"), ("reference_id", references, "reference")):
        missing = set(pairs[col]) - set(table)
        if missing:
            raise ValueError(f"rescore: {len(missing)} {what} id(s) have no image, e.g. {sorted(missing)[0]!r}")


def _score_batches(matcher, batches, pairs: pd.DataFrame, passes: int, batch_size: int, device: str, amp: bool,
                   lce: bool) -> pd.DataFrame:
    """``pairs`` with ``score`` = the max over ``passes`` of ``sigmoid(matcher(q, r))``, from
    ``batches`` of ``(q, r)`` inputs holding ``passes`` consecutive rows per pair."""
    matcher = matcher.eval().to(device)

    def logits():
        for q, r in batches:
            yield torch.cat(
                [matcher(q[s : s + batch_size].to(device), r[s : s + batch_size].to(device)).reshape(-1)
                 for s in range(0, len(q), batch_size)]
            )

    return _collect_scores(pairs, logits(), passes, device, amp, lce)


def _collect_scores(pairs: pd.DataFrame, logit_batches, passes: int, device: str, amp: bool,
                    lce: bool) -> pd.DataFrame:
    """``pairs`` with ``score`` = the max over ``passes`` of the sigmoid of the logits that
    ``logit_batches`` yields in pair order (``passes`` consecutive logits per pair), the batches
    drawn under ``amp``'s autocast and the sigmoid taken in float32."""
    out = np.zeros(len(pairs), dtype=np.float64)
    row = 0
    with tqdm(total=len(pairs), desc="matcher" + (" (LCE)" if lce else ""), unit="pair") as bar, \
            autocast(device, amp):
        for logits in logit_batches:
            prob = torch.sigmoid(logits.float()).cpu().numpy().reshape(-1, passes).max(axis=1)
            out[row : row + len(prob)] = prob
            row += len(prob)
            bar.update(len(prob))
    res = pairs[["query_id", "reference_id"]].copy().reset_index(drop=True)
    res["score"] = out
    return res
