"""The lever experiments' variants (experiments/matcher_levers.py, descriptor_levers.py, matcher_lce.py)
and their shared helpers in icdlib.pipeline.levers (variant names, the run's commit)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from _imports import experiment
from icdlib.pipeline.levers import chosen_variants, run_commit

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return experiment("matcher_levers")


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
    from dataclasses import fields

    from icdlib.params import has_key, load_params
    from icdlib.train.runs import TrainConfig

    mod = experiment("descriptor_levers")
    params = load_params(ROOT / "params.yaml")
    stage_set = {f"train.{f.name}" for f in fields(TrainConfig)}  # keys a stage sets itself (train.knn_checkpoint)

    def known(key: str) -> bool:
        return has_key(params, key) or key in stage_set

    for name, keys in mod.VARIANTS.items():
        assert (keys or name == "recipe") and all(known(k) for k in keys), name
    assert not known("train.no_such_key")  # the check can fail


def test_lce_experiment_subset_keeps_the_first_queries_and_their_ground_truth():
    mod = experiment("matcher_lce")
    cands = pd.DataFrame({"query_id": ["Q2", "Q0", "Q1", "Q0", "Q3"], "reference_id": ["R1", "R2", "R3", "R4", "R5"],
                          "score": [0.1, 0.2, 0.3, 0.4, 0.5]})
    gt_q, gt_r = ["Q3", "Q0", "Q2", "Q1"], ["R5", None, "R1", "R9"]
    got, q, r = mod.subset(cands, gt_q, gt_r, 2)  # Q0 and Q1: the two smallest ids
    assert sorted(got["query_id"]) == ["Q0", "Q0", "Q1"] and list(got.index) == [0, 1, 2]
    assert sorted(zip(q, r), key=str) == sorted([("Q0", None), ("Q1", "R9")], key=str)
    assert set(mod.VARIANTS) >= {"plain", "top1_full", "all_light"}


def test_unknown_variants_are_named():
    known = _module().VARIANTS
    assert chosen_variants("recipe,pos30", known, "x") == ["recipe", "pos30"]
    assert chosen_variants(" recipe, ,pos30,", known, "x") == ["recipe", "pos30"]  # blanks skipped
    with pytest.raises(ValueError, match=r"x: unknown variant\(s\) \['pos99'\]; known: \['recipe'"):
        chosen_variants("recipe,pos99", known, "x")
    with pytest.raises(ValueError, match="x: no variant named in ','"):
        chosen_variants(",", known, "x")


@pytest.mark.parametrize("name", ["matcher_levers", "descriptor_levers", "matcher_lce"])
def test_each_lever_experiment_exits_2_naming_an_unknown_variant_before_reading_the_run(name, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        experiment(name).main(["--run", str(tmp_path / "no-run"), "--variants", "nope"])
    assert exit_.value.code == 2
    assert f"{name}: unknown variant(s) ['nope']" in capsys.readouterr().err


def test_run_commit_is_the_checkout_s_short_commit_or_unknown_outside_git(tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True,
                          check=True)
    assert run_commit(ROOT) == head.stdout.strip() and len(run_commit(ROOT)) == 7
    assert run_commit(tmp_path) == "unknown"
