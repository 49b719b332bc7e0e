"""The paper's orderings, each with a 95 % interval over seeds and queries.

Every claim compares two prediction sets per training seed on the same queries:
``gap`` is the mean over the shared seeds of ``uAP(a) - uAP(b)``, and ``[ci_low, ci_high]``
its bootstrap interval (:func:`icdlib.eval.intervals.paired_interval`: seeds and queries
resampled together). Verdicts: ``holds`` when the interval lies above 0, ``fails`` when
it lies below, ``inconclusive`` otherwise. A hash baseline has no seed and is compared
with every seed of the other side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from icdlib.eval.intervals import RankedPredictions, paired_interval, rank_predictions
from icdlib.eval.metrics import read_ground_truth, read_predictions

COLUMNS = ["claim", "a", "b", "gap", "ci_low", "ci_high", "seeds", "verdict"]
HASHES = ("PDQ", "pHash")


@dataclass(frozen=True)
class Claim:
    """``a > b`` in uAP; ``a`` and ``b`` name prediction sets (see :func:`prediction_sets`)."""

    name: str
    a: str
    b: str


# The claim names are a contract (reports/tables/orderings.csv is read by outside checks).
CLAIMS = (
    Claim("copynce>infonce", "CopyNCE descriptor", "InfoNCE descriptor"),
    Claim("copynce>infonce (SN)", "CopyNCE descriptor + SN", "InfoNCE descriptor + SN"),
    Claim("infonce>best_hash", "InfoNCE descriptor", "best hash"),
    Claim("pixtrace>uniform", "ablation copynce", "ablation copynce_uniform"),
    Claim("copynce_on>off (ablation)", "ablation copynce", "ablation infonce"),
    Claim("matcher>descriptor", "matcher (CopyNCE)", "CopyNCE descriptor"),
    Claim("matcher_copynce>matcher_bce", "matcher (CopyNCE)", "matcher (BCE only)"),
)
VARIANT_SUFFIX = {"plain": "", "sn": " + SN", "lce": " + LCE"}


def prediction_sets(result: dict[str, Any], ablation: dict[str, Any]) -> dict[str, dict[int | None, str]]:
    """Recorded prediction files by set name and seed (``None``: a seedless hash baseline).

    Names: every evaluation row with its variant suffix (``"CopyNCE descriptor + SN"``),
    and ``"ablation <arm>"`` for the ablation runs.
    """
    sets: dict[str, dict[int | None, str]] = {}
    for label, row in result["rows"].items():
        for variant, suffix in VARIANT_SUFFIX.items():
            for run in row.get("runs", [row]):  # a row over several training seeds lists each run
                if variant in run:
                    seed = None if label in HASHES else int(run["seed"])
                    sets.setdefault(label + suffix, {})[seed] = run[variant]["predictions"]
    for arm, rec in ablation["arms"].items():
        sets[f"ablation {arm}"] = {int(s): p for s, p in zip(rec["seeds"], rec.get("predictions", []))}
    return sets


def orderings_frame(sets: dict[str, dict[int | None, str]], ground_truth: str | Path,
                    locate: Callable[[str], Path], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per claim of :data:`CLAIMS`: ``claim, a, b, gap, ci_low, ci_high, seeds, verdict``.

    ``locate`` turns a recorded prediction path into a file. A claim whose sets were not
    produced (a profile without matchers, say) is reported with verdict ``missing``.
    """
    gt = read_ground_truth(ground_truth)
    gt_q, gt_r = gt["query_id"].astype(str).tolist(), gt["reference_id"].tolist()
    frames: dict[str, pd.DataFrame] = {}

    def load(path: str) -> pd.DataFrame:
        if path not in frames:
            frames[path] = read_predictions(locate(path))
        return frames[path]

    needed = {n for c in CLAIMS for n in (c.a, c.b) if n in sets}
    queries = list(dict.fromkeys(gt_q + [q for n in needed for p in sets[n].values()
                                         for q in load(p)["query_id"].astype(str)]))
    ranked: dict[str, RankedPredictions] = {}

    def ranked_sets(name: str) -> dict[int | None, RankedPredictions]:
        out = {}
        for s, p in sets[name].items():
            if p not in ranked:
                ranked[p] = rank_predictions(load(p), gt_q, gt_r, queries)
            out[s] = ranked[p]
        return out

    if "best hash" not in sets:
        hashes = [h for h in HASHES if h in sets]
        if hashes:
            best = max(hashes, key=lambda h: ranked_sets(h)[None].uap())
            sets = {**sets, "best hash": sets[best]}
    rows = []
    for c in CLAIMS:
        a, b = c.a, c.b
        if a not in sets or b not in sets or not sets[a] or not sets[b]:
            rows.append({"claim": c.name, "a": a, "b": b, "gap": float("nan"), "ci_low": float("nan"),
                         "ci_high": float("nan"), "seeds": "", "verdict": "missing"})
            continue
        if b == "best hash":
            b = next(h for h in HASHES if sets.get(h) == sets["best hash"])
        iv = paired_interval(ranked_sets(a), ranked_sets(b), n_boot=n_boot, seed=seed)
        rows.append({"claim": c.name, "a": a, "b": b, "gap": iv.gap, "ci_low": iv.low, "ci_high": iv.high,
                     "seeds": ",".join(str(s) for s in iv.seeds), "verdict": iv.verdict})
    return pd.DataFrame(rows, columns=COLUMNS)


def orderings_markdown(df: pd.DataFrame, where: str, n_boot: int) -> str:
    """``orderings.md``: the same rows as ``orderings.csv``, for reading."""
    lines = ["# Paper orderings at this scale", "", where, "",
             "| claim | a | b | gap (uAP) | 95 % interval | seeds | verdict |", "|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        interval = "" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        gap = "" if pd.isna(r["gap"]) else f"{r['gap']:+.4f}"
        lines.append(f"| `{r['claim']}` | {r['a']} | {r['b']} | {gap} | {interval} | {r['seeds']} "
                     f"| **{r['verdict']}** |")
    lines += ["", f"`gap`: mean over the seeds both sides share of uAP(a) - uAP(b). The interval is a percentile "
              f"bootstrap ({n_boot} replicates) that resamples the seeds and, jointly for both sides, the queries. "
              "`holds`: the interval lies above 0; `fails`: below 0; `inconclusive`: it contains 0; "
              "`missing`: this profile did not produce one of the two sides."]
    return "\n".join(lines) + "\n"
