"""The paper's orderings, each with a 95 % interval over seeds and queries.

Every claim compares two prediction sets per training seed on the same queries:
``gap`` is the mean over the shared seeds of ``uAP(a) - uAP(b)``, and ``[ci_low, ci_high]``
its bootstrap interval (:func:`icdlib.eval.intervals.paired_interval`: seeds and queries
resampled together). Verdicts: ``holds`` when the interval lies above 0, ``fails`` when
it lies below, ``inconclusive`` otherwise; ``missing`` when this profile did not produce a
side, ``not run`` when the claim's benchmark could not be built here (``note`` says why).
A hash baseline, and the start every arm fine-tunes from (one model), have no seed and are
compared with every seed of the other side.

Claims are scored on one benchmark each: the pipeline's own (``embedded``: paths.data), or
the benchmark of stage real_photos (``real photos``), whose prediction sets carry the
suffix `` (real photos)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from icdlib.eval.intervals import RankedPredictions, paired_interval, rank_predictions
from icdlib.eval.metrics import read_ground_truth, read_predictions

COLUMNS = ["claim", "a", "b", "gap", "ci_low", "ci_high", "seeds", "verdict", "note"]
HASHES = ("PDQ", "pHash")
EMBEDDED, REAL_PHOTOS = "embedded", "real photos"  # the benchmarks a claim can be scored on
REAL_SUFFIX = " (real photos)"  # prediction sets of the real-photo benchmark: "CopyNCE descriptor (real photos)"


@dataclass(frozen=True)
class Claim:
    """``a > b`` in uAP; ``a`` and ``b`` name prediction sets (see :func:`prediction_sets`),
    both scored on ``benchmark``'s queries and ground truth."""

    name: str
    a: str
    b: str
    benchmark: str = EMBEDDED


# The claim names are a contract (reports/tables/orderings.csv is read by outside checks).
CLAIMS = (
    Claim("copynce>infonce", "CopyNCE descriptor", "InfoNCE descriptor"),
    Claim("copynce>infonce (SN)", "CopyNCE descriptor + SN", "InfoNCE descriptor + SN"),
    Claim("infonce>best_hash", "InfoNCE descriptor", "best hash"),
    Claim("pixtrace>uniform", "ablation copynce", "ablation copynce_uniform"),
    Claim("copynce_on>off (ablation)", "ablation copynce", "ablation infonce"),
    Claim("matcher>descriptor", "matcher (CopyNCE)", "CopyNCE descriptor"),
    Claim("matcher_copynce>matcher_bce", "matcher (CopyNCE)", "matcher (BCE only)"),
    # not the paper's: whether fine-tuning adds to the start at all (the paper's DINO start scores far below)
    Claim("copynce>start", "CopyNCE descriptor", "start descriptor (no fine-tuning)"),
    Claim("infonce>start", "InfoNCE descriptor", "start descriptor (no fine-tuning)"),
    Claim("copynce>infonce (real photos)", "CopyNCE descriptor" + REAL_SUFFIX, "InfoNCE descriptor" + REAL_SUFFIX,
          REAL_PHOTOS),
    Claim("infonce>best_hash (real photos)", "InfoNCE descriptor" + REAL_SUFFIX, "best hash" + REAL_SUFFIX,
          REAL_PHOTOS),
)
VARIANT_SUFFIX = {"plain": "", "sn": " + SN", "lce": " + LCE"}


def _row_sets(rows: dict[str, Any], suffix: str = "") -> dict[str, dict[int | None, str]]:
    sets: dict[str, dict[int | None, str]] = {}
    for label, row in rows.items():
        for variant, vsuffix in VARIANT_SUFFIX.items():
            for run in row.get("runs", [row]):  # a row over several training seeds lists each run
                if variant in run:
                    seed = None if label in HASHES or row.get("seedless") else int(run["seed"])
                    sets.setdefault(label + vsuffix + suffix, {})[seed] = run[variant]["predictions"]
    return sets


def prediction_sets(result: dict[str, Any], ablation: dict[str, Any],
                    real_photos: dict[str, Any] | None = None) -> dict[str, dict[int | None, str]]:
    """Recorded prediction files by set name and seed (``None``: a seedless hash baseline).

    Names: every evaluation row with its variant suffix (``"CopyNCE descriptor + SN"``),
    ``"ablation <arm>"`` for the ablation runs, and, given the real-photo results
    (``reports/real_photos/results.json``), their rows with :data:`REAL_SUFFIX`.
    """
    sets = _row_sets(result["rows"])
    for arm, rec in ablation["arms"].items():
        sets[f"ablation {arm}"] = {int(s): p for s, p in zip(rec["seeds"], rec.get("predictions", []))}
    if real_photos is not None and real_photos.get("run"):
        sets.update(_row_sets(real_photos["rows"], REAL_SUFFIX))
    return sets


def orderings_frame(sets: dict[str, dict[int | None, str]], ground_truth: str | Path | Mapping[str, str | Path],
                    locate: Callable[[str], Path], n_boot: int = 1000, seed: int = 0,
                    not_run: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per claim of :data:`CLAIMS`: ``claim, a, b, gap, ci_low, ci_high, seeds, verdict, note``.

    ``ground_truth`` is the embedded benchmark's ground-truth CSV, or a mapping from
    benchmark (:data:`EMBEDDED`, :data:`REAL_PHOTOS`) to its CSV. ``locate`` turns a recorded
    prediction path into a file. ``not_run`` maps a benchmark that could not be built here
    to the reason: its claims get verdict ``not run`` and ``note`` "not run: <reason>". A
    claim whose sets were not produced (a profile without matchers, say) has verdict
    ``missing``.
    """
    truths = dict(ground_truth) if isinstance(ground_truth, Mapping) else {EMBEDDED: ground_truth}
    not_run = dict(not_run or {})
    frames: dict[str, pd.DataFrame] = {}

    def load(path: str) -> pd.DataFrame:
        if path not in frames:
            frames[path] = read_predictions(locate(path))
        return frames[path]

    rows = []
    for bench in dict.fromkeys(c.benchmark for c in CLAIMS):
        claims = [c for c in CLAIMS if c.benchmark == bench]
        if bench in not_run or bench not in truths:
            why = f"not run: {not_run[bench]}" if bench in not_run else ""
            rows += [_empty(c, "not run" if bench in not_run else "missing", why) for c in claims]
            continue
        rows += _claim_rows(claims, sets, truths[bench], load, n_boot, seed)
    return pd.DataFrame(rows, columns=COLUMNS)


def _empty(c: Claim, verdict: str, note: str = "") -> dict[str, Any]:
    nan = float("nan")
    return {"claim": c.name, "a": c.a, "b": c.b, "gap": nan, "ci_low": nan, "ci_high": nan, "seeds": "",
            "verdict": verdict, "note": note}


def _claim_rows(claims: list[Claim], sets: dict[str, dict[int | None, str]], ground_truth: str | Path,
                load: Callable[[str], pd.DataFrame], n_boot: int, seed: int) -> list[dict[str, Any]]:
    """The rows of ``claims``, all scored on one benchmark's ground truth."""
    gt = read_ground_truth(ground_truth)
    gt_q, gt_r = gt["query_id"].astype(str).tolist(), gt["reference_id"].tolist()
    needed = {n for c in claims for n in (c.a, c.b) if n in sets}
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

    rows = []
    for c in claims:
        a, b = c.a, c.b
        if b.startswith("best hash"):  # the hash with the higher uAP on this benchmark
            suffix = b[len("best hash"):]
            hashes = [h + suffix for h in HASHES if sets.get(h + suffix)]
            b = max(hashes, key=lambda h: ranked_sets(h)[None].uap()) if hashes else b
        if not sets.get(a) or not sets.get(b):
            rows.append({**_empty(c, "missing"), "b": b})
            continue
        iv = paired_interval(ranked_sets(a), ranked_sets(b), n_boot=n_boot, seed=seed)
        rows.append({"claim": c.name, "a": a, "b": b, "gap": iv.gap, "ci_low": iv.low, "ci_high": iv.high,
                     "seeds": ",".join(str(s) for s in iv.seeds), "verdict": iv.verdict, "note": ""})
    return rows


def orderings_markdown(df: pd.DataFrame, where: str, n_boot: int) -> str:
    """``orderings.md``: the same rows as ``orderings.csv``, for reading."""
    lines = ["# Paper orderings at this scale", "", where, "",
             "| claim | a | b | gap (uAP) | 95 % interval | seeds | verdict |", "|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        interval = "" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        gap = "" if pd.isna(r["gap"]) else f"{r['gap']:+.4f}"
        note = f" ({r['note']})" if isinstance(r.get("note"), str) and r["note"] else ""
        lines.append(f"| `{r['claim']}` | {r['a']} | {r['b']} | {gap} | {interval} | {r['seeds']} "
                     f"| **{r['verdict']}**{note} |")
    lines += ["", f"`gap`: mean over the seeds both sides share of uAP(a) - uAP(b). The interval is a percentile "
              f"bootstrap ({n_boot} replicates) that resamples the seeds and, jointly for both sides, the queries. "
              "`holds`: the interval lies above 0; `fails`: below 0; `inconclusive`: it contains 0; "
              "`missing`: this profile did not produce one of the two sides; `not run`: the claim's benchmark "
              "could not be built here (the note says why). Claims ending in `(real photos)` are scored on the "
              "real-photo benchmark (stage real_photos), the others on the pipeline's own."]
    return "\n".join(lines) + "\n"
