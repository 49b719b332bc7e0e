"""End-to-end: the explorer notebook in JupyterLab, driven by headless Chromium.

Starts JupyterLab on 127.0.0.1 (free port, random token) over a temporary copy of
``notebooks/explorer.ipynb``, runs all cells in headless Chromium (Debian's, through
playwright), sets the chain seed to 1 and presses "random chain", checks that the edited
image shown in the browser is exactly what ``edits.apply`` makes (before and after),
and saves ``explorer.png`` under the test's ``tmp_path`` (the committed pictures come
from ``make screenshots``).

Run: ``bash tests/browser/setup_chromium.sh && .venv/bin/python -m pytest -m browser tests/browser``
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tools.browser_session import (RUN_TIMEOUT_S, chromium_page, jupyter_lab, run_notebook, wait_for,
                                   wait_until_idle)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "explorer.ipynb"
# src of the query image: the 2nd <image> of the first plotly figure (source | query)
QUERY_HREF_JS = """() => {
    const plot = document.querySelector('.jp-OutputArea .js-plotly-plot');
    const imgs = plot ? plot.querySelectorAll('image') : [];
    return imgs.length >= 2 ? imgs[1].getAttribute('href') : null;
}"""


@pytest.fixture
def jupyter(tmp_path):
    """A JupyterLab server over a temp copy of the notebook."""
    with jupyter_lab(json.loads(NOTEBOOK.read_text()), NOTEBOOK.name, tmp_path) as lab:
        yield lab


def expected_query_uri(chain_seed: int) -> str:
    """The PNG the explorer must show as its query for the notebook's source (seed 0)
    edited by the chain of ``chain_seed``, computed here without any widget."""
    from icdlib import edits
    from icdlib.viz import figures as figures
    from icdlib.data import render
    from icdlib.viz.explorer import VizConfig

    cfg = VizConfig()
    source = render(cfg.source_kind, 0, cfg.size)
    query, _ = edits.apply(source, edits.sample_chain(chain_seed, edits.FAMILIES))
    return figures.png_data_uri(query)


def test_explorer_notebook_redraws_the_edited_image_when_the_chain_changes(jupyter, chromium, tmp_path):
    want_before, want_after = expected_query_uri(0), expected_query_uri(1)
    assert want_before != want_after
    t0 = time.monotonic()
    with chromium_page(chromium, timeout_s=RUN_TIMEOUT_S) as page:
        run_notebook(page, jupyter)
        # the browser shows exactly the image edits.apply makes for chain seed 0
        wait_for(page, f"(want) => ({QUERY_HREF_JS})() === want", want_before,
                 "the explorer's first draw (chain seed 0)")
        wait_until_idle(page)
        figure = page.locator(".jp-OutputArea .js-plotly-plot").first
        figure.scroll_into_view_if_needed()
        shot_before = figure.screenshot()

        seed = page.locator(".widget-text", has_text="chain seed").locator("input")
        seed.fill("1")
        seed.press("Enter")
        page.get_by_role("button", name="random chain").click()
        wait_for(page, f"(want) => ({QUERY_HREF_JS})() === want", want_after,
                 "the query image of chain seed 1 after 'random chain'")
        wait_until_idle(page)
        page.wait_for_timeout(1000)  # let plotly paint the last updates
        assert figure.screenshot() != shot_before  # the pixels on screen changed too

        figure.evaluate("e => e.scrollIntoView({block: 'start'})")
        shot = tmp_path / "explorer.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 0
    print(f"browser test wall time: {time.monotonic() - t0:.1f} s")
