"""Learning curves in uAP: each arm's kept snapshots (``train.snapshots``) evaluated on the eval split.

They are what the budgets of the default profile were chosen from: the descriptor curve
(InfoNCE and CopyNCE from the shared trunk, step 0 being the trunk itself) shows how long
the arms must train before they separate, and the matcher curve shows where each matcher
arm stands against the descriptor whose candidates it re-ranks, budget by budget. ``ev`` is
an :class:`icdlib.pipeline.evaluation.Evaluator` (which imports this module).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from icdlib.eval.engine import load_checkpoint
from icdlib.pipeline.stage import MATCHER_ROWS, Stage
from icdlib.pipeline.arms import TRUNK, checkpoint_name, seed_checkpoint, snapshots, start_sets
from icdlib.train import resolve_run

CURVE_COLUMNS = ["arm", "seed", "step", "pairs", "uAP", "checkpoint"]
HORIZON = 1e12  # training pairs past which an extrapolated crossing counts as "not in sight"


def _pairs_per_step(st: Stage, arm: str) -> int:
    """Training pairs one optimiser step of ``arm`` reads in the pipeline: a descriptor item with
    a kNN table (its own ``train.knn_checkpoint``, or the one :func:`start_sets` gives it) is two."""
    t = resolve_run(st.params, arm, {}, st.params_path.name).train
    mined = t.knn_checkpoint is not None or "train.knn_checkpoint" in start_sets(st, arm, t.kind)
    return int(t.batch_size) * (2 if t.kind == "descriptor" and mined else 1)


def _points(st: Stage, arm: str, seed: int, final: Path, final_uap: float | None,
            score: Callable[[int, Path], float]) -> list[dict[str, Any]]:
    """One curve row per kept snapshot and the final model; ``final_uap``, when the stage has
    already evaluated the final model, is used instead of scoring it again."""
    steps = int(resolve_run(st.params, arm, {}, st.params_path.name).train.steps)
    rows = []
    for step, ckpt in sorted({**snapshots(st, arm, seed), steps: final}.items()):
        uap = final_uap if step == steps and final_uap is not None else score(step, ckpt)
        rows.append({"arm": arm, "seed": seed, "step": step, "pairs": step * _pairs_per_step(st, arm),
                     "uAP": float(uap), "checkpoint": st.relative(ckpt)})
    return rows


def descriptor_curve(ev: Any, arms: tuple[str, ...] = ("infonce", "copynce"),
                     finals: dict[str, float] | None = None) -> pd.DataFrame:
    """uAP (no SN) of each descriptor arm's first-seed snapshots, its final model and its start
    (step 0: the trunk, when there is one); ``CURVE_COLUMNS``. ``finals``: arm -> the final
    model's uAP where the caller has it already."""
    st = ev.st
    seed = st.main.seeds[0]
    rows: list[dict[str, Any]] = []
    trunk = st.path("models", checkpoint_name(TRUNK))
    start = None
    if st.paths.trunk is not None and trunk.is_file():
        model, meta = load_checkpoint(trunk, "descriptor")
        start = ev.descriptor_plain(model, int(meta["config"]["img_size"]), "curve_trunk")
    for arm in arms:
        if start is not None:
            rows.append({"arm": arm, "seed": seed, "step": 0, "pairs": 0, "uAP": start,
                         "checkpoint": st.relative(trunk)})
        def score(step: int, ckpt: Path, arm: str = arm) -> float:
            model, meta = load_checkpoint(ckpt, "descriptor")
            return ev.descriptor_plain(model, int(meta["config"]["img_size"]), f"curve_{arm}_s{seed}_step{step}")

        rows += _points(st, arm, seed, seed_checkpoint(st, arm, seed), (finals or {}).get(arm), score)
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def matcher_curve(ev: Any, candidates: pd.DataFrame, descriptor_uap: float,
                  finals: dict[str, float] | None = None,
                  arms: tuple[str, ...] = tuple(MATCHER_ROWS)) -> pd.DataFrame:
    """uAP (plain, no LCE) of each matcher arm's snapshots and final model on ``candidates``;
    ``CURVE_COLUMNS`` plus ``descriptor_uAP``, the uAP of the candidates' own scores.
    ``finals``: arm -> the final model's plain uAP where the caller has it already."""
    st = ev.st
    seed = st.main.seeds[0]
    rows: list[dict[str, Any]] = []

    def score(step: int, ckpt: Path) -> float:
        model, meta = load_checkpoint(ckpt, "matcher")
        metrics, _ = ev.bench.score(ev.bench.matcher(model, int(meta["config"]["img_size"]), candidates, 0)["plain"])
        return float(metrics.uAP)

    for arm in arms:
        rows += _points(st, arm, seed, st.path("models", checkpoint_name(arm)), (finals or {}).get(arm), score)
    out = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    out["descriptor_uAP"] = float(descriptor_uap)
    return out


def overtaking_budget(curve: pd.DataFrame, arm: str) -> float | None:
    """Training pairs at which ``arm``'s uAP would reach the descriptor's, by the least-squares
    line of uAP against log(pairs) through every trained budget (one noisy budget does not
    decide the trend, as it would with the last two alone); None when the last budget has
    reached it already, fewer than two budgets exist, the fitted trend is flat or falling, or
    the crossing lies past :data:`HORIZON` pairs (no overtaking in sight)."""
    c = curve[(curve["arm"] == arm) & (curve["pairs"] > 0)].sort_values("pairs")
    if c["pairs"].nunique() < 2:
        return None
    target = float(c["descriptor_uAP"].iloc[0])
    if float(c["uAP"].iloc[-1]) >= target:
        return None
    x = np.log(c["pairs"].to_numpy(float))
    y = c["uAP"].to_numpy(float)
    slope = float(np.dot(x - x.mean(), y - y.mean()) / np.dot(x - x.mean(), x - x.mean()))
    if slope <= 0:
        return None
    log_pairs = x.mean() + (target - y.mean()) / slope
    return float(math.exp(log_pairs)) if log_pairs <= math.log(HORIZON) else None
