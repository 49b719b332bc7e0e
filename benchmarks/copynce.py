"""Time CopyNCE and a CPU descriptor training pass -> reports/benchmarks/copynce.json.

    python benchmarks/copynce.py [--repeats 15] [--skip-descriptor] [--against REV ...] [--rounds 5]

1. ``fwd_bwd_ms_per_pair_b64``: :func:`icdlib.losses.copynce` forward + backward on 64
   pairs of 196 x 196 patch tokens with 384 channels (ViT-S/16 at 224), one CPU thread,
   the median over ``--repeats`` runs divided by 64. Overlaps are random row-stochastic
   ``[64, 196, 197]`` tables with ~10% invalid share; gamma 3, lam 0.5, scale 16.
2. ``descriptor_pairs_per_s_b64``: the ``vit_tiny_cpu`` descriptor (112 px, 49 patches),
   two CPU threads, one training pass on 64 pairs (query and reference in one batch of
   128 images): forward with tokens, InfoNCE (temperature 0.05) + 5 x CopyNCE, backward.
   No optimiser step. Reported as pairs per second from the median pass.

``fwd_bwd_ms_per_pair_b64_best`` is the fastest run divided by 64 (a shared machine only
ever slows a run down) and ``fwd_bwd_cpu_ms_per_pair_b64`` the median CPU time of the
computing thread divided by 64 (what other processes on the machine disturb least);
``load_average_1min`` is the machine's load before and after the run.

``--against REV`` (repeatable) times the CopyNCE of git revision ``REV`` side by side:
REV's ``icdlib`` package is extracted (``git archive``) into a temporary folder, and this
tree and every REV are timed by this same harness in child processes (``PYTHONPATH`` set
to each tree), ``--rounds`` rounds of one child per tree in turn (this tree, REV, this
tree, REV, ...), each child timing ``--repeats`` runs after two warm-ups, so a noisy
machine slows every tree alike. Item 1's figures are then this tree's over all rounds,
and the report gains ``against``: one block per REV (``rev``, ``commit``, its figures
and runs, and ``speedup`` / ``cpu_speedup``: REV's median wall-clock / thread CPU time
over this tree's).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("reports/benchmarks/copynce.json")
SHAPE = {"pairs": 64, "tokens": 196, "channels": 384, "threads": 1}


def random_overlaps(gen: torch.Generator, b: int, n: int, m: int) -> torch.Tensor:
    """``[b, n, m + 1]`` row-stochastic overlaps, a few patches each plus an invalid share."""
    o = torch.zeros(b, n, m + 1)
    cols = torch.randint(0, m, (b, n, 4), generator=gen)
    o.scatter_(2, cols, torch.rand(b, n, 4, generator=gen))
    o[..., m] = 0.1 * torch.rand(b, n, generator=gen)
    return o / o.sum(-1, keepdim=True)


def copynce_runs(repeats: int) -> dict[str, list[float]]:
    """Seconds of each of ``repeats`` CopyNCE forward + backward runs (after two warm-ups)
    of the icdlib this process imports, at :data:`SHAPE`, one thread: ``{"wall": [...], "cpu":
    [...]}`` (wall-clock time, and the CPU time of the one computing thread)."""
    from icdlib.losses import copynce

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    b, n, c = SHAPE["pairs"], SHAPE["tokens"], SHAPE["channels"]
    q = torch.randn(b, n, c, generator=gen, requires_grad=True)
    r = torch.randn(b, n, c, generator=gen, requires_grad=True)
    o_qr, o_rq = random_overlaps(gen, b, n, n), random_overlaps(gen, b, n, n)
    times: dict[str, list[float]] = {"wall": [], "cpu": []}
    for i in range(repeats + 2):
        q.grad = r.grad = None
        t0, c0 = time.perf_counter(), time.thread_time()
        copynce(q, r, o_qr, o_rq, gamma=3.0, lam=0.5, scale=16.0).backward()
        if i >= 2:  # two warm-up runs
            times["cpu"].append(time.thread_time() - c0)
            times["wall"].append(time.perf_counter() - t0)
    return times


def copynce_figures(times: dict[str, list[float]]) -> dict:
    """The report's CopyNCE keys from :func:`copynce_runs` times (median and fastest, per pair)."""
    b, wall, cpu = SHAPE["pairs"], times["wall"], times["cpu"]
    ms = statistics.median(wall) * 1000
    return {
        "fwd_bwd_ms_per_pair_b64": round(ms / b, 3),
        "fwd_bwd_ms_per_pair_b64_best": round(min(wall) * 1000 / b, 3),
        "fwd_bwd_cpu_ms_per_pair_b64": round(statistics.median(cpu) * 1000 / b, 3),
        "fwd_bwd_ms_b64_median": round(ms, 1),
        "fwd_bwd_ms_b64_all": [round(t * 1000, 1) for t in wall],
        "copynce_shape": dict(SHAPE),
    }


def time_copynce(repeats: int) -> dict:
    return copynce_figures(copynce_runs(repeats))


def time_descriptor(repeats: int) -> dict:
    from icdlib.losses import copynce, info_nce
    from icdlib.models import build_model

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


# ------------------------------------------------------------------ side by side
def interleaved(rounds: int, trees: list[str]) -> list[str]:
    """The order of the child runs: every tree once per round, ``rounds`` rounds (A, B, A, B, ...)."""
    return [t for _ in range(max(1, rounds)) for t in trees]


def resolve(rev: str) -> str:
    """The full commit id of ``rev`` (``ValueError`` naming it if git does not know it)."""
    out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ValueError(f"--against {rev}: not a commit of this repository")
    return out.stdout.strip()


def extract_package(sha: str, dest: Path) -> Path:
    """``dest`` holding the ``icdlib`` package of commit ``sha`` (``git archive``), for PYTHONPATH."""
    tar = subprocess.run(["git", "archive", "--format=tar", sha, "icdlib"], cwd=ROOT, capture_output=True,
                         check=True).stdout
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        for member in t.getmembers():  # git writes plain files and folders; refuse anything else
            if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in Path(member.name).parts:
                raise ValueError(f"git archive of {sha}: unexpected entry {member.name!r}")
        t.extractall(dest)
    return dest


def run_child(tree: Path, repeats: int) -> dict[str, list[float]]:
    """:func:`copynce_runs` of one child process timing the icdlib of ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--repeats", str(repeats)]
    with tempfile.TemporaryDirectory() as cwd:  # no stray icdlib from the working folder
        out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"timing the icdlib of {tree} failed:\n{out.stderr[-3000:]}")
    r = json.loads(line[-1][len("RESULT "):])
    if Path(r["icdlib"]).resolve() != (tree / "icdlib").resolve():  # checked, not reported (a local path)
        raise RuntimeError(f"timing {tree}: the child imported icdlib from another tree")
    return r["times"]


def against_block(rev: str, sha: str, this: dict, other: dict, rounds: int) -> dict:
    """One ``against`` entry: revision ``rev``'s figures and its medians over this tree's
    (``speedup`` wall-clock, ``cpu_speedup`` thread CPU time)."""
    fig = copynce_figures(other)
    return {"rev": rev, "commit": sha,
            **{k: v for k, v in fig.items() if k != "copynce_shape"},
            "rounds": rounds,
            "speedup": round(statistics.median(other["wall"]) / statistics.median(this["wall"]), 3),
            "cpu_speedup": round(statistics.median(other["cpu"]) / statistics.median(this["cpu"]), 3)}


def side_by_side(revs: list[str], repeats: int, rounds: int) -> tuple[dict, list[dict]]:
    """This tree's run times and one :func:`against_block` per revision, interleaved."""
    shas = [resolve(rev) for rev in revs]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this": ROOT, **{rev: extract_package(sha, Path(tmp) / f"rev{i}")
                                  for i, (rev, sha) in enumerate(zip(revs, shas))}}
        times = {t: {"wall": [], "cpu": []} for t in trees}
        order = interleaved(rounds, list(trees))
        for k, t in enumerate(order, 1):
            for key, runs in run_child(trees[t], repeats).items():
                times[t][key] += runs
            print(f"  [{k}/{len(order)}] {t}: median so far "
                  f"{statistics.median(times[t]['wall']) * 1000 / SHAPE['pairs']:.3f} ms/pair", flush=True)
    blocks = [against_block(rev, sha, times["this"], times[rev], rounds) for rev, sha in zip(revs, shas)]
    return times["this"], blocks


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed CopyNCE runs (per child with --against)")
    ap.add_argument("--descriptor-repeats", type=int, default=5)
    ap.add_argument("--skip-descriptor", action="store_true")
    ap.add_argument("--against", action="append", default=[], metavar="REV",
                    help="also time git revision REV side by side (repeatable; interleaved child runs)")
    ap.add_argument("--rounds", type=int, default=5, help="with --against: child runs per tree, interleaved")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # internal: time this PYTHONPATH
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1:
        ap.error("--repeats and --rounds must be >= 1")
    if args.child:
        import icdlib

        times = copynce_runs(args.repeats)
        print("RESULT " + json.dumps({"times": times, "icdlib": str(Path(icdlib.__file__).parent)}))
        return None
    load_before = os.getloadavg()[0]
    against = []
    if args.against:
        try:
            this, against = side_by_side(args.against, args.repeats, args.rounds)
        except ValueError as e:
            ap.error(str(e))
        result = copynce_figures(this)
    else:
        result = time_copynce(args.repeats)
    print(f"copynce fwd+bwd: {result['fwd_bwd_ms_per_pair_b64']} ms/pair (64 pairs, 1 thread)")
    for a in against:
        print(f"  {a['rev']} ({a['commit'][:7]}): {a['fwd_bwd_ms_per_pair_b64']} ms/pair, "
              f"this tree {a['speedup']}x as fast ({a['cpu_speedup']}x in thread CPU time; "
              f"medians of {len(a['fwd_bwd_ms_b64_all'])} runs each)")
    if not args.skip_descriptor:
        result.update(time_descriptor(args.descriptor_repeats))
        rate = result["descriptor_pairs_per_s_b64"]
        print(f"vit_tiny_cpu descriptor: {rate} pairs/s (64 pairs, 2 threads)")
    if against:
        result["against"] = against
    result.update(torch=torch.__version__, machine=platform.machine(), processor=platform.processor(),
                  cpu_count=os.cpu_count(), load_average_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)])
    result["command"] = ("python benchmarks/copynce.py "
                         + f"--repeats {args.repeats}" + (" --skip-descriptor" if args.skip_descriptor else "")
                         + "".join(f" --against {rev}" for rev in args.against)
                         + (f" --rounds {args.rounds}" if args.against else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
