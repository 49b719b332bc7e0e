"""A training run's saved state: checkpoints that resume exactly, and the checks before resuming."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

from icdlib.checkpoints import CheckpointError, load_model, read_checkpoint, save_checkpoint
from icdlib.params import to_dict
from icdlib.train.runs import RunConfig


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state` (``torch``: CPU generator ByteTensor; ``cuda``: one per GPU)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, run: RunConfig, objective: nn.Module, optimizer, step: int, final: bool) -> None:
    """Write a run's checkpoint atomically (:func:`icdlib.checkpoints.save_checkpoint`); with
    ``final=False`` it also holds the optimiser and RNG states a resume needs."""
    meta = {**_run_meta(run, step),
            "loss_state": {k: v for k, v in objective.state_dict().items() if not k.startswith("model.")}}
    if not final:
        meta["optimizer"] = optimizer.state_dict()
        meta["rng"] = rng_state()
    else:  # the final weights also as safetensors + JSON config, for other tools
        plain = {**meta, "loss_state": {k: v.tolist() for k, v in meta["loss_state"].items()}}
        save_checkpoint(Path(path).with_suffix(".safetensors"), objective.model, plain)
    save_checkpoint(path, objective.model, meta)


def snapshot_path(out: Path, step: int) -> Path:
    """Where a run keeps the weights of ``train.snapshots`` step ``step``."""
    return Path(out) / f"model_step{int(step)}.pt"


def kept_snapshots(out: Path) -> dict[int, Path]:
    """The snapshots a run folder holds (:func:`snapshot_path` names), by step, ascending;
    other files (``model_step_x.pt``, ``model.pt``) are left out."""
    found = {}
    for f in Path(out).glob("model_step*.pt"):
        step = f.stem[len("model_step"):]
        if step.isdigit() and snapshot_path(out, int(step)).name == f.name:
            found[int(step)] = f
    return dict(sorted(found.items()))


def save_snapshot(out: Path, run: RunConfig, model: nn.Module, step: int) -> Path:
    """The model's weights after ``step`` steps, loadable as a final checkpoint (no optimiser state)."""
    return save_checkpoint(snapshot_path(out, step), model, _run_meta(run, step))


def _run_meta(run: RunConfig, step: int) -> dict:
    """What every checkpoint of a run records: kind, model config, resolved run, arm, seed, step."""
    return {"kind": run.train.kind, "config": to_dict(run.model), "run": run.to_dict(), "arm": run.arm,
            "seed": run.train.seed, "step": int(step)}  # step: optimiser steps done == next global batch


def load_weights(model: nn.Module, path: str | Path, what: str = "checkpoint") -> dict:
    """Copy the weights of checkpoint ``path`` into ``model``; returns the checkpoint's meta.

    Raises ``ValueError`` naming the file when the checkpoint is unreadable or its model
    does not fit ``model`` (another kind, width or depth).
    """
    loaded, meta = load_model(path, what=what)
    fit_weights(model, loaded.state_dict(), meta, path, what)
    return meta


def fit_weights(model: nn.Module, source: dict, meta: dict, path: str | Path, what: str = "checkpoint") -> None:
    """Load the state dict ``source`` (read from ``path``) into ``model``, or raise
    ``CheckpointError`` naming the file when it does not fit (missing or unexpected keys, shapes)."""
    target = model.state_dict()
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    shapes = [f"{k}: checkpoint {tuple(source[k].shape)} vs model {tuple(target[k].shape)}"
              for k in sorted(set(source) & set(target)) if source[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{path}: {what} does not fit the model ({meta.get('kind')} checkpoint): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {shapes[:3]}"
        )
    model.load_state_dict(source)


# keys that change neither the data nor the arithmetic: a run may resume with others
RESUME_FREE = {"workers", "checkpoint_every", "log_every", "knn_batch_size", "pair_cache"}


def resumable_step(ckpt: Path, run: RunConfig) -> int | None:
    """The step ``train(resume="auto")`` would resume ``run`` from at ``ckpt``: None when the
    file is missing, unreadable, unsafe or written by another configuration (read once)."""
    saved = resumable(ckpt, run)
    return None if saved is None else int(saved[0].get("step", 0))


def resumable(ckpt: Path, run: RunConfig, strict: bool = False) -> tuple[dict, dict] | None:
    """``(meta, state_dict)`` of ``ckpt`` (read once) when ``run`` may resume from it.

    Not strict (``train(resume="auto")``): None when the file is missing, unreadable, unsafe or
    written by another configuration. Strict (an explicit resume): those errors are raised,
    naming the file and, for another configuration, every differing key."""
    if not Path(ckpt).is_file():
        return None
    try:
        meta, state = read_checkpoint(ckpt, "resume checkpoint")
        check_same_run(meta.get("run", {}), run, ckpt)
    except (CheckpointError, ValueError):
        if strict:
            raise
        return None  # unreadable, unsafe or another run's: "auto" starts over and overwrites it
    return meta, state


def check_same_run(saved: dict, run: RunConfig, ckpt: Path) -> None:
    """Refuse to resume a checkpoint written by a different configuration."""
    now = run.to_dict()
    diffs = []
    for part in ("train", "model", "pairs", "edits"):
        old, new = saved.get(part) or {}, now.get(part) or {}
        for key in sorted(set(old) | set(new)):
            if part == "train" and key in RESUME_FREE:
                continue
            if old.get(key) != new.get(key) and not (
                isinstance(old.get(key), (list, tuple)) and list(old[key]) == list(new.get(key) or [])
            ):
                diffs.append(f"{part}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
    if diffs:
        raise ValueError(
            f"{ckpt} was written by another configuration ({'; '.join(diffs)}); resume=False "
            "(--no-resume) starts over, or use a new run folder"
        )


def trim_live(live_dir: Path, done: int) -> None:
    """Drop DVCLive rows with ``step > done`` (logged after the checkpoint we resume from).

    Rows are labelled with the number of optimiser steps done (1 for the first step).
    """
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv") if live_dir.is_dir() else ():
        with tsv.open() as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        col = rows[0].index("step")
        keep = [rows[0]] + [r for r in rows[1:] if int(r[col]) <= done]
        with tsv.open("w", newline="") as f:
            csv.writer(f, delimiter="\t").writerows(keep)
