"""Stage real_photos, second half: the trained models and the hashes scored on real photos.

:func:`evaluate_real_photos` scores, on the benchmark :func:`icdlib.pipeline.real_photos.prepare_real_photos`
built, the rows of the main evaluation (:mod:`icdlib.pipeline.evaluation`, same engine and
same code): PDQ and pHash, the InfoNCE and CopyNCE descriptors (every seed of
``main.seeds``, plain and score-normalised against the pipeline's own training images,
as in the main evaluation), and both matchers rescoring the CopyNCE descriptor's top-k
candidates (plus LCE for ``report.lce_arms``). The split is ``dataset.eval_split`` (the
benchmark's preferred query split when it has no such folder).

Writes ``paths.reports/real_photos/results.json`` (the layout of ``reports/eval/results.json``
plus ``run``, ``reason``, ``source`` and ``description``), ``metrics.json``, the prediction
files under ``paths.features/real_photos/``, and the table
``paths.reports/tables/real_photos.{csv,md}`` (the descriptor table's columns). Where the
benchmark could not be built, ``results.json`` is ``{"run": false, "reason": ..., "rows": {}}``
and every row of the table says "not run: <reason>".
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from icdlib.pipeline.evaluation import (DESCRIPTOR_ROWS, Evaluator, candidates_of, descriptor_rows, hash_rows,
                                        matcher_rows, metrics_of, summary)
from icdlib.pipeline.orderings import HASHES
from icdlib.pipeline.real_photos import describe, read_status
from icdlib.pipeline.report import METRICS, Row, main_rows, write_table
from icdlib.pipeline.stage import MATCHER_ROWS, Stage, write_json

PREDICTIONS = "real_photos"  # folder under paths.features
TABLE = "real_photos"  # reports/tables/real_photos.{csv,md}
TAG_KEYS = ["data", "photos", "real_photos", "edits", "eval", "report"]


def evaluate_real_photos(params_file: str | Path) -> dict[str, Any]:
    """Score every row on the real-photo benchmark, or record why it was not built (module docstring).

    Returns the result written to ``results.json`` plus ``table``: the table's DataFrame.
    """
    st = Stage(params_file)
    status = read_status(st)
    preds = st.path("features", PREDICTIONS)
    shutil.rmtree(preds, ignore_errors=True)  # no prediction file of an earlier run survives
    preds.mkdir(parents=True)
    base = {"run": bool(status["run"]), "reason": status.get("reason"), "source": status.get("source"),
            "description": describe(status), "seed": st.seed, "profile": st.profile}
    if status["run"]:
        ev = Evaluator(params_file, predictions=PREDICTIONS, root=st.absolute(status["root"]))
        rows = hash_rows(ev, TAG_KEYS)
        rows.update(descriptor_rows(ev, TAG_KEYS))
        rows.update(matcher_rows(ev, candidates_of(ev, rows), TAG_KEYS))
        result = {**base, **summary(ev), "benchmark": status["root"], "rows": rows}
    else:
        print(f"real photos: {base['description']}")
        result = {**base, "rows": {}}
    out = st.path("reports", "real_photos")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    write_json(out / "metrics.json", metrics_of(result["rows"]))
    return {**result, "table": write_real_photo_table(st, result)}


def not_run_rows(st: Stage, reason: str) -> list[Row]:
    """The table's rows, each saying ``not run: <reason>`` (empty metrics)."""
    nan = {m: math.nan for m in METRICS}
    variants = [(h, "plain", [st.seed]) for h in HASHES]
    variants += [(label, v, list(st.main.seeds)) for label in DESCRIPTOR_ROWS.values() for v in ("plain", "sn")]
    variants += [(label, v, [st.main.seeds[0]]) for arm, label in MATCHER_ROWS.items()
                 for v in ("plain",) + (("lce",) if arm in st.report.lce_arms else ())]
    suffix = {"plain": "", "sn": " + SN", "lce": " + LCE"}
    return [Row(label + suffix[v], [nan] * len(seeds), seeds, st.tag(TAG_KEYS), {"variant": v, "missing": reason})
            for label, v, seeds in variants]


def write_real_photo_table(st: Stage, result: dict[str, Any]) -> pd.DataFrame:
    """``reports/tables/real_photos.{csv,md}`` from a real-photo result; returns the frame."""
    if not result["run"]:
        rows = not_run_rows(st, result["reason"])
        notes = f"Not run: {result['reason']}."
    else:
        rows = main_rows(result, ("descriptor", "matcher"))
        notes = (f"Profile `{st.profile}`, seed {st.seed}: {result['description']}. Split `{result['split']}` "
                 f"({result['n_queries']} queries, {result['n_positives']} with a copy, {result['n_references']} "
                 f"references). The models are the pipeline's, never trained on these images. SN = score "
                 f"normalisation with {result['n_auxiliary']} training images of the pipeline's own benchmark. "
                 "Matchers rescore the CopyNCE descriptor's top-k candidates.")
    return write_table(rows, TABLE, st.path("reports", "tables"), "Real photos", notes)
