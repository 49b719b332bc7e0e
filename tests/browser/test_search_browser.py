"""End-to-end: ``python -m icdlib.search``'s ``index.html`` opened from disk in headless Chromium.

Runs the search command on two small folders with a random-init tiny descriptor, opens
``index.html`` as a ``file://`` page (no server), checks that every thumbnail decoded
(``naturalWidth > 0``) and that no request left the page, and saves ``search.png`` under
the test's ``tmp_path`` (the committed picture comes from ``make screenshots``).

Run: ``bash tests/browser/setup_chromium.sh && .venv/bin/python -m pytest -m browser tests/browser``
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tools.browser_session import chromium_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IMAGES_JS = """() => Array.from(document.images).map(i => ({
    complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
    shown: i.getBoundingClientRect().width}))"""


def _image(seed: int, size=(96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)


def test_search_index_html_renders_every_thumbnail(tmp_path, chromium, capsys):
    from icdlib.checkpoints import save_checkpoint
    from icdlib.models import build_descriptor
    from icdlib.search import main

    refs, queries = tmp_path / "refs", tmp_path / "queries" / "batch 1"
    (refs / "sub").mkdir(parents=True)
    queries.mkdir(parents=True)
    for i in range(6):
        _image(i).save(refs / ("sub" if i % 2 else "") / f"r{i}.png")
    for i in range(3):
        _image(i).rotate(10 * i).save(queries / f"q{i}.jpg", quality=90)
    desc = save_checkpoint(tmp_path / "d.pt", build_descriptor("vit_tiny_cpu", seed=0))
    out = tmp_path / "out"
    assert main(["--queries", str(queries), "--references", str(refs), "--descriptor", str(desc),
                 "--k", "4", "--threshold", "0.9", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["n_matches"] == 3 * 4

    requests = []
    with chromium_page(chromium, width=1100, height=700) as page:
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "index.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate(IMAGES_JS)
        assert len(images) == 3 * (1 + 4)
        assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 and i["shown"] > 0 for i in images), images
        assert page.locator("div.query").count() == 3
        assert page.locator("figure .score").count() == 12
        page.screenshot(path=str(tmp_path / "search.png"))
    assert (tmp_path / "search.png").stat().st_size > 0
    # only the page itself and its inline data: thumbnails were loaded
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
