"""dvc.yaml's top-level plots overlay curves that the stages declare and version."""

from __future__ import annotations

import re

import pytest

import test_pipeline as tp


def _interpolate(text: str) -> str:
    def value(m):
        node = tp.PARAMS
        for part in m.group(1).split("."):
            node = node[part]
        return str(node)
    return re.sub(r"\$\{([^}]+)\}", value, text)


def _stage_plot_dirs() -> dict[str, str]:
    """Every path a stage declares under ``plots`` (interpolated) -> the stage."""
    out = {}
    for name, stage in tp._stages():
        for entry in stage.get("plots", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            out[_interpolate(path)] = name
    return out


TOP = [(next(iter(p)), p[next(iter(p))]) for p in tp.DVC.get("plots", [])]


def test_there_are_overlaid_pr_and_training_curves():
    sources = [s for _, props in TOP for s in props["y"]]
    assert any("/plots/pr_" in s for s in sources) and any("/train/" in s for s in sources)


@pytest.mark.parametrize("title,props", TOP, ids=[t for t, _ in TOP])
def test_each_overlaid_curve_is_a_plot_file_some_stage_writes(title, props):
    dirs = _stage_plot_dirs()
    for source, column in props["y"].items():
        path = _interpolate(source)
        owner = [d for d in dirs if path == d or path.startswith(d.rstrip("/") + "/")]
        assert owner, f"{title}: {source} is in no stage's plots"
        assert re.search(rf"(^|/){re.escape(column)}\.tsv$", path) or path.endswith(".csv"), (
            f"{title}: a DVCLive file train/<metric>.tsv holds the column <metric>, not {column!r}")


def test_pr_curves_overlaid_are_ones_the_evaluation_writes(tmp_path):
    from icdlib.pipeline.evaluation import write_pr_curves

    curve = {"curve": {"recall": [0.5], "precision": [1.0]}}
    rows = {label: {v: curve for v in variants} for label, variants in (
        ("PDQ", ["plain"]), ("pHash", ["plain"]),
        ("random-init descriptor", ["plain", "sn"]), ("InfoNCE descriptor", ["plain", "sn"]),
        ("CopyNCE descriptor", ["plain", "sn"]),
        ("matcher (BCE only)", ["plain"]), ("matcher (CopyNCE)", ["plain", "lce"]))}  # report.lce_arms: CopyNCE only
    written = {p.name for p in write_pr_curves(rows, tmp_path)}  # the evaluate stage's rows and variants
    listed = {_interpolate(s).rsplit("/", 1)[-1] for _, props in TOP for s in props["y"] if "/plots/pr_" in s}
    assert listed <= written, f"overlaid PR curves no evaluation writes: {sorted(listed - written)}"
    assert listed == written, f"PR curves written but never overlaid: {sorted(written - listed)}"
