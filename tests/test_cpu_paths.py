"""experiments/cpu_paths.py at tiny size: builds under narrowed SIMD dispatch, compares every file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_paths_builds_under_each_setting_and_reports_the_dispatch_and_the_differing_files(tmp_path):
    spec = importlib.util.spec_from_file_location("cpu_paths", ROOT / "experiments" / "cpu_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "cpu_paths.json"
    assert module.main(["--training", "6", "--reference", "6", "--queries", "8", "--settings",
                        "native,opencv_sse4,torch_default", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["baseline"] == "native" and got["files"] > 20
    assert got["dispatch"]["opencv_sse4"]["opencv_avx2"] is False  # the setting took effect in the child
    # the baseline kernels; torch names them "DEFAULT" since 2.3 and "NO AVX" before
    assert got["dispatch"]["torch_default"]["torch"] in ("DEFAULT", "NO AVX")
    assert got["identical"]["native"] and got["differs"]["native"] == []
    assert set(got["identical"]) == {"native", "opencv_sse4", "torch_default"}


def test_digests_name_a_changed_file(tmp_path):
    spec = importlib.util.spec_from_file_location("cpu_paths", ROOT / "experiments" / "cpu_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("1")
    first = module.digests(tmp_path)
    (tmp_path / "a" / "x.txt").write_text("2")
    assert first != module.digests(tmp_path) and list(first) == ["a/x.txt"]
