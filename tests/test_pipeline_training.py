"""Pipeline wiring of icdlib.pipeline (the stages' training calls), without training."""

from __future__ import annotations

from pathlib import Path

import pytest

from icdlib.pipeline import training as E

from icdlib.pipeline.profile import apply_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """A tiny-profile params file in tmp_path with a CopyNCE descriptor checkpoint in place;
    pipeline training records the run it is given instead of training."""
    params = tmp_path / "params.yaml"
    apply_profile(ROOT / "params.yaml", "tiny", [], profiles_dir=ROOT / "profiles", out_path=params)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "descriptor_copynce.pt").write_bytes(b"weights")
    runs = []

    def fake_train(run, out, **kwargs):
        runs.append(run)
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "model.pt").write_bytes(b"model")
        return Path(out) / "model.pt"

    monkeypatch.setattr(E, "train", fake_train)
    return params, runs


@pytest.mark.parametrize("arm", ["matcher_bce", "matcher_copynce"])
def test_matcher_arms_share_one_knn_table_when_they_draw_knn_negatives(stage, arm):
    params, runs = stage
    apply_profile(params, "tiny", ["pairs.neg_knn_p=0.5"], profiles_dir=ROOT / "profiles", out_path=params)
    E.train_arm(params, arm, progress=False)
    assert runs[-1].pairs.neg_knn_p == 0.5
    t = runs[-1].train
    assert Path(t.knn_checkpoint) == params.parent / "models" / "descriptor_copynce.pt"
    assert Path(t.knn_cache) == params.parent / "runs" / "knn"


def test_matcher_without_knn_negatives_mines_nothing(stage):
    params, runs = stage
    apply_profile(params, "tiny", ["pairs.neg_knn_p=0.0"], profiles_dir=ROOT / "profiles", out_path=params)
    E.train_arm(params, "matcher_bce", progress=False)
    assert runs[-1].pairs.neg_knn_p == 0.0
    assert runs[-1].train.knn_checkpoint is None and runs[-1].train.knn_cache is None


def test_descriptor_arms_mine_nothing(stage):
    params, runs = stage
    E.train_arm(params, "copynce", progress=False)
    assert runs[-1].train.knn_checkpoint is None


def test_main_runs_publish_their_curves_under_reports_and_a_rerun_replaces_them(stage):
    params, _ = stage
    live = params.parent / "runs" / "copynce" / "dvclive"
    (live / "plots" / "metrics" / "train").mkdir(parents=True)
    (live / "metrics.json").write_text('{"train": {"loss": 2.5}}')
    (live / "plots" / "metrics" / "train" / "loss.tsv").write_text("timestamp\tstep\tloss\n0\t1\t3.0\n0\t2\t2.5\n")
    E.train_arms(params, ["copynce"], progress=False)
    out = params.parent / "reports" / "train" / "copynce"
    assert (out / "metrics.json").read_text() == '{"train": {"loss": 2.5}}'
    assert (out / "plots" / "metrics" / "train" / "loss.tsv").read_text().endswith("2\t2.5\n")
    (live / "plots" / "metrics" / "train" / "loss.tsv").unlink()
    E.publish_curves(params, "copynce")
    assert not (out / "plots" / "metrics" / "train" / "loss.tsv").exists()  # no stale curve survives


def test_publishing_a_run_that_never_trained_names_it(stage):
    params, _ = stage
    with pytest.raises(FileNotFoundError, match="'infonce'"):
        E.publish_curves(params, "infonce")


def test_every_arm_reads_the_shared_pair_cache_unless_the_profile_turns_it_off(stage):
    params, runs = stage
    for arm in ("infonce", "copynce", "matcher_bce"):
        E.train_arm(params, arm, progress=False)
        assert Path(runs[-1].train.pair_cache) == params.parent / "runs" / "pairs"
    apply_profile(params, None, ["paths.pair_cache=null"], profiles_dir=ROOT / "profiles", out_path=params)
    E.train_arm(params, "copynce", progress=False)
    assert runs[-1].train.pair_cache is None
