"""The pixtrace stage's metrics: how exactly PixTrace follows the pixels of sampled edit chains.

The measurement itself (coordinate-encoded renders decoded without the trace) is
:mod:`icdlib.edits.exactness`; this module runs it with the params file's seed and writes
``paths.reports/pixtrace/exactness.csv`` (one row per chain) and ``exactness.json`` (summary).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from icdlib.edits.exactness import REPORT_COLUMNS, report, survey
from icdlib.pipeline.stage import Stage, write_csv, write_json

EXACTNESS_CHAINS = 24  # sampled chains (seeds seed .. seed + 23): under a second at 112 x 80 px


def exactness_report(params_file: str | Path, n_chains: int = EXACTNESS_CHAINS) -> pd.DataFrame:
    """Measure ``n_chains`` sampled chains (families geometric, composite, overlay) and write the report.

    Writes, under ``paths.reports/pixtrace/``:

    * ``exactness.csv``: columns ``chain``, ``within_1px``, ``validity_iou``, ``traceable_share``
      (:func:`icdlib.edits.exactness.report`'s rows);
    * ``exactness.json``: ``chains``, ``min_within_1px``, ``mean_within_1px``, ``min_validity_iou``
      and the ``seed`` of the first chain.

    Returns:
        The rows as a frame (the CSV's content, unrounded).
    """
    st = Stage(params_file)
    rows, summary = report(survey(n_chains, seed=st.seed))
    table = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    out = st.path("reports", "pixtrace")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "exactness.json", {**summary, "seed": st.seed})
    write_csv(out / "exactness.csv", table)
    return table
