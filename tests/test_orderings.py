"""The orderings table: claim names, paired intervals, verdicts (icdlib.pipeline.orderings)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from icdlib.pipeline.orderings import CLAIMS, COLUMNS, orderings_frame, prediction_sets

N_Q = 60  # queries; the first 30 have a copy


def write_gt(path):
    rows = [(f"Q{i:03d}", f"R{i:03d}" if i < 30 else "") for i in range(N_Q)]
    pd.DataFrame(rows, columns=["query_id", "reference_id"]).to_csv(path, index=False)
    return path


def write_set(path, skill: float, seed: int):
    """Predictions where each copy query's true reference outranks the wrong ones with
    probability ``skill`` (1: always, 0: never)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(N_Q):
        for j in range(3):
            rows.append((f"Q{i:03d}", f"X{j}", round(float(rng.uniform(0.2, 0.6)), 4)))
        if i < 30:
            rows.append((f"Q{i:03d}", f"R{i:03d}", 0.9 if rng.random() < skill else 0.1))
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
        "copynce_on>off (ablation)", "matcher>descriptor", "matcher_copynce>matcher_bce"]


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
