"""End-to-end: the explorer's "results" tab in JupyterLab, driven by headless Chromium.

Evaluates a random-init tiny descriptor on a small DISC21-layout folder
(``python -m icdlib.evaluate``), opens a copy of ``notebooks/explorer.ipynb`` whose
parameters name that evaluation folder and checkpoint, runs it, switches to the results
tab and checks that the query and its top-5 thumbnails render with their copy marks,
that "next" moves to the next query, and that "patch affinity" draws the model's
affinity on the real pair. Saves ``results_browser.png`` and ``results_affinity.png`` under
the test's ``tmp_path`` (the committed pictures come from ``make screenshots``).

Run: ``bash tests/browser/setup_chromium.sh && .venv/bin/python -m pytest -m browser tests/browser``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from test_explorer_browser import NOTEBOOK, ROOT

from tools.browser_session import (RUN_TIMEOUT_S, chromium_page, jupyter_lab, run_notebook, wait_for,
                                   wait_until_idle)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HITS_JS = """() => Array.from(document.querySelectorAll('img.hit, img.query')).map(i => ({
    cls: i.className, ok: i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0,
    border: i.style.borderColor}))"""


def _image(seed: int, size=(80, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)


def _evaluation(tmp_path):
    """``(eval folder, descriptor)``: 6 references, 3 copied queries, evaluated at k = 10."""
    from icdlib.checkpoints import save_checkpoint
    from icdlib.models import build_descriptor

    root = tmp_path / "bench"
    (root / "reference_images").mkdir(parents=True)
    (root / "query_images").mkdir()
    for i in range(6):
        _image(i).save(root / "reference_images" / f"R{i:03d}.png")
    rows = ["query_id,reference_id"]
    for q in range(3):
        _image(q * 2).rotate(8).save(root / "query_images" / f"Q{q:03d}.jpg", quality=90)
        rows.append(f"Q{q:03d},R{q * 2:03d}")
    (root / "ground_truth.csv").write_text("\n".join(rows) + "\n")
    desc = save_checkpoint(tmp_path / "desc.pt", build_descriptor("vit_tiny_cpu", seed=0))
    out = tmp_path / "eval"
    subprocess.run([sys.executable, "-m", "icdlib.evaluate", "--data", str(root), "--descriptor", str(desc),
                    "--out", str(out)], check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return out, desc


@pytest.fixture
def jupyter_results(tmp_path):
    """JupyterLab over a copy of the explorer notebook pointed at an evaluation."""
    eval_dir, desc = _evaluation(tmp_path)
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if 'results = ""' in src:
            src = src.replace('results = ""', f"results = {str(eval_dir)!r}")
            src = src.replace('descriptor = ""', f"descriptor = {str(desc)!r}")
            cell["source"] = src.splitlines(True)
    with jupyter_lab(nb, NOTEBOOK.name, tmp_path) as lab:
        yield lab


def test_results_tab_shows_hits_steps_queries_and_draws_affinity(jupyter_results, chromium, tmp_path):
    t0 = time.monotonic()
    with chromium_page(chromium, width=1600, timeout_s=RUN_TIMEOUT_S) as page:
        run_notebook(page, jupyter_results)
        page.locator(".lm-TabBar-tab", has_text="results").first.wait_for()
        wait_until_idle(page)
        page.locator(".lm-TabBar-tab", has_text="results").first.click()
        # the query (Q000) and its top 3 references render, each framed by its mark
        hits = wait_for(page, f"() => {{ const h = ({HITS_JS})(); return h.length === 6 && "
                              "h.every(i => i.ok) ? h : null; }", None, "the results tab's thumbnails")
        assert [h["cls"] for h in hits] == ["query"] + ["hit"] * 5  # the browser's default top 5
        assert {h["border"] for h in hits[1:]} <= {"rgb(44, 160, 44)", "rgb(214, 39, 40)"}
        status = page.get_by_text("query 1 of 3")
        status.wait_for()
        panel = page.locator(".widget-tab-contents, .lm-TabPanel-stackedPanel").first
        page.screenshot(path=str(tmp_path / "results_browser.png"))
        page.get_by_role("button", name="next").click()
        page.get_by_text("query 2 of 3").wait_for()
        wait_until_idle(page)  # a click while the kernel still redraws the last step can be lost
        page.get_by_role("button", name="patch affinity").click()
        wait_for(page, """() => Array.from(document.querySelectorAll('.js-plotly-plot .gtitle'))
            .some(t => t.textContent.startsWith('desc.pt: descriptor cosine'))""", None,
                 "the affinity figure of model A")
        wait_until_idle(page)
        page.wait_for_timeout(1000)  # let plotly paint
        fig = page.locator(".js-plotly-plot", has_text="desc.pt: descriptor cosine").first
        fig.scroll_into_view_if_needed()
        fig.screenshot(path=str(tmp_path / "results_affinity.png"))
        assert panel.count() >= 1
    assert all((tmp_path / f"results_{n}.png").stat().st_size > 0 for n in ("browser", "affinity"))
    print(f"results browser test wall time: {time.monotonic() - t0:.1f} s")
