"""Browser tests need Debian's chromium and the playwright package; skip cleanly without.

Install both with ``bash tests/browser/setup_chromium.sh``.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

CHROMIUM = os.environ.get("ICDLIB_CHROMIUM", "/usr/bin/chromium")


def missing_requirement() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no chromium executable at {CHROMIUM} (run tests/browser/setup_chromium.sh)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (run tests/browser/setup_chromium.sh)"
    return None


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
