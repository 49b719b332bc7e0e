"""tools/screenshots.py without a browser: its argument and run-folder errors, the notebook parameters
it sets and its machine-path check (tests/browser/test_screenshots_browser.py takes the pictures)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from icdlib.pipeline.profile import apply_profile
from tools import screenshots as S

ROOT = Path(__file__).resolve().parents[1]


def _fails(argv, capsys) -> str:
    assert S.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("screenshots: ") and "Traceback" not in err
    return err


def test_a_missing_run_folder_is_named(tmp_path, capsys):
    err = _fails(["--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")], capsys)
    assert "no run folder at" in err and "nowhere" in err
    assert not (tmp_path / "out").exists()


def test_a_folder_without_params_is_not_a_run(tmp_path, capsys):
    assert "params.yaml not found" in _fails(["--run", str(tmp_path)], capsys)


def test_a_run_without_evaluate_results_names_the_missing_file(tmp_path, capsys):
    apply_profile(ROOT / "params.yaml", "tiny", [], profiles_dir=ROOT / "profiles", out_path=tmp_path / "params.yaml")
    err = _fails(["--run", str(tmp_path), "--out", str(tmp_path / "out")], capsys)
    assert str(tmp_path / "reports" / "eval" / "results.json") in err and "evaluate" in err


def test_results_without_the_copynce_row_or_its_files_are_named(tmp_path, capsys):
    apply_profile(ROOT / "params.yaml", "tiny", [], profiles_dir=ROOT / "profiles", out_path=tmp_path / "params.yaml")
    results = tmp_path / "reports" / "eval" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"split": "dev_queries", "rows": {}}))
    assert "'CopyNCE descriptor'" in _fails(["--run", str(tmp_path)], capsys)
    row = {"checkpoint": "models/descriptor_copynce.pt", "plain": {"predictions": "features/p.csv"}}
    results.write_text(json.dumps({"split": "dev_queries", "rows": {"CopyNCE descriptor": row}}))
    assert "manifest.json not found" in _fails(["--run", str(tmp_path)], capsys)  # no benchmark built


def test_the_script_runs_from_the_repository_root_and_needs_run():
    done = subprocess.run([sys.executable, "tools/screenshots.py"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "--run" in done.stderr and "Traceback" not in done.stderr


def test_notebook_parameters_are_replaced_with_their_comments_kept():
    nb = S.set_parameters(json.loads(S.NOTEBOOK.read_text()), {"descriptor": "models/d.pt", "results": "runs/e"})
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    lines = "".join(cell["source"]).splitlines()
    assert any(ln.startswith("descriptor = 'models/d.pt'  # descriptor checkpoint") for ln in lines)
    assert any(ln.startswith("results = 'runs/e'  # evaluation folder") for ln in lines)
    assert any(ln.startswith('matcher = ""') for ln in lines)  # the others as they were
    with pytest.raises(S.ScreenshotError, match="no parameter 'nothing'"):
        S.set_parameters(json.loads(S.NOTEBOOK.read_text()), {"nothing": "x"})


def test_a_page_showing_a_machine_path_is_refused(tmp_path):
    paths = S.forbidden(tmp_path)
    assert str(tmp_path) in paths and str(ROOT) in paths
    assert S.check_paths("eval folder\nruns/screenshots/eval", paths, "results tab")
    with pytest.raises(S.ScreenshotError, match=r"results tab: the page shows a machine path .*model A"):
        S.check_paths(f"eval folder\nmodel A {tmp_path}/models/d.pt", paths, "results tab")


def test_pictures_stack_left_aligned_on_white():
    def png(w, h, colour):
        buf = io.BytesIO()
        Image.new("RGB", (w, h), colour).save(buf, format="PNG")
        return buf.getvalue()

    out = Image.open(io.BytesIO(S.stack([png(4, 2, "red"), png(6, 3, "blue")])))
    assert out.size == (6, 5)
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((5, 0)) == (255, 255, 255)
    assert out.getpixel((5, 4)) == (0, 0, 255)
