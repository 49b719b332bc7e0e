"""End-to-end: ``tools/screenshots.py`` on a tiny finished pipeline run, in headless Chromium.

Builds a tiny-profile run in ``tmp_path`` (data, trunk, both descriptor arms, both matchers,
evaluate: about a minute on 2 cores), takes the four pictures into ``tmp_path`` and checks each
is a real PNG taken on the page that shows what it should (the trace overlay, the patch-overlap
matrix, the results tab's hits, the patch affinity, the search gallery), and that no page
showed the run's absolute path (nor pytest's temporary folder).

Run: ``bash tests/browser/setup_chromium.sh && .venv/bin/python -m pytest -m browser tests/browser``
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tools import screenshots as S

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_run(tmp_path) -> Path:
    """A finished tiny-profile run: what the evaluate stage needs, then the evaluate stage."""
    from icdlib.pipeline import evaluation, prepare, training
    from icdlib.pipeline.profile import apply_profile

    run = tmp_path / "run"
    run.mkdir()
    params = run / "params.yaml"
    apply_profile(ROOT / "params.yaml", "tiny", [], profiles_dir=ROOT / "profiles", out_path=params)
    prepare.prepare_data(params, progress=False)
    training.train_arms(params, ["trunk", "infonce", "copynce", "matcher_bce", "matcher_copynce"])
    evaluation.evaluate_suite(params)
    return run


def test_the_tool_takes_four_pictures_of_a_finished_run_and_shows_no_machine_path(tiny_run, tmp_path, chromium):
    out = tmp_path / "shots"
    shots = S.take_screenshots(tiny_run, out, chromium)
    assert sorted(shots) == sorted(S.NAMES)
    for name, shot in shots.items():
        assert shot.path == out / name and shot.path.stat().st_size > 0
        with Image.open(shot.path) as im:
            assert im.format == "PNG" and im.width >= 300 and im.height >= 150, (name, im.size)
    text = {name: shot.text for name, shot in shots.items()}
    # the explorer on a benchmark copy: the trace's correspondences, the patch overlap and its matrix
    assert "query points trace into the reference" in text["explorer.png"]
    assert "overlap of query patch" in text["explorer.png"] and "overlap matrix [" in text["explorer.png"]
    # the results tab on the run's predictions, relative paths in its fields
    assert "(all queries): Q" in text["results_browser.png"] and " copy" in text["results_browser.png"]
    assert "runs/screenshots/eval" in text["results_browser.png"]
    assert "models/descriptor_copynce.pt" in text["results_browser.png"]
    assert "descriptor_copynce.pt: descriptor cosine" in text["results_affinity.png"]
    assert "icdlib search: 8 queries of data/mini_disc/dev_queries" in text["search.png"]
    for name, t in text.items():
        for machine in (str(tmp_path), str(tiny_run.resolve()), str(ROOT)):
            assert machine not in t, (name, machine)
    assert not list((ROOT / "reports" / "screenshots").glob(".*.tmp*"))  # nothing written beside the committed ones
