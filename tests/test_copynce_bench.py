"""benchmarks/copynce.py --against: run order, figures and the side-by-side block (no timing)."""

from __future__ import annotations

import pytest

from _imports import benchmark


def _module():
    return benchmark("copynce")


def test_child_runs_alternate_between_every_tree():
    mod = _module()
    assert mod.interleaved(2, ["this", "a", "b"]) == ["this", "a", "b", "this", "a", "b"]
    assert mod.interleaved(0, ["this", "a"]) == ["this", "a"]  # at least one round


def test_figures_are_per_pair_medians_and_the_fastest_run():
    fig = _module().copynce_figures({"wall": [0.128, 0.064, 0.096], "cpu": [0.120, 0.060, 0.090]})
    assert fig["fwd_bwd_ms_per_pair_b64"] == 1.5 and fig["fwd_bwd_ms_b64_median"] == 96.0  # 96 ms / 64 pairs
    assert fig["fwd_bwd_ms_per_pair_b64_best"] == 1.0 and fig["fwd_bwd_cpu_ms_per_pair_b64"] == 1.406
    assert fig["fwd_bwd_ms_b64_all"] == [128.0, 64.0, 96.0] and fig["copynce_shape"]["pairs"] == 64


def test_against_block_gives_old_over_new_medians():
    mod = _module()
    this, old = {"wall": [0.1, 0.1, 0.1], "cpu": [0.08] * 3}, {"wall": [0.15, 0.16, 0.14], "cpu": [0.1] * 3}
    block = mod.against_block("abc123", "f" * 40, this, old, rounds=3)
    assert block["rev"] == "abc123" and block["commit"] == "f" * 40 and block["rounds"] == 3
    assert block["speedup"] == 1.5 and block["cpu_speedup"] == 1.25
    assert block["fwd_bwd_ms_per_pair_b64"] == round(150 / 64, 3) and "copynce_shape" not in block


def test_unknown_revision_is_refused_naming_it():
    with pytest.raises(ValueError, match="--against no-such-rev: not a commit"):
        _module().resolve("no-such-rev")


def test_a_revisions_package_is_extracted_for_its_child(tmp_path):
    mod = _module()
    tree = mod.extract_package(mod.resolve("HEAD"), tmp_path / "rev")
    assert (tree / "icdlib" / "__init__.py").is_file() and not (tree / "tests").exists()
