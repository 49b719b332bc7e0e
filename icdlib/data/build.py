"""The embedded copy-detection benchmark: a deterministic builder and its CLI.

:func:`build_benchmark` writes a small DISC21-style benchmark from procedural sources
(:mod:`icdlib.data.sources`) and the edit library (:mod:`icdlib.edits`)::

    OUT/training_images/T000000.jpg ...  unlabelled training images
    OUT/reference_images/R000000.jpg ... the searched database
    OUT/dev_queries/Q00000.jpg ...       queries for development
    OUT/final_queries/Q01000.jpg ...     held-back test queries (ids continue after dev)
    OUT/dev_ground_truth.csv             query_id,reference_id (empty: distractor)
    OUT/final_ground_truth.csv
    OUT/manifest.json                    seed, config, source kinds and every query's edits;
                                         written last, atomically: it marks a complete build

A positive query is an edited copy of one reference; a distractor is edited the same way
from a source that is in no split. Training images, references, distractor sources and
the foreign images pasted in by composite edits ("donors") are drawn from disjoint seed
streams, so no two roles share a source. Every image is a pure function of
``(seed, role, index)``, so the output is byte-identical for any number of processes.

CLI::

    python -m icdlib.data build --out data/bench [--seed 0] [--size default] [--params params.yaml]
    python -m icdlib.data build --photos DIR --out OUT [--queries N]   (:mod:`icdlib.data.photo_bench`)
    python -m icdlib.data photos --out DIR [--cache DIR]   Debian's photos (:mod:`icdlib.data.debian_photos`)
    python -m icdlib.data check --root data/bench [--workers 4] [--cache data/bench]
    python -m icdlib.data prepare --raw DISC21_DOWNLOAD --out data/disc21   (:mod:`icdlib.data.raw`)

Reading a benchmark (this one or the real DISC21) is :class:`icdlib.data.Disc21`,
re-exported here with :func:`load_image`.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm  # text bars: logged by papermill --log-output, kept by the saved notebook

from icdlib import edits
from icdlib.edits import EditConfig

from icdlib.data import raw
from icdlib.data.disc21 import BUILDING, SPLIT_DIRS, Disc21, load_image  # noqa: F401  (re-exported)
from icdlib.data.layout_writer import (ID_PREFIX, ROLES, derive_seed, finish_build, image_id,  # noqa: F401
                                       plan_split_queries, start_build, write_ground_truth)
from icdlib.params import load_params, locate, resolve, section, to_dict
from icdlib.data.sources import PhotoPool, SourceConfig, pick_kind, render

# named benchmark sizes, differing only in counts
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(training=48, reference=24, dev_queries=16, final_queries=16),  # unit tests, ~1 s
    "quick": dict(training=4000, reference=500, dev_queries=250, final_queries=250),  # smoke runs, ~15 s
    # CPU study. 3k evaluated queries: the orderings' intervals are dominated by which queries were
    # drawn (1k gave about +-0.014 uAP on a paired gap whose seeds spread by +-0.003)
    "default": dict(training=20000, reference=2000, dev_queries=3000, final_queries=1000),
    "paper": dict(training=100000, reference=20000, dev_queries=5000, final_queries=5000),  # GPU study
}


@dataclass(frozen=True)
class BuildConfig:
    """The ``data`` section of params.yaml: what :func:`build_benchmark` writes.

    Counts come from the named ``size`` (:data:`SIZES`) unless overridden one by one.
    """

    size: str = "default"  # 20k training / 2k references / 3k+1k queries: builds in ~1-2 min on 2 cores
    image_size: int = 128  # sources are square; 128 px is twice the 64-112 px CPU model input
    positive_rate: float = 0.5  # half the queries copy a reference, the rest are distractors
    jpeg_quality: int = 90  # high enough that JPEG is not itself a strong edit
    workers: int = 2  # processes; the output does not depend on it
    edit_families: tuple[str, ...] | None = None  # None: every edit family, at the edits config's severity
    sources: SourceConfig = field(default_factory=SourceConfig)  # mix of procedural kinds (and photos)
    training: int | None = None  # optional count overrides of the named size (None: keep the size's)
    reference: int | None = None
    dev_queries: int | None = None
    final_queries: int | None = None

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"BuildConfig.size: unknown size {self.size!r}; known {list(SIZES)}")
        if int(self.image_size) < 32:
            raise ValueError(f"BuildConfig.image_size must be >= 32, got {self.image_size}")
        if not 0.0 <= self.positive_rate <= 1.0:
            raise ValueError(f"BuildConfig.positive_rate must be in [0, 1], got {self.positive_rate}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"BuildConfig.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if int(self.workers) < 1:
            raise ValueError(f"BuildConfig.workers must be >= 1, got {self.workers}")
        for k, v in self.counts.items():
            if v < (1 if k != "final_queries" else 0):
                raise ValueError(f"BuildConfig.{k} must be >= 1, got {v}")

    @property
    def counts(self) -> dict[str, int]:
        """``{split: n_images}`` after overrides."""
        base = dict(SIZES[self.size])
        for k in base:
            if getattr(self, k) is not None:
                base[k] = int(getattr(self, k))
        return base


def data_config(params: dict, source: str = "params.yaml") -> BuildConfig:
    """The :class:`BuildConfig` of a parsed params dict (section ``data``)."""
    return section(params, "data", BuildConfig, source)


# ---------------------------------------------------------------------- workers
class _Worker:
    """Renders, edits and writes one image; one instance per process."""

    def __init__(self, out: Path, cfg: BuildConfig, seed: int, edit_config: Any):
        self.out, self.cfg, self.seed, self.edit_config = out, cfg, int(seed), edit_config
        s = cfg.sources
        self.photos = PhotoPool(s.photo_dir, s.skimage_photos) if s.photo_share > 0 else None

    def source(self, role: str, index: int):
        """``(PIL image, kind)`` of source ``index`` of ``role``.

        Photo crops: photo ``i`` of the pool serves only role ``i % 3`` (training,
        reference, distractor/donor), so crops of one photo never cross roles.
        """
        rng = np.random.default_rng(derive_seed(self.seed, role, index))
        kind = pick_kind(rng, self.cfg.sources)
        size = (self.cfg.image_size, self.cfg.image_size)
        if kind == "photo":
            part = {"training": 0, "reference": 1}.get(role, 2)
            allowed = [i for i in range(len(self.photos)) if i % 3 == part] or list(range(len(self.photos)))
            img, idx = self.photos.crop(rng, size, allowed)
            return img, f"photo:{self.photos.names[idx]}"
        return render(kind, rng, size), kind

    def donor(self, seed: int):
        """A foreign image for composite edits, from the donor stream (in no split)."""
        return self.source("donor", int(seed) % (1 << 31))[0]

    def save(self, img, folder: str, name: str) -> None:
        img.save(self.out / folder / f"{name}.jpg", format="JPEG", quality=int(self.cfg.jpeg_quality),
                 subsampling="4:2:0", optimize=False)

    def __call__(self, task: tuple):
        what = task[0]
        if what in ("training", "reference"):
            _, index = task
            img, kind = self.source(what, index)
            self.save(img, SPLIT_DIRS[what], image_id(what, index))
            return kind
        _, qindex, split, ref_index, distractor_index = task
        if ref_index is not None:
            src, kind = self.source("reference", ref_index)
            source_id = image_id("reference", ref_index)
        else:
            src, kind = self.source("distractor", distractor_index)
            source_id = f"D{distractor_index:06d}"
        specs = edits.sample_chain(
            derive_seed(self.seed, "edit", qindex), families=self.cfg.edit_families, config=self.edit_config
        )
        edited, trace = edits.apply(src, specs, donors=self.donor, config=self.edit_config)
        qid = image_id("query", qindex)
        self.save(edited.convert("RGB"), SPLIT_DIRS[split], qid)
        return {
            "query_id": qid,
            "split": split,
            "reference_id": image_id("reference", ref_index) if ref_index is not None else None,
            "source_id": source_id,
            "source_kind": kind,
            "size": list(edited.size),
            "traced_fraction": round(float(trace.valid_mask().mean()), 4),
            "specs": specs,
        }


_WORKER: _Worker | None = None


def _init_worker(out, cfg, seed, edit_config):
    global _WORKER
    _WORKER = _Worker(out, cfg, seed, edit_config)


def _run_task(task):
    return _WORKER(task)


# ---------------------------------------------------------------------- plan
def plan_queries(cfg: BuildConfig, seed: int) -> list[tuple]:
    """Query tasks ``("query", index, split, reference_index | None, distractor_index | None)``.

    Each query split gets ``round(n * positive_rate)`` positives at random positions.
    Positives copy distinct references while there are enough, and reuse them otherwise
    (:func:`icdlib.data.layout_writer.plan_split_queries`).
    """
    return plan_split_queries(cfg.counts, cfg.positive_rate, seed)


def build_benchmark(out_dir: str | Path, config: BuildConfig = BuildConfig(), seed: int = 0,
                    edit_config: Any = None, progress: bool = True) -> dict[str, Any]:
    """Write the benchmark described in the module docstring to ``out_dir``.

    Args:
        out_dir: destination; its split folders, CSVs and manifest are replaced, other
            files are left alone.
        config: counts, image size, positive rate, JPEG quality, processes, sources.
        seed: the benchmark seed; the output is a pure function of (config, seed,
            edit_config), whatever ``config.workers`` is.
        edit_config: the ``icdlib.edits`` config passed to ``sample_chain`` (None: its
            defaults).
        progress: show a tqdm bar.
    Returns:
        The manifest dict, also written to ``manifest.json``: ``seed``, ``config`` (less
        ``workers``), ``counts``, ``edit_config``, ``source_kinds`` (``{"training": [kind
        per T id], "reference": [kind per R id]}``) and ``queries``: one record per query
        with ``query_id``, ``split``, ``reference_id`` (None: distractor), ``source_id``
        (its reference, or ``D......`` for a distractor source), ``source_kind``, ``size``
        (w, h), ``traced_fraction`` (share of query pixels that trace to the source) and
        ``specs`` (the edit chain; ``icdlib.edits.apply`` replays it).
    """
    if not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"build_benchmark: seed must be a non-negative int, got {seed!r}")
    out = start_build(out_dir, "build_benchmark")
    counts = config.counts
    for split in ("training", "reference", "dev_queries", "final_queries"):
        (out / SPLIT_DIRS[split]).mkdir()
    tasks: list[tuple] = [("training", i) for i in range(counts["training"])]
    tasks += [("reference", i) for i in range(counts["reference"])]
    queries = plan_queries(config, int(seed))
    tasks += queries

    args = (out, config, int(seed), edit_config)
    bar = dict(total=len(tasks), desc=f"build {config.size}", disable=not progress, mininterval=1.0)
    if config.workers == 1:
        _init_worker(*args)
        results = [_run_task(t) for t in tqdm(tasks, **bar)]
    else:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"  # fork: no re-import per process
        with mp.get_context(method).Pool(config.workers, initializer=_init_worker, initargs=args) as pool:
            results = list(tqdm(pool.imap(_run_task, tasks, chunksize=32), **bar))

    n_t, n_r = counts["training"], counts["reference"]
    records = results[n_t + n_r:]
    for split, name in (("dev_queries", "dev_ground_truth.csv"), ("final_queries", "final_ground_truth.csv")):
        write_ground_truth(out / name, [(m["query_id"], m["reference_id"]) for m in records if m["split"] == split])
    recorded = {k: v for k, v in to_dict(config).items() if k != "workers"}  # output does not depend on it
    manifest = {
        "seed": int(seed),
        "config": recorded,
        "counts": counts,
        "edit_config": to_dict(edit_config) if dataclasses.is_dataclass(edit_config) else edit_config,
        "source_kinds": {"training": results[:n_t], "reference": results[n_t:n_t + n_r]},
        "queries": records,
    }
    finish_build(out, manifest)
    return manifest


def edit_config(params: dict, source: str = "params.yaml"):
    """The ``icdlib.edits.EditConfig`` of a parsed params dict (section ``edits``), or None without one."""
    return section(params, "edits", EditConfig, source) if "edits" in params else None


# ---------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    from icdlib.data import debian_photos, photo_bench  # imported here: the CLI is their only use in this module

    ap = argparse.ArgumentParser(prog="python -m icdlib.data",
                                 description="Build, check or prepare a DISC21-layout benchmark.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the embedded benchmark, or one from a folder of photos (--photos)")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--seed", type=int, default=None, help="benchmark seed (default: params.yaml's top-level seed)")
    b.add_argument("--size", choices=list(SIZES), default=None, help="named size (default: params.yaml data.size)")
    b.add_argument("--params", default=None, help="params file (default: params.yaml if found)")
    b.add_argument("--workers", type=int, default=None, help="processes (output does not depend on it)")
    photo_bench.add_arguments(b)
    c = sub.add_parser("check", help="validate a benchmark folder and print split counts")
    c.add_argument("--root", required=True, help="benchmark folder")
    c.add_argument("--ground-truth", default=None, help="ground-truth CSV to use instead of the root's")
    c.add_argument("--no-decode", action="store_true", help="skip decoding every image")
    c.add_argument("--workers", type=int, default=1, help="processes decoding images (default 1)")
    c.add_argument("--cache", default=None, help="folder (or file) of the validation cache: unchanged images "
                   "are not decoded again (default: none)")
    raw.add_parser(sub)
    debian_photos.add_parser(sub)
    args = ap.parse_args(argv)

    try:
        if args.cmd == "build":
            path = Path(args.params) if args.params is not None else None
            if path is None:
                try:  # $ICDLIB_PARAMS, ./params.yaml or a parent's; none: the defaults
                    path = locate("params.yaml")
                except FileNotFoundError:
                    pass
            params = load_params(path) if path is not None else {}
            source = str(path) if path is not None else "defaults"
            seed = args.seed if args.seed is not None else int(params.get("seed", 0))
            if args.photos is not None:
                photo_bench.run(args, params, source, seed, edit_config(params, source))
                return 0
            photo_bench.refuse_photo_flags(args)
            cfg = data_config(params, source)
            changes = {k: v for k, v in (("size", args.size), ("workers", args.workers)) if v is not None}
            cfg = dataclasses.replace(cfg, **changes)
            if cfg.sources.photo_dir is not None and path is not None:  # relative to the params file
                photo_dir = str(resolve(path, cfg.sources.photo_dir))
                cfg = dataclasses.replace(cfg, sources=dataclasses.replace(cfg.sources, photo_dir=photo_dir))
            t0 = time.perf_counter()
            build_benchmark(args.out, cfg, seed, edit_config(params, source))
            print(f"built {cfg.size} benchmark (seed {seed}) in {args.out}: "
                  + ", ".join(f"{k} {v}" for k, v in cfg.counts.items())
                  + f"; {time.perf_counter() - t0:.1f} s")
        elif args.cmd == "prepare":
            raw.run(args)
        elif args.cmd == "photos":
            return debian_photos.run(args)
        else:
            counts = Disc21(args.root, ground_truth=args.ground_truth).validate(
                decode=not args.no_decode, workers=args.workers, cache=args.cache)
            for k, v in counts.items():
                print(f"{k}: {v}")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
