"""Time CopyNCE and a CPU descriptor training pass -> reports/benchmarks/copynce.json.

    python benchmarks/copynce.py [--repeats 15] [--skip-descriptor]

1. ``fwd_bwd_ms_per_pair_b64``: :func:`icdlib.losses.copynce` forward + backward on 64
   pairs of 196 x 196 patch tokens with 384 channels (ViT-S/16 at 224), one CPU thread,
   the median over ``--repeats`` runs divided by 64. Overlaps are random row-stochastic
   ``[64, 196, 197]`` tables with ~10% invalid share; gamma 3, lam 0.5, scale 16.
2. ``descriptor_pairs_per_s_b64``: the ``vit_tiny_cpu`` descriptor (112 px, 49 patches),
   two CPU threads, one training pass on 64 pairs (query and reference in one batch of
   128 images): forward with tokens, InfoNCE (temperature 0.05) + 5 x CopyNCE, backward.
   No optimiser step. Reported as pairs per second from the median pass.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from icdlib.losses import copynce, info_nce
from icdlib.models import build_model

OUT = Path("reports/benchmarks/copynce.json")


def random_overlaps(gen: torch.Generator, b: int, n: int, m: int) -> torch.Tensor:
    """``[b, n, m + 1]`` row-stochastic overlaps, a few patches each plus an invalid share."""
    o = torch.zeros(b, n, m + 1)
    cols = torch.randint(0, m, (b, n, 4), generator=gen)
    o.scatter_(2, cols, torch.rand(b, n, 4, generator=gen))
    o[..., m] = 0.1 * torch.rand(b, n, generator=gen)
    return o / o.sum(-1, keepdim=True)


def time_copynce(repeats: int) -> dict:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    b, n, c = 64, 196, 384
    q = torch.randn(b, n, c, generator=gen, requires_grad=True)
    r = torch.randn(b, n, c, generator=gen, requires_grad=True)
    o_qr, o_rq = random_overlaps(gen, b, n, n), random_overlaps(gen, b, n, n)
    times = []
    for i in range(repeats + 2):
        q.grad = r.grad = None
        t0 = time.perf_counter()
        copynce(q, r, o_qr, o_rq, gamma=3.0, lam=0.5, scale=16.0).backward()
        if i >= 2:  # two warm-up runs
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1000
    return {
        "fwd_bwd_ms_per_pair_b64": round(ms / b, 3),
        "fwd_bwd_ms_b64_median": round(ms, 1),
        "fwd_bwd_ms_b64_all": [round(t * 1000, 1) for t in times],
        "copynce_shape": {"pairs": b, "tokens": n, "channels": c, "threads": 1},
    }


def time_descriptor(repeats: int) -> dict:
    torch.set_num_threads(2)
    model = build_model("vit_tiny_cpu", seed=0).train()
    cfg = model.config
    gen = torch.Generator().manual_seed(1)
    b, side = 64, cfg.img_size
    n = (side // cfg.patch_size) ** 2
    images = torch.randn(2 * b, 3, side, side, generator=gen)
    o_qr, o_rq = random_overlaps(gen, b, n, n), random_overlaps(gen, b, n, n)
    times = []
    for i in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        desc, tokens = model.forward_with_tokens(images)
        loss = info_nce(desc[:b], desc[b:], temperature=0.05)
        loss = loss + 5.0 * copynce(tokens[:b], tokens[b:], o_qr, o_rq)
        loss.backward()
        if i >= 1:
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {
        "descriptor_pairs_per_s_b64": round(b / sec, 1),
        "descriptor_s_per_pass_all": [round(t, 3) for t in times],
        "descriptor_shape": {"preset": "vit_tiny_cpu", "img_size": side, "pairs": b, "threads": 2},
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--descriptor-repeats", type=int, default=5)
    ap.add_argument("--skip-descriptor", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    result = time_copynce(args.repeats)
    print(f"copynce fwd+bwd: {result['fwd_bwd_ms_per_pair_b64']} ms/pair (64 pairs, 1 thread)")
    if not args.skip_descriptor:
        result.update(time_descriptor(args.descriptor_repeats))
        rate = result["descriptor_pairs_per_s_b64"]
        print(f"vit_tiny_cpu descriptor: {rate} pairs/s (64 pairs, 2 threads)")
    result.update(torch=torch.__version__, machine=platform.machine(), processor=platform.processor())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
