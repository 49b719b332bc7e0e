"""Atomic writes (icdlib.atomic): the target is replaced whole or left as it was, and no
temporary file outlives a write."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from icdlib.atomic import atomic_path, new_file_mode, write_bytes, write_json, write_text


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_write_replaces_an_existing_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    assert write_json(target, {"b": 1, "a": [1.5, None]}, sort_keys=True) == target
    assert target.read_text() == '{"a": [1.5, null], "b": 1}\n'
    assert names(tmp_path) == ["out.json"]


def test_a_write_that_raises_leaves_the_target_untouched_and_no_temporary_file(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"the last good checkpoint")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target, fsync=True) as tmp:
            tmp.write_bytes(b"half a check")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"the last good checkpoint"
    assert names(tmp_path) == ["model.pt"]


def test_an_interrupted_write_creates_no_target(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "sub" / "table.npy") as tmp:
            np.save(tmp, np.arange(3))
            raise KeyboardInterrupt
    assert names(tmp_path / "sub") == []


def test_json_that_does_not_serialise_raises_before_touching_the_target(tmp_path):
    target = tmp_path / "meta.json"
    target.write_text("{}\n")
    with pytest.raises(TypeError):
        write_json(target, {"x": object()})
    assert target.read_text() == "{}\n" and names(tmp_path) == ["meta.json"]


def test_numpy_and_torch_save_to_the_temporary_path_and_land_under_the_target_name(tmp_path):
    table = np.arange(12, dtype=np.int64).reshape(3, 4)
    with atomic_path(tmp_path / "neighbours.npy") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".npy") and tmp.name.startswith(".neighbours.npy.")
        np.save(tmp, table)  # the suffix is kept: np.save appends nothing
    np.testing.assert_array_equal(np.load(tmp_path / "neighbours.npy"), table)
    with atomic_path(tmp_path / "state.pt") as tmp:
        torch.save({"w": torch.ones(2)}, tmp)
    assert torch.equal(torch.load(tmp_path / "state.pt", weights_only=True)["w"], torch.ones(2))
    assert names(tmp_path) == ["neighbours.npy", "state.pt"]


def test_written_files_get_ordinary_permissions_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        assert new_file_mode() == 0o644 and new_file_mode(folder=True) == 0o755
        path = write_text(tmp_path / "a" / "b.txt", "é\n")  # parent folders made
        assert path.read_bytes() == "é\n".encode() and (path.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)


def test_two_writers_of_one_target_never_share_a_temporary_file(tmp_path):
    target = tmp_path / "cache.json"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b
        a.write_text(json.dumps("first"))
        b.write_text(json.dumps("second"))
    assert json.loads(target.read_text()) == "first"  # the last to finish wins, whole
    assert names(tmp_path) == ["cache.json"]


def test_write_bytes_returns_the_target(tmp_path):
    assert write_bytes(tmp_path / "x.bin", b"\x00\x01") == tmp_path / "x.bin"
    assert (tmp_path / "x.bin").read_bytes() == b"\x00\x01"
