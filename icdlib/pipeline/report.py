"""Paper-style result tables: ours beside the paper's DISC21 numbers.

Every table is written twice, ``NAME.csv`` and ``NAME.md``. Metric columns are fractions
in [0, 1], the paper's numbers included (72.6 uAP is written 0.726), so the two never
mix units. Paper columns are prefixed ``paper_`` and are empty where the paper has no
comparable number; ``paper_source`` says which published figure a row is set against.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from icdlib.pipeline.orderings import (EMBEDDED, REAL_PHOTOS, VARIANT_SUFFIX, orderings_frame, orderings_markdown,
                                       prediction_sets)
from icdlib.pipeline.results import evaluated
from icdlib.pipeline.stage import Stage

METRICS = ("uAP", "RP90", "mAP")

# Published DISC21 figures (method.md s.7), as fractions. Keys are our row methods.
PAPER = {
    "descriptor": {
        "CopyNCE descriptor": (0.705, 0.636, "ViT-S/16 224, released checkpoint (README)"),
    },
    "matcher": {
        "matcher (CopyNCE)": (0.835, 0.754, "ViT-S 224, released checkpoint (README)"),
    },
    "paper_best": {
        "descriptor": (0.726, 0.684, "paper best (abstract)"),
        "matcher": (0.887, 0.839, "paper best (abstract)"),
    },
}


@dataclass
class Row:
    """One table row: a method (or setting) evaluated over one or more seeds.

    ``runs`` holds one metrics dict per seed (keys ``uAP``, ``RP90``, ``mAP``).
    """

    method: str
    runs: list[dict[str, float]]
    seeds: list[int]
    config: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, table: str) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        for m in METRICS:
            vals = np.array([r[m] for r in self.runs], dtype=np.float64)
            out[m] = float(vals.mean())
            out[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        out["seeds"] = ",".join(str(s) for s in self.seeds)
        out["n_seeds"] = len(self.seeds)
        out["config"] = self.config
        out.update(self.extra)
        paper = PAPER.get(table, {}).get(self.method)
        out["paper_uAP"] = paper[0] if paper else float("nan")
        out["paper_RP90"] = paper[1] if paper else float("nan")
        out["paper_source"] = paper[2] if paper else ""
        return out


def table_frame(rows: Sequence[Row], table: str) -> pd.DataFrame:
    """A DataFrame of ``rows`` with our columns first, then the paper's."""
    if not rows:
        raise ValueError(f"table {table!r}: no rows")
    return pd.DataFrame([r.as_dict(table) for r in rows])


def write_table(rows: Sequence[Row], table: str, out_dir: str | Path, title: str, notes: str = "") -> pd.DataFrame:
    """Write ``out_dir/{table}.csv`` and ``out_dir/{table}.md``; return the frame."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = table_frame(rows, table)
    df.to_csv(out_dir / f"{table}.csv", index=False, float_format="%.4f")
    (out_dir / f"{table}.md").write_text(to_markdown(df, title, notes))
    return df


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def to_markdown(df: pd.DataFrame, title: str, notes: str = "") -> str:
    """Markdown rendering: ours as mean ± std over seeds, the paper's in separate columns."""
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes, ""]
    head = ["method", "uAP (ours)", "RP90 (ours)", "mAP (ours)", "seeds", "paper uAP", "paper RP90", "paper source",
            "config"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for _, r in df.iterrows():
        missing = r.get("missing")
        if isinstance(missing, str) and missing:
            cells = [f"{r['method']} (not run: {missing})", "", "", ""]
            cells += [str(r["seeds"]), _fmt(r["paper_uAP"]), _fmt(r["paper_RP90"]), str(r["paper_source"]),
                      f"`{r['config']}`"]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells = [str(r["method"])]
        for m in METRICS:
            s = _fmt(r[m])
            std = r.get(f"{m}_std", float("nan"))
            if isinstance(std, float) and not math.isnan(std):
                s += f" ± {std:.3f}"
            cells.append(s)
        cells += [str(r["seeds"]), _fmt(r["paper_uAP"]), _fmt(r["paper_RP90"]), str(r["paper_source"]),
                  f"`{r['config']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Metrics are fractions in [0, 1]. Ours: mean ± sample std over seeds (no ± for one seed). "
                 "Paper columns: published DISC21 figures, not produced here.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the stage
ABLATION_SETTINGS = {
    "infonce": "CopyNCE off (InfoNCE + KoLeo)",
    "copynce": "CopyNCE on: PixTrace targets, gamma 3, lambda 0.5",
    "copynce_gamma1": "gamma 1 (instead of 3)",
    "copynce_lam1": "lambda 1 (query->reference only)",
    "copynce_c2c": "50% copy-vs-copy pairs",
    "copynce_uniform": "uniform targets (no tracing)",
}


def _main_rows(result: dict[str, Any], table: str) -> list[Row]:
    rows = [Row(label + VARIANT_SUFFIX[variant], [r[variant]["metrics"] for r in rec.get("runs", [rec])],
                [int(r["seed"]) for r in rec.get("runs", [rec])], rec["config"], {"variant": variant})
            for label, rec, variant, e in evaluated(result["rows"]) if rec["table"] == table]
    # a row that could not run here (e.g. PDQ without pdqhash): empty metrics and the reason
    nan = {m: float("nan") for m in METRICS}
    return rows + [Row(label, [nan], [int(rec["seed"])], rec["config"], {"variant": "plain", "missing": rec["missing"]})
                   for label, rec in result["rows"].items() if rec["table"] == table and rec.get("missing")]


def main_rows(result: dict[str, Any], tables: Sequence[str]) -> list[Row]:
    """The rows of an evaluation result (``reports/eval/results.json`` layout) that belong to
    ``tables``, table by table."""
    return [row for table in tables for row in _main_rows(result, table)]


def _ablation_rows(abl: dict[str, Any]) -> list[Row]:
    return [Row(arm, rec["runs"], rec["seeds"], rec["config"],
                {"setting": ABLATION_SETTINGS.get(arm, arm), "steps": abl["steps"]})
            for arm, rec in abl["arms"].items()]


def real_photo_results(st: Stage) -> dict[str, Any]:
    """``reports/real_photos/results.json`` (stage real_photos); where that stage has not run
    here, a not-run result naming the missing file."""
    path = st.path("reports", "real_photos", "results.json")
    if not path.is_file():
        return {"run": False, "reason": f"stage real_photos has not run here (no {st.relative(path)})", "rows": {}}
    return json.loads(path.read_text())


def write_report(params_file: str | Path) -> dict[str, Any]:
    """Build the descriptor, matcher and ablation tables and the orderings summary."""
    st = Stage(params_file)
    result = json.loads(st.path("reports", "eval", "results.json").read_text())
    abl = json.loads(st.path("reports", "ablation", "results.json").read_text())
    out = st.path("reports", "tables")
    where = (f"Profile `{st.profile}`, seed {st.seed}, split `{result['split']}` "
             f"({result['n_queries']} queries, {result['n_positives']} with a copy, "
             f"{result['n_references']} references).")
    desc = write_table(_main_rows(result, "descriptor"), "descriptor", out, "Descriptor track",
                       where + " SN = score normalisation with "
                       f"{result['n_auxiliary']} training images.")
    match = write_table(_main_rows(result, "matcher"), "matcher", out, "Matching track",
                        where + " Candidates: the CopyNCE descriptor's top-k. "
                        "LCE rescoring (the arms of report.lce_arms: "
                        f"{', '.join(st.report.lce_arms) or 'none'}) covers each query's top "
                        f"{st.report.lce_candidates} candidate(s); the rest keep their plain matcher score.")
    ablation = write_table(_ablation_rows(abl), "ablation", out, "Ablations (descriptor, no SN)",
                           f"Profile `{st.profile}`, {abl['steps']} steps per run, mean ± std over seeds; "
                           "every arm of a seed shares its data order and step count.")
    real = real_photo_results(st)
    sets = prediction_sets(result, abl, real)
    truths, claims_where = {EMBEDDED: st.absolute(result["ground_truth"])}, where
    if real["run"]:
        truths[REAL_PHOTOS] = st.absolute(real["ground_truth"])
        claims_where += (f" Claims `(real photos)`: split `{real['split']}` of the real-photo benchmark "
                         f"({real['n_queries']} queries, {real['n_positives']} with a copy, "
                         f"{real['n_references']} references; {real['description']}).")
    claims = orderings_frame(sets, truths, st.absolute, n_boot=st.report.bootstrap, seed=st.seed,
                             not_run={} if real["run"] else {REAL_PHOTOS: real["reason"]})
    claims.to_csv(out / "orderings.csv", index=False, float_format="%.4f")
    (out / "orderings.md").write_text(orderings_markdown(claims, claims_where, st.report.bootstrap))
    records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
               for r in claims.to_dict("records")]
    summary = {"profile": st.profile, "seed": st.seed, "bootstrap": st.report.bootstrap, "orderings": records,
               "n_holds": int((claims["verdict"] == "holds").sum()), "n_claims": len(claims)}
    (out / "orderings.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"descriptor": desc, "matcher": match, "ablation": ablation, "orderings": claims}
