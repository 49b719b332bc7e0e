"""Paper-style tables, the orderings verdicts and the profile switch."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from icdlib.pipeline.profile import apply_profile, merge, set_dotted
from icdlib.pipeline.report import Row, table_frame, write_table
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
