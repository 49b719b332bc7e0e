"""Paper-style result tables: ours beside the paper's DISC21 numbers.

Every table is written twice, ``NAME.csv`` and ``NAME.md``. Metric columns are fractions
in [0, 1], the paper's numbers included (72.6 uAP is written 0.726), so the two never
mix units. Paper columns are prefixed ``paper_`` and are empty where the paper has no
comparable number; ``paper_source`` says which published figure a row is set against.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

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


def config_tag(params: dict[str, Any], keys: Sequence[str], **extra: Any) -> str:
    """Short, stable description of the config behind a row.

    ``keys`` are params.yaml sections (dotted paths allowed) hashed together; ``extra``
    items are written out literally, e.g. ``arm=copynce;seed=0;params=1a2b3c4d``.
    """
    picked = {k: _get(params, k) for k in keys}
    digest = hashlib.sha1(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:8]
    parts = [f"{k}={v}" for k, v in extra.items()] + [f"params={digest}"]
    return ";".join(parts)


def _get(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"params.yaml has no key {dotted!r}")
        node = node[part]
    return node


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
