"""benchmarks/loader.py --against: the run order and the side-by-side report block (no timing)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from _imports import benchmark

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return benchmark("loader")


def _run(ms: float, edit: float) -> dict:
    return {"ms_per_pair": ms, "pairs_per_s_per_core": 1000 / ms,
            "ms_per_pair_by_stage": {"decode": 0.1, "edit": edit, "trace": 0.2, "tensor": 0.3, "other": 0.0}}


def test_repeats_alternate_between_the_trees():
    mod = _module()
    assert mod.interleaved(3) == ["this", "against"] * 3
    assert mod.interleaved(0) == ["this", "against"]  # at least one round


def test_best_of_keeps_the_fastest_run_and_the_fastest_edit_stage_of_any_run():
    best = _module().best_of([_run(5.0, 2.0), _run(4.0, 2.5), _run(6.0, 1.5)])
    assert best["ms_per_pair"] == 4.0 and best["ms_per_pair_by_stage"]["edit"] == 2.5
    assert best["repeats_ms_per_pair"] == [5.0, 4.0, 6.0]
    assert best["best_edit_ms_per_pair"] == 1.5


def test_against_block_gives_old_over_new_speedups_per_setting():
    mod = _module()
    this = {"default_112": mod.best_of([_run(2.0, 1.0)]), "paper_224": mod.best_of([_run(4.0, 2.0)])}
    old = {"default_112": mod.best_of([_run(5.0, 2.5)]), "paper_224": mod.best_of([_run(10.0, 7.0)])}
    out = mod.against_block("abc123", "f" * 40, this, old)
    a = out["against"]
    assert a["rev"] == "abc123" and a["commit"] == "f" * 40
    assert a["pairs_per_s_per_core_224"] == 100.0 and a["ms_per_pair_224"] == 10.0
    assert a["stages_ms_per_pair"]["paper_224"]["edit"] == 7.0
    assert out["speedup_224"] == a["speedup_224"] == 2.5
    assert out["edit_speedup_224"] == a["edit_speedup_224"] == 3.5
    assert a["speedup_112"] == 2.5 and a["edit_speedup_112"] == 2.5
    assert "speedup_112" not in out  # only the 224 px speedups sit at the top level


def test_against_needs_a_revision_git_knows():
    with pytest.raises(subprocess.CalledProcessError):  # git rev-parse fails before any worktree
        _module().side_by_side("no-such-revision-xyz", {}, 1, 1)


def test_edit_ops_splits_the_edit_stage_by_op_and_restores_the_registry(tmp_path):
    from icdlib.data import PairsConfig
    from icdlib.edits import apply
    from icdlib.edits.registry import OPS
    mod = _module()
    before = dict(OPS)
    with mod.timed_ops() as acc:
        from PIL import Image
        apply(Image.new("RGB", (8, 6)), [{"op": "hflip"}, {"op": "hflip"}, {"op": "grayscale"}])
    assert acc["hflip"][0] == 2 and acc["grayscale"][0] == 1 and acc["vflip"][0] == 0
    assert all(OPS[n] is before[n] for n in before) and len(OPS) == len(before)
    paths = mod.write_sources(tmp_path, 4, 32)
    r = mod.edit_ops(paths, PairsConfig(size=32, patch=16), 8)
    assert r["by_op"] and all(v["calls_per_pair"] > 0 for v in r["by_op"].values())
    per_pair = [v["ms_per_pair"] for v in r["by_op"].values()]
    assert per_pair == sorted(per_pair, reverse=True)
    assert abs(sum(per_pair) - r["ops_ms_per_pair"]) < 0.01 * len(per_pair)
    assert r["outside_ops_ms_per_pair"] == round(r["edit_ms_per_pair"] - r["ops_ms_per_pair"], 3)
    assert all(OPS[n] is before[n] for n in before)
