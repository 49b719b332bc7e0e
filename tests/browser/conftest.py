"""Browser tests need Debian's chromium and the playwright package; skip cleanly without.

Install both with ``bash tests/browser/setup_chromium.sh``. The driving code (JupyterLab,
Chromium, the kernel) is ``tools/browser_session.py``, shared with ``tools/screenshots.py``.
The tests write their pictures under pytest's ``tmp_path``: the committed ones in
``reports/screenshots/`` come from ``make screenshots RUN=DIR`` only.
"""

from __future__ import annotations

import pytest

from tools.browser_session import CHROMIUM, missing_requirement


def pytest_collection_modifyitems(config, items):
    reason = missing_requirement()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def chromium() -> str:
    """Path of the chromium executable the browser tests drive."""
    return CHROMIUM
