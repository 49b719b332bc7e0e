"""Retrieval throughput -> reports/benchmarks/retrieval.json.

    python benchmarks/retrieval.py [--images 256] [--queries 1000] [--references 100000]
                                   [--rescore-queries 3000] [--rescore-references 2000]

* Embedding: images/s of :func:`icdlib.eval.retrieval.embed` (JPEG decode, resize, forward)
  for the ``params.yaml:descriptor`` model (preset ``vit_tiny_cpu``) from random init on 2 threads, and
  of the bare forward pass on preprocessed batches; each in float32 and under bf16 autocast
  (``eval.amp``), side by side, with the smallest cosine between the two precisions' descriptors.
* Matcher rescoring: pairs/s of :func:`icdlib.eval.rescore.rescore_pixels` for the
  ``params.yaml:matcher`` model from random init, on decoded pixels of the evaluate stage's
  shape (3,000 queries with 10 candidates each among 2,000 references): the pairwise forward
  against encode-once (each image encoded once per block, then the pairs fused) at the default
  token budget (one block) and at a 32 MiB one (many blocks); side by side, with the largest
  score difference to the pairwise forward.
* Search: queries/s of exact inner-product search (faiss ``Flat``), 1000 random
  L2-normalised 128-d queries against 100k references, 2 threads; and of
  ``IVF1024,Flat`` with ``nprobe`` 16 for comparison, with its recall@1 against Flat
  (low on structureless random vectors; real descriptors cluster far better).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch
from PIL import Image

from icdlib.eval.retrieval import embed, search

OUT = Path("reports/benchmarks/retrieval.json")
THREADS = 2


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_search(n_queries: int, n_refs: int, dim: int = 128, seed: int = 0) -> dict:
    """Queries/s of Flat and IVF inner-product search on random unit vectors."""
    rng = np.random.default_rng(seed)
    q, r = _unit(rng, n_queries, dim), _unit(rng, n_refs, dim)
    out = {"n_queries": n_queries, "n_references": n_refs, "dim": dim, "k": 10}
    t0 = time.perf_counter()
    _, flat = search(q, r, 10)
    dt = time.perf_counter() - t0
    out["flat_seconds"] = round(dt, 3)
    out["flat_queries_per_s"] = round(n_queries / dt, 1)
    t0 = time.perf_counter()
    _, ivf = search(q, r, 10, index="IVF1024,Flat", nprobe=16)
    dt = time.perf_counter() - t0
    out["ivf1024_nprobe16_seconds_incl_training"] = round(dt, 3)
    out["ivf1024_nprobe16_recall_at_1_vs_flat"] = round(float(np.mean(ivf[:, 0] == flat[:, 0])), 3)
    return out


def _model(kind: str = "descriptor"):
    """The ``params.yaml`` ``descriptor`` or ``matcher`` model (CPU preset by default), random init, and its input side."""
    from icdlib.models import DescriptorConfig, MatcherConfig, build_descriptor, build_matcher
    from icdlib.params import load_params, locate, section

    try:
        params = load_params(locate())
    except FileNotFoundError:
        params = {}
    cfg = section(params, kind, DescriptorConfig if kind == "descriptor" else MatcherConfig)
    build = build_descriptor if kind == "descriptor" else build_matcher
    return build(cfg, seed=0).eval(), int(cfg.img_size)


def bench_embed(n_images: int, seed: int = 0, rounds: int = 2) -> dict:
    """Images/s of embed() over JPEG files and of the bare forward pass, in float32 and under
    bf16 autocast (``eval.amp``), measured side by side: the two precisions alternate for
    ``rounds`` rounds and each keeps its best round."""
    from icdlib.models.precision import autocast, cpu_has_bf16

    model, size = _model("descriptor")
    rng = np.random.default_rng(seed)
    files = {False: [], True: []}
    fwd = {False: [], True: []}
    feats = {}
    x = torch.randn(64, 3, size, size)
    reps = max(1, n_images // 64)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(n_images):
            arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            p = Path(tmp) / f"R{i:06d}.jpg"
            Image.fromarray(arr).resize((256, 192), Image.BICUBIC).save(p, quality=85)
            paths.append(p)
        embed(model, paths[:8], size, batch_size=8)  # warm-up
        for _ in range(rounds):
            for amp in (False, True):
                t0 = time.perf_counter()
                feats[amp] = embed(model, paths, size, batch_size=64, num_workers=1, amp=amp)
                files[amp].append(n_images / (time.perf_counter() - t0))
                with torch.inference_mode(), autocast("cpu", amp):
                    model(x[:8])
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        model(x)
                    fwd[amp].append(64 * reps / (time.perf_counter() - t0))
    cos = (feats[False] * feats[True]).sum(1) / (
        np.linalg.norm(feats[False], axis=1) * np.linalg.norm(feats[True], axis=1))
    return {
        "n_images": n_images,
        "img_size": size,
        "dim": int(feats[False].shape[1]),
        "embed_files_images_per_s": round(max(files[False]), 1),
        "forward_only_images_per_s": round(max(fwd[False]), 1),
        "cpu_bf16_units": cpu_has_bf16(),  # without them eval.amp leaves the CPU in float32
        "embed_files_images_per_s_bf16": round(max(files[True]), 1),
        "forward_only_images_per_s_bf16": round(max(fwd[True]), 1),
        "bf16_min_cosine_to_fp32": round(float(cos.min()), 6),
        "rounds": rounds,
        "batch_size": 64,
        "decode_workers": 1,
    }


class _Pairwise(torch.nn.Module):
    """The matcher's pairwise forward alone (no ``encode`` / ``fuse``): every pair encodes both images."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, q, r):
        return self.inner(q, r)


def bench_rescore(n_queries: int, n_refs: int, k: int = 10, seed: int = 0, rounds: int = 1) -> dict:
    """Pairs/s of rescore_pixels: pairwise forward, encode-once at the default token budget and
    at 32 MiB, alternated for ``rounds`` rounds (each keeps its best)."""
    from icdlib.eval.rescore import rescore_pixels

    model, size = _model("matcher")
    rng = np.random.default_rng(seed)
    qx = torch.from_numpy(rng.integers(0, 256, (n_queries, size, size, 3), dtype=np.uint8))
    rx = torch.from_numpy(rng.integers(0, 256, (n_refs, size, size, 3), dtype=np.uint8))
    refs = np.stack([rng.choice(n_refs, size=min(k, n_refs), replace=False) for _ in range(n_queries)])
    pairs = pd.DataFrame({"query_id": np.repeat([f"Q{i}" for i in range(n_queries)], refs.shape[1]),
                          "reference_id": [f"R{j}" for j in refs.reshape(-1)], "score": 0.0})
    q_rows, r_rows = {f"Q{i}": i for i in range(n_queries)}, {f"R{j}": j for j in range(n_refs)}
    runs = {"pairwise": (_Pairwise(model), {}), "encode_once": (model, {}),
            "encode_once_32mib": (model, {"block_bytes": 32 * 2**20})}
    rate, scores = {name: [] for name in runs}, {}
    for _ in range(rounds):
        for name, (m, kw) in runs.items():
            t0 = time.perf_counter()
            scores[name] = rescore_pixels(m, pairs, q_rows, qx, r_rows, rx, batch_size=64, **kw)["score"].to_numpy()
            rate[name].append(len(pairs) / (time.perf_counter() - t0))
    best = {name: max(v) for name, v in rate.items()}
    return {
        "n_queries": n_queries, "n_references": n_refs, "candidates_per_query": int(refs.shape[1]),
        "pairs": len(pairs), "img_size": size, "batch_size": 64, "rounds": rounds,
        **{f"{name}_pairs_per_s": round(v, 1) for name, v in best.items()},
        "encode_once_speedup": round(best["encode_once"] / best["pairwise"], 2),
        "encode_once_32mib_speedup": round(best["encode_once_32mib"] / best["pairwise"], 2),
        "max_abs_score_difference": float(max(np.abs(scores[n] - scores["pairwise"]).max() for n in runs)),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--references", type=int, default=100_000)
    ap.add_argument("--rescore-queries", type=int, default=3000)
    ap.add_argument("--rescore-references", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    result = {
        "threads": THREADS,
        "machine": platform.processor() or platform.machine(),
        "search": bench_search(args.queries, args.references),
        "embed": bench_embed(args.images),
        "rescore": bench_rescore(args.rescore_queries, args.rescore_references),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
