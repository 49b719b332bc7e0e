"""What every pipeline stage shares: the pipeline's own params sections and :class:`Stage`.

Each stage function is one DVC stage's work, called by its notebook with the path of the
params file; everything it writes goes under the ``paths`` of that file, and every result
record carries the seed and a config tag (:func:`config_tag`) so a table row says what
made it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from icdlib import atomic
from icdlib.atomic import write_text  # noqa: F401  (re-exported)
from icdlib.params import load_params, lookup, resolve, section


@dataclass(frozen=True)
class DatasetConfig:
    """params.yaml ``dataset``: which data the pipeline reads."""

    build: bool = True  # build the embedded benchmark; false: validate a DISC21 copy at paths.data
    eval_split: str = "dev_queries"  # query split every table is computed on
    ground_truth: str | None = None  # explicit ground truth for eval_split (None: by DISC21 name)
    on_error: str = "raise"  # raise | skip: what a missing or corrupt image does
    workers: int = 2  # processes decoding the images once; the verdicts are cached in paths.runs/validation


@dataclass(frozen=True)
class PathsConfig:
    """params.yaml ``paths`` (relative to the params file)."""

    data: str = "data/mini_disc"
    models: str = "models"
    runs: str = "runs"
    features: str = "features"
    reports: str = "reports"
    backbone: str | None = None  # DINO-format ViT weights for every trunk; None = random init
    trunk: str | None = "models/trunk.pt"  # the shared start of every arm, from stage train_trunk (null: backbone)
    trunk_start: str | None = "weights/trunk10x_vit_tiny_cpu.safetensors"  # copied by train_trunk; null: train it
    matcher_backbone: str | None = None  # the matcher trunk's start when it differs (null: trunk, else backbone)
    pair_cache: str | None = "runs/pairs"  # traced pairs made once and shared by the arms of one seed; null: on the fly
    real_photos: str | None = None  # a folder of your own photos instead of Debian's (stage real_photos)


# the matcher table's arms and their rows, in table order (stages evaluation and report, ReportConfig)
MATCHER_ROWS = {"matcher_bce": "matcher (BCE only)", "matcher_copynce": "matcher (CopyNCE)"}


@dataclass(frozen=True)
class LaunchConfig:
    """params.yaml ``launch``: how training runs are started."""

    nproc_per_node: int = 1  # > 1: each arm runs under torchrun with this many processes (GPUs)
    nnodes: int = 1  # multi-node: also set rdzv_endpoint
    rdzv_endpoint: str | None = None  # host:port of node 0 for multi-node runs
    parallel_runs: int = 2  # CPU: a stage's independent runs train this many at a time, the cores split between them

    def __post_init__(self):
        if int(self.nproc_per_node) < 1 or int(self.nnodes) < 1 or int(self.parallel_runs) < 1:
            raise ValueError(f"launch: nproc_per_node, nnodes and parallel_runs must be >= 1, got "
                             f"{self.nproc_per_node}, {self.nnodes}, {self.parallel_runs}")


@dataclass(frozen=True)
class MainConfig:
    """params.yaml ``main``: the main runs of the descriptor table."""

    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds of every main descriptor arm (tables: mean ± std)
    knn_negatives: bool = True  # descriptor arms mine kNN hard negatives with their start (paths.trunk)

    def __post_init__(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"main.seeds must be distinct and non-empty, got {list(self.seeds)}")


@dataclass(frozen=True)
class AblationConfig:
    """params.yaml ``ablation``: paired runs of the paper's ablation arms over several seeds."""

    arms: tuple[str, ...] = ("infonce", "copynce", "copynce_uniform", "copynce_c2c")  # gamma1, lam1: opt-in
    seeds: tuple[int, ...] = (0, 1, 2)  # at least 3 seeds to show the spread
    steps: int = 300  # = the main arms' train.steps: their infonce and copynce runs are reused, not retrained
    arm_seeds: dict[str, list[int]] | None = field(  # arms that run only some seeds (CPU budget); the rest run all
        default_factory=lambda: {"copynce_uniform": [0, 1], "copynce_gamma1": [0], "copynce_lam1": [0],
                                 "copynce_c2c": [0]})

    def __post_init__(self):
        if int(self.steps) < 1:
            raise ValueError(f"ablation.steps must be >= 1, got {self.steps}")
        if not self.arms or not self.seeds:
            raise ValueError("ablation: arms and seeds must be non-empty")
        for arm, seeds in (self.arm_seeds or {}).items():  # arms not in ablation.arms are not run
            if not seeds or not set(seeds) <= set(self.seeds):
                raise ValueError(f"ablation.arm_seeds.{arm}: must be a non-empty subset of ablation.seeds "
                                 f"{list(self.seeds)}, got {seeds}")

    def seeds_of(self, arm: str) -> tuple[int, ...]:
        """The seeds ``arm`` runs."""
        return tuple(int(s) for s in (self.arm_seeds or {}).get(arm, self.seeds))


@dataclass(frozen=True)
class ReportConfig:
    """params.yaml ``report``: evaluation choices of the tables."""

    lce_candidates: int = 1  # LCE rescoring covers each query's top-n candidates (35 passes per pair)
    lce_arms: tuple[str, ...] = ("matcher_copynce",)  # matcher arms whose rows get an LCE variant
    aux_images: int = 5000  # auxiliary (training) images for score normalisation; 0 = all
    random_init_seed: int = 0  # seed of the random-init descriptor row
    bootstrap: int = 1000  # replicates of the orderings' seed-and-query bootstrap

    def __post_init__(self):
        known = tuple(MATCHER_ROWS)
        if isinstance(self.lce_arms, str) or not all(a in known for a in self.lce_arms):
            raise ValueError(f"report.lce_arms must be a list of matcher arms out of {list(known)}, "
                             f"got {self.lce_arms!r}")
        object.__setattr__(self, "lce_arms", tuple(self.lce_arms))
        if int(self.bootstrap) < 100:
            raise ValueError(f"report.bootstrap must be >= 100 replicates for a 95 % interval, got {self.bootstrap}")


class Stage:
    """A params file, resolved: configs of the pipeline's own sections and its paths."""

    def __init__(self, params_file: str | Path):
        self.params_path = Path(params_file).resolve()
        self.params = load_params(self.params_path)
        src = str(self.params_path.name)
        self.seed = int(self.params.get("seed", 0))
        self.profile = str(self.params.get("profile", "default"))
        self.paths = section(self.params, "paths", PathsConfig, src)
        self.dataset = section(self.params, "dataset", DatasetConfig, src)
        self.ablation = section(self.params, "ablation", AblationConfig, src)
        self.main = section(self.params, "main", MainConfig, src)
        self.report = section(self.params, "report", ReportConfig, src)
        self.launch = section(self.params, "launch", LaunchConfig, src)

    def path(self, name: str, *parts: str) -> Path:
        """A path under ``paths.<name>``, resolved against the params file's folder."""
        return resolve(self.params_path, getattr(self.paths, name)).joinpath(*parts)

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the params file's folder, as reports record it (no machine paths)."""
        return os.path.relpath(Path(path).resolve(), self.params_path.parent)

    def absolute(self, recorded: str | Path) -> Path:
        """A path that a report recorded with :meth:`relative`, resolved again."""
        return resolve(self.params_path, str(recorded))

    def tag(self, keys: Sequence[str], **extra: Any) -> str:
        return config_tag(self.params, keys, profile=self.profile, **extra)


def config_tag(params: dict[str, Any], keys: Sequence[str], **extra: Any) -> str:
    """Short, stable description of the config behind a row.

    ``keys`` are params.yaml sections (dotted paths allowed) hashed together; ``extra``
    items are written out literally, e.g. ``arm=copynce;seed=0;params=1a2b3c4d``.
    """
    picked = {k: lookup(params, k) for k in keys}
    digest = hashlib.sha1(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:8]
    parts = [f"{k}={v}" for k, v in extra.items()] + [f"params={digest}"]
    return ";".join(parts)


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON (numpy scalars and paths allowed), written atomically
    (:func:`icdlib.atomic.write_json`)."""
    atomic.write_json(path, obj, indent=2, default=_json_default)


def write_csv(path: Path, frame: Any) -> None:
    """``frame.to_csv`` (5 decimals), written atomically like :func:`write_json`."""
    with atomic.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.5f")


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
