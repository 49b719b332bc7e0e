"""benchmarks/matcher_levers.py: its candidate-pair AUC against a brute-force count, and its variants."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _imports import benchmark

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return benchmark("matcher_levers")


def test_candidate_auc_is_the_share_of_true_false_pairs_ranked_right():
    rng = np.random.default_rng(0)
    n = 60
    scored = pd.DataFrame({"query_id": [f"Q{i}" for i in range(n)], "reference_id": [f"R{i % 7}" for i in range(n)],
                           "score": rng.integers(0, 5, n).astype(float)})  # many ties
    truth = {(f"Q{i}", f"R{i % 7}") for i in range(0, n, 3)}
    y = np.array([(q, r) in truth for q, r in zip(scored.query_id, scored.reference_id)])
    s = scored.score.to_numpy()
    wins = sum((a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y])  # every (true, false) pair
    assert abs(_module().candidate_auc(scored, truth) - wins / (y.sum() * (~y).sum())) < 1e-12


def test_every_variant_sets_known_keys():
    from icdlib.params import has_key, load_params

    from icdlib.models import MatcherConfig
    from icdlib.train import TrainConfig

    params = load_params(ROOT / "params.yaml")
    fields = {f"{section}.{f.name}" for section, cls in (("train", TrainConfig), ("matcher", MatcherConfig))
              for f in dataclasses.fields(cls)}
    for name, keys in _module().VARIANTS.items():  # params.yaml keys, or config keys a run may set (train.init)
        assert all(has_key(params, k) or k in fields for k in keys), name


def test_every_descriptor_lever_sets_known_keys():
    from icdlib.params import has_key, load_params

    mod = benchmark("descriptor_levers")
    params = load_params(ROOT / "params.yaml")
    for name, keys in mod.VARIANTS.items():
        assert (keys or name == "recipe") and all(has_key(params, k) for k in keys), name


def test_lce_benchmark_subset_keeps_the_first_queries_and_their_ground_truth():
    mod = benchmark("matcher_lce")
    cands = pd.DataFrame({"query_id": ["Q2", "Q0", "Q1", "Q0", "Q3"], "reference_id": ["R1", "R2", "R3", "R4", "R5"],
                          "score": [0.1, 0.2, 0.3, 0.4, 0.5]})
    gt_q, gt_r = ["Q3", "Q0", "Q2", "Q1"], ["R5", None, "R1", "R9"]
    got, q, r = mod.subset(cands, gt_q, gt_r, 2)  # Q0 and Q1: the two smallest ids
    assert sorted(got["query_id"]) == ["Q0", "Q0", "Q1"] and list(got.index) == [0, 1, 2]
    assert sorted(zip(q, r), key=str) == sorted([("Q0", None), ("Q1", "R9")], key=str)
    assert set(mod.VARIANTS) >= {"plain", "top1_full", "all_light"}


def test_unknown_variants_are_named():
    mod = _module()
    assert mod.chosen("recipe,pos30", mod.VARIANTS, "x") == ["recipe", "pos30"]
    with pytest.raises(SystemExit, match=r"x: unknown variant\(s\) \['pos99'\]"):
        mod.chosen("recipe,pos99", mod.VARIANTS, "x")
