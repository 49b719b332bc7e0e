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
    head = ["method", "uAP (ours)", "RP90 (ours)", "mAP (ours)", "seeds", "paper uAP", "paper RP90", "paper source", "config"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for _, r in df.iterrows():
        missing = r.get("missing")
        if isinstance(missing, str) and missing:
            cells = [f"{r['method']} (not run: {missing})", "", "", ""]
            cells += [str(r["seeds"]), _fmt(r["paper_uAP"]), _fmt(r["paper_RP90"]), str(r["paper_source"]), f"`{r['config']}`"]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells = [str(r["method"])]
        for m in METRICS:
            s = _fmt(r[m])
            std = r.get(f"{m}_std", float("nan"))
            if isinstance(std, float) and not math.isnan(std):
                s += f" ± {std:.3f}"
            cells.append(s)
        cells += [str(r["seeds"]), _fmt(r["paper_uAP"]), _fmt(r["paper_RP90"]), str(r["paper_source"]), f"`{r['config']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Metrics are fractions in [0, 1]. Ours: mean ± sample std over seeds (no ± for one seed). "
                 "Paper columns: published DISC21 figures, not produced here.")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Ordering:
    """A claim ``better > worse`` on ``metric``, checked against the seed spread."""

    better: str
    worse: str
    metric: str = "uAP"


def check_orderings(df: pd.DataFrame, claims: Sequence[Ordering]) -> list[dict[str, Any]]:
    """For each claim: the gap, the spread (largest std of the two rows, 0 if unknown) and a verdict.

    ``holds`` is True when ``mean(better) - mean(worse) > spread``; a claim whose gap is
    positive but within the spread is reported as ``within_noise``.
    """
    out = []
    by = df.set_index("method")
    for c in claims:
        if c.better not in by.index or c.worse not in by.index:
            missing = c.better if c.better not in by.index else c.worse
            raise KeyError(f"ordering {c.better} > {c.worse}: no row named {missing!r}")
        b, w = by.loc[c.better], by.loc[c.worse]
        gap = float(b[c.metric] - w[c.metric])
        stds = [float(x) for x in (b.get(f"{c.metric}_std"), w.get(f"{c.metric}_std")) if x is not None]
        stds = [s for s in stds if not math.isnan(s)]
        spread = max(stds) if stds else 0.0
        verdict = "holds" if gap > spread else ("within_noise" if gap > 0 else "fails")
        out.append({"claim": f"{c.better} > {c.worse}", "metric": c.metric, "gap": gap,
                    "spread": spread, "verdict": verdict})
    return out


# ----------------------------------------------------------------------------- the stage
ABLATION_SETTINGS = {
    "infonce": "CopyNCE off (InfoNCE + KoLeo)",
    "copynce": "CopyNCE on: PixTrace targets, gamma 3, lambda 0.5",
    "copynce_gamma1": "gamma 1 (instead of 3)",
    "copynce_lam1": "lambda 1 (query->reference only)",
    "copynce_c2c": "50% copy-vs-copy pairs",
    "copynce_uniform": "uniform targets (no tracing)",
}
VARIANT_SUFFIX = {"plain": "", "sn": " + SN", "lce": " + LCE"}


def _main_rows(result: dict[str, Any], table: str) -> list[Row]:
    rows = [Row(label + VARIANT_SUFFIX[variant], [e["metrics"]], [int(rec["seed"])], rec["config"], {"variant": variant})
            for label, rec, variant, e in evaluated(result["rows"]) if rec["table"] == table]
    # a row that could not run here (e.g. PDQ without pdqhash): empty metrics and the reason
    nan = {m: float("nan") for m in METRICS}
    return rows + [Row(label, [nan], [int(rec["seed"])], rec["config"], {"variant": "plain", "missing": rec["missing"]})
                   for label, rec in result["rows"].items() if rec["table"] == table and rec.get("missing")]


def _ablation_rows(abl: dict[str, Any]) -> list[Row]:
    return [Row(arm, rec["runs"], rec["seeds"], rec["config"],
                {"setting": ABLATION_SETTINGS.get(arm, arm), "steps": abl["steps"]})
            for arm, rec in abl["arms"].items()]


def _claim(name: str, better: float, worse: float, spread: float, basis: str) -> dict[str, Any]:
    gap = better - worse
    verdict = "holds" if gap > spread else ("within_noise" if gap > 0 else "fails")
    return {"claim": name, "gap_uAP": gap, "spread_uAP": spread, "spread_basis": basis, "verdict": verdict}


def orderings(desc: pd.DataFrame, match: pd.DataFrame, abl: pd.DataFrame,
              per_seed: dict[str, dict[int, float]] | None = None) -> list[dict[str, Any]]:
    """The paper's orderings on uAP, each against the seed-to-seed spread.

    Main-table rows come from one seed, so their spread is the larger sample std of the
    two corresponding ablation arms (same model and data, shorter runs, several seeds).
    Ablation claims are paired (every arm of a seed shares data order and steps): given
    ``per_seed`` (arm -> {seed: uAP}), their gap is the mean of the per-seed differences
    and their spread the sample std of those differences.
    """
    d = desc.set_index("method")["uAP"]
    m = match.set_index("method")["uAP"]
    a = abl.set_index("method")
    std = lambda arm: float(a.loc[arm, "uAP_std"]) if arm in a.index and not math.isnan(a.loc[arm, "uAP_std"]) else 0.0  # noqa: E731
    spread = max(std("copynce"), std("infonce"))
    basis = "max std of ablation arms copynce/infonce"
    hashes = [float(d[h]) for h in ("PDQ", "pHash") if h in d.index and not math.isnan(d[h])]  # those that ran
    out = []
    for sfx in ("", " + SN"):
        out.append(_claim(f"CopyNCE descriptor{sfx} > InfoNCE descriptor{sfx}", d[f"CopyNCE descriptor{sfx}"],
                          d[f"InfoNCE descriptor{sfx}"], spread, basis))
    if hashes:  # with no hash package installed there is no hash row to compare against
        out.append(_claim("InfoNCE descriptor > best perceptual hash", d["InfoNCE descriptor"], max(hashes), spread, basis))
    out.append(_claim("matcher (CopyNCE) > CopyNCE descriptor", m["matcher (CopyNCE)"], d["CopyNCE descriptor"],
                      spread, basis))
    out.append(_claim("matcher (CopyNCE) > matcher (BCE only)", m["matcher (CopyNCE)"], m["matcher (BCE only)"],
                      spread, basis))
    if "copynce" in a.index:
        for other, name in (("copynce_uniform", "PixTrace targets > uniform targets"),
                            ("infonce", "CopyNCE on > off (ablation)")):
            if other not in a.index:
                continue
            diffs = _paired_differences(per_seed or {}, "copynce", other)
            if len(diffs) >= 2:
                out.append(_claim(name + " [ablation, paired by seed]", float(np.mean(diffs)), 0.0,
                                  float(np.std(diffs, ddof=1)),
                                  f"std of the per-seed differences copynce - {other} ({len(diffs)} seeds)"))
            else:
                sp = max(std("copynce"), std(other))
                out.append(_claim(name + " [ablation means]", float(a.loc["copynce", "uAP"]),
                                  float(a.loc[other, "uAP"]), sp, f"max std of ablation arms copynce/{other}"))
    return out


def _paired_differences(per_seed: dict[str, dict[int, float]], arm: str, other: str) -> list[float]:
    """``uAP(arm) - uAP(other)`` for every seed both arms ran, in seed order."""
    a, b = per_seed.get(arm, {}), per_seed.get(other, {})
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def write_report(params_file: str | Path) -> dict[str, Any]:
    """Build the descriptor, matcher and ablation tables and the orderings summary."""
    st = Stage(params_file)
    result = json.loads(st.path("reports", "eval", "results.json").read_text())
    abl = json.loads(st.path("reports", "ablation", "results.json").read_text())
    out = st.path("reports", "tables")
    where = (f"Profile `{st.profile}`, seed {st.seed}, split `{result['split']}` "
             f"({result['n_queries']} queries, {result['n_positives']} with a copy, {result['n_references']} references).")
    desc = write_table(_main_rows(result, "descriptor"), "descriptor", out, "Descriptor track",
                       where + " SN = score normalisation with "
                       f"{result['n_auxiliary']} training images.")
    match = write_table(_main_rows(result, "matcher"), "matcher", out, "Matching track",
                        where + " Candidates: the CopyNCE descriptor's top-k. LCE rescoring covers each query's "
                        "top candidates (report.lce_candidates); the rest keep their plain matcher score.")
    ablation = write_table(_ablation_rows(abl), "ablation", out, "Ablations (descriptor, no SN)",
                           f"Profile `{st.profile}`, {abl['steps']} steps per run, mean ± std over seeds; "
                           "every arm of a seed shares its data order and step count.")
    per_seed = {arm: {int(sd): float(r["uAP"]) for sd, r in zip(rec["seeds"], rec["runs"])}
                for arm, rec in abl["arms"].items()}
    claims = orderings(desc, match, ablation, per_seed)
    summary = {"profile": st.profile, "seed": st.seed, "orderings": claims,
               "n_holds": sum(c["verdict"] == "holds" for c in claims), "n_claims": len(claims)}
    (out / "orderings.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["# Paper orderings at this scale", "", where, "",
             "| claim | gap (uAP) | seed spread | verdict |", "|---|---|---|---|"]
    lines += [f"| {c['claim']} | {c['gap_uAP']:+.4f} | {c['spread_uAP']:.4f} | **{c['verdict']}** |" for c in claims]
    lines += ["", "`holds`: the gap exceeds the seed-to-seed spread; `within_noise`: positive but not beyond it; "
              "`fails`: the ordering is reversed. Spreads: " + "; ".join(sorted({c["spread_basis"] for c in claims})) + "."]
    (out / "orderings.md").write_text("\n".join(lines) + "\n")
    return {"descriptor": desc, "matcher": match, "ablation": ablation, "orderings": pd.DataFrame(claims)}
