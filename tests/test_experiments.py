"""Every research experiment under experiments/ run at tiny size on a finished tiny pipeline run:
each writes its report with the columns and keys of the committed one (the reports' contract).
experiments/gpu_smoke.py is run the same way in tests/test_gpu_smoke.py."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from _imports import experiment

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A pipeline run folder at the tiny profile (one seed) with every stage an experiment reads
    done: data, trunk, descriptors, matchers, evaluation, ablations (about half a minute)."""
    from icdlib.pipeline import ablations, evaluation, prepare, training
    from icdlib.pipeline.profile import apply_profile

    run = tmp_path_factory.mktemp("finished_run")
    params = run / "params.yaml"
    apply_profile(ROOT / "params.yaml", "tiny", ["main.seeds=[0]", "ablation.seeds=[0]"],
                  profiles_dir=ROOT / "profiles", out_path=params)
    prepare.prepare_data(params, progress=False)
    training.train_arms(params, ["trunk", "infonce", "copynce"], progress=False)
    training.train_arms(params, ["matcher_bce", "matcher_copynce"], progress=False)
    evaluation.evaluate_suite(params)
    ablations.run_ablations(params, progress=False)
    return run


def _columns_of(report: str) -> set[str]:
    return set(pd.read_csv(ROOT / report, nrows=0).columns)


def test_interval_parts_writes_every_claim_s_three_intervals(finished_run, tmp_path):
    from icdlib.pipeline.orderings import CLAIMS

    out = tmp_path / "interval_parts.csv"
    assert experiment("interval_parts").main(["--run", str(finished_run), "--boot", "20", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert set(df.columns) == _columns_of("reports/tables/interval_parts.csv")
    assert len(df) and set(df["claim"]) <= {c.name for c in CLAIMS}
    for part in ("seeds_only", "queries_only", "both"):
        assert (df[f"{part}_low"] <= df[f"{part}_high"]).all(), part
    assert (df["profile"] == "tiny").all()


def test_matcher_lce_writes_one_row_per_variant_on_the_first_queries(finished_run, tmp_path):
    out = tmp_path / "lce.csv"
    assert experiment("matcher_lce").main(["--run", str(finished_run), "--queries", "3",
                                           "--variants", "plain,top1_light", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert set(df.columns) == _columns_of("reports/matcher/lce.csv")
    assert list(df["variant"]) == ["plain", "top1_light"] and list(df["passes_per_pair"]) == [1, 10]
    assert (df["queries"] == 3).all() and df["lce_pairs"].iloc[0] == 0 and 0 < df["lce_pairs"].iloc[1] <= 3
    assert df["uAP"].between(0, 1).all()
    # NaN only where the first queries' candidates hold no true pair (the tiny run's descriptor may miss)
    auc = df["candidate_auc"]
    assert (auc.between(0, 1) | auc.isna()).all() and auc.isna().nunique() == 1


def test_matcher_levers_trains_a_variant_and_scores_every_kept_budget(finished_run, tmp_path):
    out = tmp_path / "levers.csv"
    assert experiment("matcher_levers").main(["--run", str(finished_run), "--steps", "2", "--snapshots", "1",
                                              "--variants", "recipe", "--out", str(out)]) == 0
    df = pd.read_csv(out, dtype={"commit": str})
    assert set(df.columns) == _columns_of("reports/matcher/levers.csv")
    assert list(df["variant"]) == ["descriptor candidates", "recipe_2steps", "recipe_2steps"]
    assert list(df["step"]) == [0, 1, 2] and list(df["pairs"]) == [0, 8, 16]  # tiny matcher batch: 8
    assert (df["commit"] == "unknown").all() and (df["arm"] == "matcher_bce").all()
    assert (finished_run / "runs" / "levers" / "recipe_2steps" / "model_step1.pt").is_file()


def test_descriptor_levers_scores_the_recipe_and_a_retrained_variant_of_both_arms(finished_run, tmp_path):
    out = tmp_path / "levers.csv"
    assert experiment("descriptor_levers").main(["--run", str(finished_run), "--variants", "recipe,lr2e-4",
                                                 "--snapshots", "1", "--out", str(out)]) == 0
    df = pd.read_csv(out, dtype={"commit": str})
    assert set(df.columns) == _columns_of("reports/ablation/levers.csv")
    got = sorted(zip(df["variant"], df["arm"], df["step"]))
    assert got == sorted([("recipe", a, 3) for a in ("infonce", "copynce")]
                         + [("lr2e-4", a, s) for a in ("infonce", "copynce") for s in (1, 3)])
    assert df["uAP"].between(0, 1).all() and (df["split"] == "dev_queries").all()


def test_matcher_diagnosis_writes_every_part_with_the_committed_keys(finished_run, tmp_path):
    mod = experiment("matcher_diagnosis")
    out = tmp_path / "diagnosis.json"
    argv = ["--run", str(finished_run), "--n", "4", "--overfit-pairs", "16", "--overfit-steps", "2",
            "--curve-steps", "2", "--every", "1", "--seen-steps", "1", "--heldout-steps", "10", "20",
            "--variants", "copynce_trunk,random_init", "--out", str(out)]
    assert mod.main(argv) == 0
    got = json.loads(out.read_text())
    want = json.loads((ROOT / "reports/matcher/diagnosis.json").read_text())
    assert set(got) == set(want)
    for part in ("consistency", "shortcut", "overfit"):
        assert set(got[part]) == set(want[part]), part
    assert set(got["consistency"]["matcher"]) == set(want["consistency"]["matcher"])
    assert set(got["curves"]) == {"batch_size", "heldout_pairs", "copynce_trunk", "random_init"}
    assert got["curves"]["batch_size"] == 8
    assert [p["pairs_seen"] for p in got["curves"]["random_init"]["curve"]] == [0, 8, 16]
    kinds = got["consistency"]["pairs"]  # a random reference that is the true one is dropped
    assert got["overfit"]["pairs"] == 16 and kinds["pos"] == kinds["hard"] == 4 and 0 < kinds["random"] <= 4
    # the matcher arm's pairs come from the pipeline's pair store, which holds the trained steps
    run = mod.Run(finished_run, 1, range(10, 20))
    assert run.store is not None and run.store.folder.parent == finished_run / "runs" / "pairs"
    key = mod.cache_keys(run, range(1))[0]
    stored, live = run.store[key], run.live[key]
    assert all(bool((stored[k] == live[k]).all()) for k in ("query", "reference", "label"))
