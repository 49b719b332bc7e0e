"""Levers: arms of a finished pipeline run retrained with a few ``--set`` keys changed.

A lever experiment (``experiments/descriptor_levers.py``, ``experiments/matcher_levers.py``;
``experiments/matcher_lce.py`` names its variants the same way) reads a run folder the
pipeline finished, picks its variants by name on the command line (:func:`chosen_variants`),
trains each as the arm's stage trains it (:func:`icdlib.pipeline.training.stage_run`) with the
variant's keys on top into ``paths.runs/levers/<name>`` (:func:`train_variant`), and labels its
rows with the commit the run folder is checked out at (:func:`run_commit`), so that the rows of
different runs are kept apart. Nothing the pipeline wrote is changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from icdlib.params import run_commit
from icdlib.pipeline.stage import Stage
from icdlib.train import RunConfig, prepare, train
from icdlib.train.state import kept_snapshots

__all__ = ["chosen_variants", "run_commit", "train_variant"]


def chosen_variants(text: str, known: Mapping[str, Any], who: str) -> list[str]:
    """The comma-separated variant names of ``text``, in their order (empty names skipped).

    Raises ``ValueError`` (``"<who>: unknown variant(s) [...]; known: [...]"``) when a name
    is not a key of ``known``, or when ``text`` names none.
    """
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{who}: unknown variant(s) {unknown}; known: {list(known)}")
    if not names:
        raise ValueError(f"{who}: no variant named in {text!r}; known: {list(known)}")
    return names


def train_variant(st: Stage, run: RunConfig, name: str, progress: bool = True) -> dict[int, Path]:
    """Train ``run`` (a :func:`~icdlib.pipeline.training.stage_run` of the stage ``st``) into
    ``paths.runs/levers/<name>``, resuming what an earlier call left there.

    Returns ``step -> checkpoint`` of every kept budget, ascending: the run's
    ``train.snapshots`` (:func:`icdlib.train.state.kept_snapshots`) and its final model at
    ``run.train.steps``.
    """
    out = st.path("runs", "levers", name)
    prepare(run, out, data_root=st.path("data"), progress=progress)
    final = train(run, out, data_root=st.path("data"), resume="auto", progress=progress)
    points = {step: path for step, path in kept_snapshots(out).items() if step < run.train.steps}
    return {**points, int(run.train.steps): Path(final)}
