"""The speed benchmarks under benchmarks/ (what ``make bench`` runs), each run at tiny size: it
writes its JSON report with the keys of the committed one (the reports' contract). Also the
layout of benchmarks/ and experiments/: scripts that import icdlib, never each other."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from _imports import benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "experiments").glob("*.py")])
CUDA_ONLY = {"cuda", "batched_overlap_256_ms_cuda"}  # written only where a GPU is
AGAINST_ONLY = {"against", "speedup_224", "edit_speedup_224"}  # loader.py / copynce.py --against REV


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The benchmarks set torch's thread count for their timings: give the test process its own back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _committed_keys(name: str) -> set[str]:
    return set(json.loads((ROOT / "reports" / "benchmarks" / f"{name}.json").read_text()))


def _check_keys(name: str, out: Path, optional: set[str] = frozenset()) -> dict:
    got = json.loads(out.read_text())
    want = _committed_keys(name)
    assert want - optional - CUDA_ONLY <= set(got) <= want | optional | CUDA_ONLY, (name, set(got) ^ want)
    return got


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scripts_import_icdlib_and_never_each_other_or_sys_path(path):
    tree = ast.parse(path.read_text())
    siblings = {p.stem for p in SCRIPTS}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
            raise AssertionError(f"{path.name}:{node.lineno}: touches sys.path")
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        clash = [n for n in names if n.split(".")[0] in siblings]
        assert not clash, f"{path.name}:{node.lineno}: imports script(s) {clash}; shared code belongs in icdlib"
    doc = ast.get_docstring(tree) or ""
    assert f"python {path.parent.name}/{path.name}" in doc, f"{path.name}: docstring gives no command"


def test_make_bench_runs_every_speed_benchmark_and_nothing_else():
    text = (ROOT / "Makefile").read_text()
    target = re.search(r"^bench:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert target, "Makefile has no bench target"
    ran = re.findall(r"benchmarks/(\w+)\.py", target.group(1))
    assert sorted(ran) == sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py"))
    assert "experiments/" not in target.group(1)


def test_pixtrace_benchmark_times_every_path_at_tiny_size(tmp_path):
    out = tmp_path / "pixtrace.json"
    benchmark("pixtrace").main(["--pairs", "2", "--repeats", "1", "--batch-threads", "1", "--out", str(out)])
    got = _check_keys("pixtrace", out)
    for part in ("copy_vs_original", "copy_vs_copy"):
        r = got[part]
        assert r["pairs"] == 2 and r["overlap_only_ms_per_pair"] > 0 and r["overlap_only_torch_path_ms_per_pair"] > 0


@pytest.mark.slow
def test_copynce_benchmark_at_tiny_size(tmp_path):
    out = tmp_path / "copynce.json"
    benchmark("copynce").main(["--repeats", "1", "--descriptor-repeats", "1", "--out", str(out)])
    got = _check_keys("copynce", out, optional=AGAINST_ONLY)
    assert got["fwd_bwd_ms_per_pair_b64"] > 0 and got["descriptor_pairs_per_s_b64"] > 0


def test_metrics_benchmark_at_tiny_size(tmp_path):
    out = tmp_path / "metrics.json"
    benchmark("metrics").main(["--n-predictions", "2000", "--repeats", "1", "--out", str(out)])
    got = _check_keys("metrics", out)
    assert got["n_predictions"] == 2000 and 0 <= got["uAP_of_synthetic_input"] <= 1


@pytest.mark.slow
def test_retrieval_benchmark_at_tiny_size(tmp_path):
    out = tmp_path / "retrieval.json"
    benchmark("retrieval").main(["--images", "4", "--queries", "8", "--references", "2048", "--rescore-queries", "6",
                                 "--rescore-references", "5", "--out", str(out)])
    got = _check_keys("retrieval", out)
    committed = json.loads((ROOT / "reports/benchmarks/retrieval.json").read_text())
    for part in ("search", "rescore"):
        assert set(got[part]) == set(committed[part]), part
    assert got["search"]["n_references"] == 2048 and got["embed"]["n_images"] == 4
    assert got["rescore"]["pairs"] == 6 * 5 and got["rescore"]["max_abs_score_difference"] < 1e-5


def test_loader_benchmark_at_tiny_size(tmp_path):
    out = tmp_path / "loader.json"
    benchmark("loader").main(["--samples", "2", "--repeats", "1", "--gpu-pairs-per-s", "100", "--out", str(out)])
    got = _check_keys("loader", out, optional=AGAINST_ONLY)
    assert set(got["settings"]) == {"default_112", "paper_224"} and got["pairs_per_s_per_core_224"] > 0
    assert got["command"].startswith("python benchmarks/loader.py --samples 2 --repeats 1")


@pytest.mark.slow
def test_train_benchmark_at_tiny_size_from_the_command_line(tmp_path):
    """Run as ``make bench`` runs it (its side-by-side runs are spawned processes that import the
    script as ``__main__``), on the CPU: its CUDA section is hidden from it."""
    import os
    import subprocess
    import sys

    out = tmp_path / "train.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "benchmarks/train.py", "--out", str(out), "--steps", "1", "--e2e-steps", "1",
           "--batch", "4", "--sources", "18"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    got = _check_keys("train", out)
    assert got["cpu"]["batch_pairs"] == 4 and got["cpu_end_to_end"]["live_loader"]["items_per_step"] == 4
    assert got["cpu_side_by_side_pairs_per_s"] > 0 and got["cpu_compute_only_pairs_per_s"] > 0
