"""Paper-style tables, the orderings verdicts and the profile switch."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from icdlib.pipeline.profile import apply_profile, merge, set_dotted
from icdlib.pipeline.report import Row, orderings, table_frame, write_table
from icdlib.pipeline.stage import config_tag


def _metrics(u, r=0.0, m=0.0):
    return {"uAP": u, "RP90": r, "mAP": m}


def test_row_mean_and_sample_std_over_seeds():
    row = Row("copynce", [_metrics(0.2), _metrics(0.4), _metrics(0.3)], [0, 1, 2], "cfg")
    d = row.as_dict("ablation")
    assert d["uAP"] == pytest.approx(0.3)
    assert d["uAP_std"] == pytest.approx(0.1)  # sample std of 0.2, 0.3, 0.4
    assert d["seeds"] == "0,1,2" and d["n_seeds"] == 3


def test_single_seed_row_has_no_std_and_paper_values_stay_in_their_own_columns():
    d = Row("CopyNCE descriptor", [_metrics(0.05)], [0], "cfg").as_dict("descriptor")
    assert math.isnan(d["uAP_std"])
    assert d["uAP"] == pytest.approx(0.05)
    assert d["paper_uAP"] == pytest.approx(0.705) and d["paper_RP90"] == pytest.approx(0.636)
    other = Row("PDQ", [_metrics(0.1)], [0], "cfg").as_dict("descriptor")
    assert math.isnan(other["paper_uAP"]) and other["paper_source"] == ""


def test_write_table_writes_csv_with_contract_columns_and_markdown(tmp_path):
    rows = [Row("a", [_metrics(0.5, 0.25, 0.75)], [0], "x=1"), Row("b", [_metrics(0.1)], [3], "x=2")]
    write_table(rows, "descriptor", tmp_path, "T")
    df = pd.read_csv(tmp_path / "descriptor.csv")
    for col in ("method", "uAP", "RP90", "mAP", "seeds", "config", "paper_uAP", "paper_RP90"):
        assert col in df.columns
    assert df.loc[0, "RP90"] == pytest.approx(0.25)
    md = (tmp_path / "descriptor.md").read_text()
    assert "| a | 0.500 | 0.250 | 0.750 | 0 |" in md


def test_empty_table_is_an_error():
    with pytest.raises(ValueError, match="no rows"):
        table_frame([], "matcher")


def _frames(copy_u, info_u, hash_u, matcher_u, abl_std):
    desc = pd.DataFrame({"method": ["PDQ", "pHash", "InfoNCE descriptor", "CopyNCE descriptor",
                                    "InfoNCE descriptor + SN", "CopyNCE descriptor + SN"],
                         "uAP": [hash_u, hash_u / 2, info_u, copy_u, info_u, copy_u]})
    match = pd.DataFrame({"method": ["matcher (BCE only)", "matcher (CopyNCE)"], "uAP": [matcher_u, matcher_u]})
    abl = pd.DataFrame({"method": ["infonce", "copynce", "copynce_uniform"], "uAP": [info_u, copy_u, info_u],
                        "uAP_std": [abl_std, abl_std, abl_std]})
    return desc, match, abl


def test_orderings_hold_only_beyond_the_seed_spread():
    claims = {c["claim"]: c for c in orderings(*_frames(0.30, 0.20, 0.10, 0.50, 0.05))}
    c = claims["CopyNCE descriptor > InfoNCE descriptor"]
    assert c["gap_uAP"] == pytest.approx(0.10) and c["spread_uAP"] == pytest.approx(0.05)
    assert c["verdict"] == "holds"
    assert claims["InfoNCE descriptor > best perceptual hash"]["verdict"] == "holds"
    assert claims["matcher (CopyNCE) > CopyNCE descriptor"]["verdict"] == "holds"
    # equal matchers: the ordering is not shown
    assert claims["matcher (CopyNCE) > matcher (BCE only)"]["verdict"] == "fails"


def test_orderings_within_noise_and_reversed():
    claims = {c["claim"]: c for c in orderings(*_frames(0.22, 0.20, 0.30, 0.10, 0.05))}
    assert claims["CopyNCE descriptor > InfoNCE descriptor"]["verdict"] == "within_noise"
    assert claims["InfoNCE descriptor > best perceptual hash"]["verdict"] == "fails"
    assert claims["matcher (CopyNCE) > CopyNCE descriptor"]["verdict"] == "fails"


def test_ablation_orderings_are_paired_by_seed():
    # seed 2 is harder for every arm: the arms' stds are large, the paired differences are not
    per_seed = {"copynce": {0: 0.30, 1: 0.31, 2: 0.10}, "copynce_uniform": {0: 0.28, 1: 0.29, 2: 0.08},
                "infonce": {0: 0.31, 1: 0.30, 2: 0.12}}
    desc, match, abl = _frames(0.30, 0.20, 0.10, 0.50, 0.05)
    abl = pd.DataFrame({"method": list(per_seed), "uAP": [np.mean(list(v.values())) for v in per_seed.values()],
                        "uAP_std": [np.std(list(v.values()), ddof=1) for v in per_seed.values()]})
    claims = {c["claim"]: c for c in orderings(desc, match, abl, per_seed)}
    c = claims["PixTrace targets > uniform targets [ablation, paired by seed]"]
    assert c["gap_uAP"] == pytest.approx(0.02) and c["spread_uAP"] == pytest.approx(0.0, abs=1e-12)
    assert c["verdict"] == "holds"  # unpaired, the 0.02 gap would sit inside a 0.12 std
    c = claims["CopyNCE on > off (ablation) [ablation, paired by seed]"]
    assert c["gap_uAP"] == pytest.approx(-0.02 / 3) and c["verdict"] == "fails"
    assert c["spread_uAP"] == pytest.approx(np.std([-0.01, 0.01, -0.02], ddof=1))
    # without per-seed values the claims fall back to the arms' means and stds
    assert "PixTrace targets > uniform targets [ablation means]" in {
        c["claim"] for c in orderings(desc, match, abl)}


def test_config_tag_changes_with_the_params_it_hashes():
    p = {"train": {"steps": 10}, "eval": {"k": 10}}
    a = config_tag(p, ["train"], arm="x")
    assert a.startswith("arm=x;params=")
    assert config_tag({**p, "eval": {"k": 5}}, ["train"], arm="x") == a  # eval not hashed
    assert config_tag({**p, "train": {"steps": 11}}, ["train"], arm="x") != a
    with pytest.raises(KeyError, match="nope"):
        config_tag(p, ["nope"])


def test_profile_merge_rewrites_nested_keys_and_rejects_unknown_sections():
    base = {"train": {"steps": 10, "lr": 0.1}, "arms": {"a": {"train.steps": 3}}}
    merge(base, {"train": {"steps": 2}, "arms": {"a": {"train.lr": 0.5}}})
    assert base == {"train": {"steps": 2, "lr": 0.1}, "arms": {"a": {"train.steps": 3, "train.lr": 0.5}}}
    with pytest.raises(KeyError, match="trian"):
        merge(base, {"trian": {"steps": 1}})
    with pytest.raises(KeyError, match="train.stpes"):
        set_dotted(base, "train.stpes", 1)


def test_apply_profile_keeps_comments_and_sets_values(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("profile: default\nseed: 0\ntrain:\n  steps: 10  # why ten\n")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "fast.yaml").write_text("train: {steps: 200}\n")
    apply_profile(params, "fast", ["seed=3"], profiles_dir=tmp_path / "profiles")
    text = params.read_text()
    assert "# why ten" in text
    assert yaml.safe_load(text) == {"profile": "fast", "seed": 3, "train": {"steps": 200}}
    with pytest.raises(FileNotFoundError, match="known: fast"):
        apply_profile(params, "slow", [], profiles_dir=tmp_path / "profiles")


def test_a_single_set_on_params_yaml_rewrites_only_its_own_line(tmp_path):
    import difflib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    params = tmp_path / "params.yaml"
    before = (root / "params.yaml").read_text()
    params.write_text(before)
    apply_profile(params, None, ["eval.k=11"])
    changed = [d for d in difflib.unified_diff(before.splitlines(), params.read_text().splitlines(), n=0)
               if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    assert changed == ["-  k: 10  # candidates per query", "+  k: 11  # candidates per query"]
