"""The runs the training stages make: each arm's seeds, where it starts, its resolved run, its
run folders and the files its checkpoints and kept snapshots go to.

Nothing here trains or writes: the evaluation, curve and ablation stages find the files the
training stages left through it, and :mod:`icdlib.pipeline.training` trains the runs it
describes.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from icdlib.atomic import write_json
from icdlib.checkpoints import load_model, save_checkpoint
from icdlib.digest import file_sha256
from icdlib.params import resolve
from icdlib.pipeline.stage import Stage
from icdlib.train import RunConfig, resolve_run

TRUNK = "trunk"  # the arm of stage train_trunk: the shared start of every other arm
MAIN_CHECKPOINTS = {
    TRUNK: "trunk.pt",
    "infonce": "descriptor_infonce.pt",
    "copynce": "descriptor_copynce.pt",
    "matcher_bce": "matcher_bce.pt",
    "matcher_copynce": "matcher.pt",
}


def checkpoint_name(arm: str) -> str:
    """File name of an arm's final checkpoint under ``paths.models``."""
    return MAIN_CHECKPOINTS.get(arm, f"{arm}.pt")


def seed_checkpoint(st: Stage, arm: str, seed: int) -> Path:
    """An arm's final checkpoint for one training seed: the first of ``main.seeds`` is the arm's
    own file (``models/descriptor_copynce.pt``), the others ``models/<stem>_seeds/s<seed>.pt``."""
    if int(seed) == st.main.seeds[0]:
        return st.path("models", checkpoint_name(arm))
    return st.path("models", f"{Path(checkpoint_name(arm)).stem}_seeds", f"s{int(seed)}.pt")


def arm_seeds(st: Stage, arm: str, kind: str) -> tuple[int, ...]:
    """The seeds a main arm trains: every ``main.seeds`` for a descriptor arm, the first for
    the trunk and the matchers."""
    return tuple(st.main.seeds) if kind == "descriptor" and arm != TRUNK else (st.main.seeds[0],)


def start_sets(st: Stage, arm: str, kind: str) -> dict[str, Any]:
    """Where a pipeline arm starts and what it mines with, as ``--set`` keys.

    The trunk starts from ``paths.backbone`` (or random init). Every other descriptor arm
    fine-tunes the whole trunk (``train.init``) and, with ``main.knn_negatives``, draws its
    look-alike pairs from a kNN table mined with stage train_trunk's ``models/trunk.pt``.
    A matcher takes its encoder and fusion blocks from ``paths.matcher_backbone``, else the
    trunk, else ``paths.backbone``; its kNN negatives (``pairs.neg_knn_p > 0``) are mined
    with ``models/trunk.pt`` too. Without a trunk (``paths.trunk: null``, the disc21
    profile) every arm starts from ``paths.backbone`` and ``models/trunk.pt`` is that
    backbone untrained (:func:`icdlib.pipeline.training.write_untrained_trunk`), so the kNN tables come from DINO
    features, as in the released recipe (through the descriptor's random projection head).
    """
    trunk = st.path("trunk") if st.paths.trunk else None
    miner = st.path("models", checkpoint_name(TRUNK))  # stage train_trunk's output, trained or not
    out: dict[str, Any] = {}
    if arm == TRUNK:
        if st.paths.backbone:
            out["train.backbone"] = str(st.path("backbone"))
        return out
    if kind == "descriptor":
        if trunk is not None:
            out["train.init"] = str(trunk)
        elif st.paths.backbone:
            out["train.backbone"] = str(st.path("backbone"))
        if st.main.knn_negatives:
            out["train.knn_checkpoint"] = str(miner)
    else:
        start = st.paths.matcher_backbone or st.paths.trunk or st.paths.backbone
        if start:
            out["train.backbone"] = str(resolve(st.params_path, start))
        out["train.knn_checkpoint"] = str(miner)  # used only when pairs.neg_knn_p > 0
    if "train.knn_checkpoint" in out:
        out["train.knn_cache"] = str(st.path("runs", "knn"))  # every arm mines once
    return out


def stage_run(st: Stage, arm: str, seed: int | None, steps: int | None,
               extra: dict[str, Any] | None = None) -> tuple[RunConfig, dict[str, Any]]:
    """The resolved run of ``arm`` at ``seed`` (default: the first main seed) as a stage trains
    it, and the ``--set`` overrides that make it from ``params.yaml``. ``extra``: more ``--set``
    keys (a lever's); where they name a start, pair cache or kNN source, theirs is kept."""
    sets: dict[str, Any] = {"train.seed": st.main.seeds[0] if seed is None else int(seed)}
    if steps is not None:
        sets["train.steps"] = int(steps)
    sets.update(extra or {})
    run = resolve_run(st.params, arm, sets, st.params_path.name)
    if run.train.warmup_steps is not None and run.train.steps <= run.train.warmup_steps:
        sets["train.warmup_steps"] = max(0, run.train.steps // 10)
    given = {k: getattr(run.train, k.split(".", 1)[1]) for k in
             ("train.init", "train.backbone", "train.knn_checkpoint", "train.knn_cache")}
    start = start_sets(st, arm, run.train.kind)
    if run.train.kind == "matcher" and run.pairs.neg_knn_p <= 0:  # no kNN negatives: nothing to mine
        start = {k: v for k, v in start.items() if not k.startswith("train.knn_")}
    sets.update({k: v for k, v in start.items() if given[k] is None})
    if st.paths.pair_cache and run.train.pair_cache is None:  # shared by the arms that read the same pairs
        sets["train.pair_cache"] = str(st.path("pair_cache"))
    return resolve_run(st.params, arm, sets, st.params_path.name), sets


def run_names(params_file: str | Path, arm: str) -> list[str]:
    """The run folders (``paths.runs/<name>``) of a main arm: ``<arm>_s<seed>`` per seed of a
    descriptor arm (:func:`arm_seeds`), the arm's own name for the trunk and the matchers."""
    st = Stage(params_file)
    kind = resolve_run(st.params, arm, {}, st.params_path.name).train.kind
    seeds = arm_seeds(st, arm, kind)
    return [arm] if kind != "descriptor" or arm == TRUNK else [f"{arm}_s{s}" for s in seeds]


def snapshots(st: Stage, arm: str, seed: int) -> dict[int, Path]:
    """The kept snapshots of one arm and seed, by step (:func:`keep_snapshots`)."""
    folder = st.path("models", f"{arm}_steps")
    prefix = f"s{int(seed)}_step"
    return {int(f.stem[len(prefix):]): f for f in sorted(folder.glob(f"{prefix}*.pt"))}


# ------------------------------------------------- the committed trunk (paths.trunk_start)

FACTOR = 10  # the committed trunk: arms.trunk at this many times its steps


def record_path(weights: str | Path) -> Path:
    """``<stem>.record.json`` beside the weights (``<stem>.json`` is the checkpoint's sidecar)."""
    return Path(weights).with_name(Path(weights).stem + ".record.json")


def curve_path(weights: str | Path) -> Path:
    return Path(weights).with_name(Path(weights).stem + ".curve.csv")


def longer_trunk(params: dict, factor: int = FACTOR) -> dict[str, int]:
    """The ``arms.trunk.train`` keys of a trunk trained ``factor`` times longer: steps and warm-up
    scaled, a checkpoint every 100 steps."""
    base = resolve_run(params, TRUNK).train
    return {"steps": factor * base.steps, "warmup_steps": factor * base.warmup, "checkpoint_every": 100}


def copy_trunk_start(params_file: str | Path) -> Path:
    """Stage ``train_trunk`` with ``paths.trunk_start`` set: no training; the committed trunk
    (checked by :func:`check_trunk_start`) is written as ``models/trunk.pt``, every arm's start
    and kNN miner, with a ``metrics.json`` that says where it came from."""
    st = Stage(params_file)
    src = st.path("trunk_start")
    model, meta = check_trunk_start(src, st.params)
    rec = record_path(src)
    return write_start(st, model, {"seed": (meta.get("run") or {}).get("train", {}).get("seed"),
                                   "step": meta.get("step"), "start": st.relative(src)}, {
        "start": st.relative(src), "sha256": file_sha256(src),
        "record": json.loads(rec.read_text()) if rec.is_file() else None,
        "why": "paths.trunk_start: the committed trunk (stage pretrain_trunk, reports/tables/starts.md)"})


def write_start(st: Stage, model, meta: dict, record: dict) -> Path:
    """Stage ``train_trunk`` without training: ``model`` becomes ``models/trunk.pt`` (``meta`` in
    its checkpoint) and ``reports/train/trunk/metrics.json`` says where it came from (``record``)."""
    dest = st.path("models", checkpoint_name(TRUNK))
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest, model, {"arm": TRUNK, **meta})
    live = st.path("reports", "train", TRUNK)
    live.mkdir(parents=True, exist_ok=True)
    write_json(live / "metrics.json", {"trained": False, **record})
    return dest


def check_trunk_start(path: str | Path, params: dict, where: str = "paths.trunk_start"):
    """``(model, meta)`` of a committed trunk, refused (naming the file) when its weights differ from
    its record's sha256 or its model config from the ``arms.trunk`` run's."""
    path = Path(path)
    model, meta = load_model(path, what=where)
    if meta.get("kind") != "descriptor":
        raise ValueError(f"{where}: {path} holds a {meta.get('kind')!r} model, expected the descriptor trunk")
    rec = record_path(path)
    if rec.is_file():
        want = json.loads(rec.read_text()).get("sha256")
        if want and file_sha256(path) != want:
            raise ValueError(f"{where}: {path} does not match the sha256 in {rec.name}: the weights changed; "
                             "re-create them with: make pretrain-trunk")
    expected = asdict(resolve_run(params, TRUNK).model)
    got = meta.get("config") or {}
    diff = sorted(k for k in expected if k in got and got[k] != expected[k])
    if diff:
        raise ValueError(f"{where}: {path} was trained with another descriptor config: "
                         + ", ".join(f"{k}={got[k]!r} (params: {expected[k]!r})" for k in diff))
    return model, meta
