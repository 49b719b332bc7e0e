"""Walking the results an evaluation stage writes (``reports/eval/results.json``), as flat frames."""

from __future__ import annotations

from typing import Any

import pandas as pd


VARIANTS = ("plain", "sn", "lce")  # no normalisation, score normalisation, local crop ensembling


def evaluated(rows: dict[str, Any]):
    """``(label, row, variant, entry)`` for every variant an evaluation row holds."""
    for label, row in rows.items():
        for variant in VARIANTS:
            if variant in row:
                yield label, row, variant, row[variant]


def results_frame(result: dict[str, Any]) -> pd.DataFrame:
    """Flat table of an :func:`evaluate_suite` result: one row per (row, variant)."""
    return pd.DataFrame([{"table": row["table"], "method": label, "variant": variant, "uAP": e["metrics"]["uAP"],
                          "RP90": e["metrics"]["RP90"], "mAP": e["metrics"]["mAP"], "seed": row["seed"]}
                         for label, row, variant, e in evaluated(result["rows"])])


def curves_frame(result: dict[str, Any]) -> pd.DataFrame:
    """Long-format PR curves of an :func:`evaluate_suite` result: ``method, variant, recall, precision``."""
    return pd.concat([pd.DataFrame({"method": label, "variant": variant, "recall": e["curve"]["recall"],
                                    "precision": e["curve"]["precision"]})
                      for label, _, variant, e in evaluated(result["rows"])], ignore_index=True)
