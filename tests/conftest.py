"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> list[Path]:
    from icdlib.data import PROCEDURAL_KINDS, render

    root = tmp_path_factory.mktemp("sources")
    paths = []
    for i in range(16):
        p = root / f"T{i:06d}.png"
        render(PROCEDURAL_KINDS[i % len(PROCEDURAL_KINDS)], i, 48).save(p)
        paths.append(p)
    return paths
