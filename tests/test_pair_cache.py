"""Traced pairs computed once and read back (icdlib.data.cache)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_train import T, _weights, tiny_run

from icdlib.data import MatcherPairs, PairsConfig, TracedPairs
from icdlib.data.cache import CachedPairs, build_pair_cache, cache_folder

CFG = PairsConfig(size=32, patch=8, donors="procedural")
KEYS = [(3, 0), (0, 0), (5, 1), (3, 0), (15, 2)]


def same(a, b):
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("make", [
    lambda p: TracedPairs(p, CFG, seed=1),
    lambda p: TracedPairs(p, CFG, seed=1, neighbours=np.roll(np.arange(16), -1)[:, None].repeat(3, 1)),
    lambda p: MatcherPairs(p, dataclasses.replace(CFG, pos_rate=0.5), seed=1),
], ids=["descriptor", "descriptor-knn", "matcher"])
def test_cached_pairs_equal_the_pairs_made_on_the_fly(make, images, tmp_path):
    live = make(images)
    folder = build_pair_cache(live, KEYS, tmp_path, workers=0, progress=False)
    cached = CachedPairs(folder, len(live))
    assert len(cached) == len(live)
    for key in KEYS:
        assert same(cached[key], live[key]), key


def test_a_store_grows_and_is_named_by_the_data_not_the_loss(images, tmp_path):
    live = TracedPairs(images, CFG, seed=1)
    folder = build_pair_cache(live, KEYS[:2], tmp_path, workers=0, progress=False)
    assert build_pair_cache(live, KEYS, tmp_path, workers=1, progress=False) == folder
    cached = CachedPairs(folder, len(live))
    assert all(same(cached[k], live[k]) for k in KEYS)
    assert len(np.load(folder / "keys.npy")) == 4  # (3, 0) twice in KEYS: stored once
    uniform = TracedPairs(images, dataclasses.replace(CFG, targets="uniform"), seed=1)
    assert cache_folder(tmp_path, uniform) == folder  # the loss's target control shares the pairs
    assert cache_folder(tmp_path, TracedPairs(images, CFG, seed=2)) != folder
    assert cache_folder(tmp_path, TracedPairs(images, dataclasses.replace(CFG, copy_vs_copy=0.5), seed=1)) != folder
    with pytest.raises(KeyError, match=r"\(9, 9\)"):
        cached[(9, 9)]


@pytest.mark.parametrize("arm", ["copynce", "matcher_copynce"])
def test_training_from_the_pair_cache_gives_the_same_weights(arm, images, tmp_path):
    run = tiny_run(arm)
    T.train(run, tmp_path / "live", image_paths=images, progress=False)
    cached = tiny_run(arm, **{"train.pair_cache": str(tmp_path / "pairs")})
    T.train(cached, tmp_path / "cached", image_paths=images, progress=False)
    a, b = _weights(tmp_path / "live" / T.FINAL), _weights(tmp_path / "cached" / T.FINAL)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any((tmp_path / "pairs").iterdir())
