"""The orderings table: claim names, paired intervals, verdicts (icdlib.pipeline.orderings)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from icdlib.pipeline.orderings import CLAIMS, COLUMNS, EMBEDDED, REAL_PHOTOS, orderings_frame, prediction_sets

N_Q = 60  # queries; the first 30 have a copy


def write_gt(path, prefix="Q"):
    rows = [(f"{prefix}{i:03d}", f"R{i:03d}" if i < 30 else "") for i in range(N_Q)]
    pd.DataFrame(rows, columns=["query_id", "reference_id"]).to_csv(path, index=False)
    return path


def write_set(path, skill: float, seed: int, prefix="Q"):
    """Predictions where each copy query's true reference outranks the wrong ones with
    probability ``skill`` (1: always, 0: never); query ids ``<prefix>000`` ..."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(N_Q):
        for j in range(3):
            rows.append((f"{prefix}{i:03d}", f"X{j}", round(float(rng.uniform(0.2, 0.6)), 4)))
        if i < 30:
            rows.append((f"{prefix}{i:03d}", f"R{i:03d}", 0.9 if rng.random() < skill else 0.1))
    pd.DataFrame(rows, columns=["query_id", "reference_id", "score"]).to_csv(path, index=False)
    return path.name


def fixtures(tmp_path, skills: dict[str, list[float]], hashes: dict[str, float]):
    """results.json / ablation results.json stand-ins whose prediction files exist."""
    rows, arms = {}, {}
    for label, per_seed in skills.items():
        for s, skill in enumerate(per_seed):
            # one draw per seed: a higher skill hits a superset of queries
            name = write_set(tmp_path / f"{label}_{s}.csv".replace(" ", "_"), skill, 100 * s)
            if label.startswith("ablation "):
                rec = arms.setdefault(label.split(" ", 1)[1], {"seeds": [], "runs": [], "predictions": []})
                rec["seeds"].append(s)
                rec["predictions"].append(name)
            else:
                rows[label] = {"table": "descriptor", "seed": s, "plain": {"predictions": name}}
    for label, skill in hashes.items():
        rows[label] = {"table": "descriptor", "seed": 0,
                       "plain": {"predictions": write_set(tmp_path / f"{label}.csv", skill, 7)}}
    return {"rows": rows}, {"arms": arms}


def test_claims_are_named_as_the_contract_says():
    assert [c.name for c in CLAIMS] == [
        "copynce>infonce", "copynce>infonce (SN)", "infonce>best_hash", "pixtrace>uniform",
        "copynce_on>off (ablation)", "matcher>descriptor", "matcher_copynce>matcher_bce",
        "copynce>start", "infonce>start", "copynce>infonce (real photos)", "infonce>best_hash (real photos)"]
    assert [c.benchmark for c in CLAIMS].count(REAL_PHOTOS) == 2


def test_verdicts_follow_the_intervals_and_missing_sets_are_reported(tmp_path):
    result, abl = fixtures(tmp_path, {
        "CopyNCE descriptor": [0.9], "InfoNCE descriptor": [0.3],
        "matcher (CopyNCE)": [0.3], "matcher (BCE only)": [0.9],
        "ablation copynce": [0.6, 0.7, 0.2], "ablation copynce_uniform": [0.6, 0.7, 0.2],
        "ablation infonce": [0.6, 0.7, 0.2]}, {"PDQ": 0.5, "pHash": 0.1})
    gt = write_gt(tmp_path / "gt.csv")
    df = orderings_frame(prediction_sets(result, abl), gt, lambda p: tmp_path / p, n_boot=300)
    assert list(df.columns) == COLUMNS
    v = df.set_index("claim")
    assert v.loc["copynce>infonce", "verdict"] == "holds"
    assert v.loc["copynce>infonce", "ci_low"] > 0 and v.loc["copynce>infonce", "seeds"] == "0"
    assert v.loc["matcher_copynce>matcher_bce", "verdict"] == "fails"
    assert v.loc["infonce>best_hash", "b"] == "PDQ"  # the better hash
    assert v.loc["copynce>infonce (SN)", "verdict"] == "missing"  # no SN rows in this run
    # the ablation arms here are the same sets per seed: gap 0, an interval around it
    assert v.loc["pixtrace>uniform", "gap"] == 0 and v.loc["pixtrace>uniform", "verdict"] == "inconclusive"
    assert v.loc["pixtrace>uniform", "seeds"] == "0,1,2"


def test_ablation_claims_are_paired_by_seed(tmp_path):
    """Seed 2 is hard for every arm: a small gap that holds on every seed holds, where
    comparing the arms' means against their seed spread would not show it."""
    result, abl = fixtures(tmp_path, {
        "ablation copynce": [1.0, 1.0, 0.35], "ablation copynce_uniform": [0.8, 0.8, 0.15],
        "ablation infonce": [0.8, 0.8, 0.15]}, {})
    df = orderings_frame(prediction_sets(result, abl), write_gt(tmp_path / "gt.csv"),
                         lambda p: tmp_path / p, n_boot=300).set_index("claim")
    assert df.loc["pixtrace>uniform", "verdict"] == "holds"
    assert df.loc["copynce>infonce", "verdict"] == "missing"


def _real_photo_result(tmp_path, skills: dict[str, float]):
    """A real-photo results.json stand-in: its own queries (``P000`` ...), one seed."""
    rows = {label: {"table": "descriptor", "seed": 0,
                    "plain": {"predictions": write_set(tmp_path / f"real_{label}.csv".replace(" ", "_"), skill, 11,
                                                       prefix="P")}}
            for label, skill in skills.items()}
    return {"run": True, "rows": rows}


def test_real_photo_claims_are_scored_on_their_own_ground_truth(tmp_path):
    result, abl = fixtures(tmp_path, {"CopyNCE descriptor": [0.3], "InfoNCE descriptor": [0.9]}, {"PDQ": 0.5})
    real = _real_photo_result(tmp_path, {"CopyNCE descriptor": 0.95, "InfoNCE descriptor": 0.5,
                                         "PDQ": 0.05, "pHash": 0.2})
    sets = prediction_sets(result, abl, real)
    assert "CopyNCE descriptor (real photos)" in sets and "pHash" not in sets
    truths = {EMBEDDED: write_gt(tmp_path / "gt.csv"), REAL_PHOTOS: write_gt(tmp_path / "real_gt.csv", prefix="P")}
    df = orderings_frame(sets, truths, lambda p: tmp_path / p, n_boot=300).set_index("claim")
    assert df.loc["copynce>infonce", "verdict"] == "fails"  # the embedded sets, the other way round
    real_claim = df.loc["copynce>infonce (real photos)"]
    assert real_claim["verdict"] == "holds" and real_claim["a"] == "CopyNCE descriptor (real photos)"
    assert df.loc["infonce>best_hash (real photos)", "b"] == "pHash (real photos)"  # the better real-photo hash
    assert df.loc["infonce>best_hash (real photos)", "verdict"] == "holds"
    assert (df["note"] == "").all()
    # scored against the embedded ground truth instead, the P queries would hold no copy at all
    alone = orderings_frame(sets, {EMBEDDED: truths[EMBEDDED], REAL_PHOTOS: truths[EMBEDDED]},
                            lambda p: tmp_path / p, n_boot=100).set_index("claim")
    assert alone.loc["copynce>infonce (real photos)", "verdict"] != "holds"


def test_real_photo_claims_not_run_say_why_and_missing_ones_stay_missing(tmp_path):
    result, abl = fixtures(tmp_path, {"CopyNCE descriptor": [0.9], "InfoNCE descriptor": [0.3]}, {})
    gt = write_gt(tmp_path / "gt.csv")
    not_run = {"run": False, "reason": "apt-get is not on PATH", "rows": {}}
    sets = prediction_sets(result, abl, not_run)
    df = orderings_frame(sets, gt, lambda p: tmp_path / p, n_boot=100,
                         not_run={REAL_PHOTOS: not_run["reason"]}).set_index("claim")
    for claim in ("copynce>infonce (real photos)", "infonce>best_hash (real photos)"):
        assert df.loc[claim, "verdict"] == "not run"
        assert df.loc[claim, "note"] == "not run: apt-get is not on PATH"
        assert np.isnan(df.loc[claim, "gap"]) and df.loc[claim, "seeds"] == ""
    assert df.loc["copynce>infonce", "verdict"] == "holds"
    # no real-photo ground truth and no reason (an older caller): missing, not "not run"
    df = orderings_frame(sets, gt, lambda p: tmp_path / p, n_boot=100).set_index("claim")
    assert df.loc["copynce>infonce (real photos)", "verdict"] == "missing"
