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
    assert Path(t.knn_checkpoint) == params.parent / "models" / "trunk.pt"  # mined with the shared start
    assert Path(t.knn_cache) == params.parent / "runs" / "knn"
    assert Path(t.backbone) == params.parent / "models" / "trunk.pt" and t.init is None


def test_matcher_without_knn_negatives_mines_nothing(stage):
    params, runs = stage
    apply_profile(params, "tiny", ["pairs.neg_knn_p=0.0"], profiles_dir=ROOT / "profiles", out_path=params)
    E.train_arm(params, "matcher_bce", progress=False)
    assert runs[-1].pairs.neg_knn_p == 0.0
    assert runs[-1].train.knn_checkpoint is None and runs[-1].train.knn_cache is None


@pytest.mark.parametrize("arm", ["infonce", "copynce", "copynce_uniform"])
def test_descriptor_arms_fine_tune_the_trunk_and_mine_their_knn_negatives_with_it(stage, arm):
    params, runs = stage
    E.train_arm(params, arm, progress=False)
    t = runs[-1].train
    trunk = params.parent / "models" / "trunk.pt"
    assert Path(t.init) == trunk and t.backbone is None
    assert Path(t.knn_checkpoint) == trunk and Path(t.knn_cache) == params.parent / "runs" / "knn"
    apply_profile(params, None, ["main.knn_negatives=false"], profiles_dir=ROOT / "profiles", out_path=params)
    E.train_arm(params, arm, progress=False)
    assert runs[-1].train.knn_checkpoint is None and Path(runs[-1].train.init) == trunk


def test_the_trunk_starts_from_the_backbone_and_mines_nothing(stage, tmp_path):
    params, runs = stage
    E.train_arm(params, "trunk", progress=False)
    t = runs[-1].train
    assert t.init is None and t.backbone is None and t.knn_checkpoint is None and t.w_copynce == 0
    (tmp_path / "dino.pth").write_bytes(b"w")
    apply_profile(params, None, ["paths.backbone=dino.pth"], profiles_dir=ROOT / "profiles", out_path=params)
    E.train_arm(params, "trunk", progress=False)
    assert Path(runs[-1].train.backbone) == tmp_path / "dino.pth"


def test_without_a_trunk_every_arm_starts_from_the_backbone(stage, tmp_path):
    params, runs = stage
    (tmp_path / "dino.pth").write_bytes(b"w")
    apply_profile(params, None, ["paths.trunk=null", "paths.backbone=dino.pth"], profiles_dir=ROOT / "profiles",
                  out_path=params)
    for arm in ("copynce", "matcher_copynce"):
        E.train_arm(params, arm, progress=False)
        t = runs[-1].train
        assert Path(t.backbone) == tmp_path / "dino.pth" and t.init is None
    # the kNN look-alikes come from stage train_trunk's file: here the backbone itself, untrained
    assert Path(runs[-2].train.knn_checkpoint) == tmp_path / "models" / "trunk.pt"


def test_without_a_trunk_the_trunk_stage_writes_the_untrained_start(tmp_path):
    from icdlib.checkpoints import load_model

    params = tmp_path / "params.yaml"
    apply_profile(ROOT / "params.yaml", "tiny", ["paths.trunk=null"], profiles_dir=ROOT / "profiles", out_path=params)
    out = E.train_arms(params, ["trunk"], progress=False)
    model, meta = load_model(out["trunk"])
    assert meta["kind"] == "descriptor" and meta["step"] == 0
    assert '"trained": false' in (tmp_path / "reports" / "train" / "trunk" / "metrics.json").read_text()


def test_ablation_reuses_a_main_run_only_when_it_is_the_same_run(stage):
    from icdlib.pipeline.ablations import _main_run
    from icdlib.pipeline.stage import Stage

    params, _ = stage
    apply_profile(params, None, ["ablation.steps=3"], profiles_dir=ROOT / "profiles", out_path=params)
    st = Stage(params)
    assert _main_run(st, "copynce_uniform", 0) is None  # not a main arm
    with pytest.raises(FileNotFoundError, match="train_descriptor@copynce"):
        _main_run(st, "copynce", 1)
    seed1 = params.parent / "models" / "descriptor_copynce_seeds" / "s1.pt"
    seed1.parent.mkdir(parents=True)
    seed1.write_bytes(b"w")
    assert _main_run(st, "copynce", 1) == seed1
    assert _main_run(st, "copynce", 0) == params.parent / "models" / "descriptor_copynce.pt"
    apply_profile(params, None, ["ablation.steps=2"], profiles_dir=ROOT / "profiles", out_path=params)
    assert _main_run(Stage(params), "copynce", 1) is None  # another length: its own run


def test_main_runs_train_every_seed_and_publish_their_curves_under_reports(stage):
    params, runs = stage
    for seed in (0, 1):  # the tiny profile's main.seeds
        live = params.parent / "runs" / f"copynce_s{seed}" / "dvclive"
        (live / "plots" / "metrics" / "train").mkdir(parents=True)
        (live / "metrics.json").write_text(f'{{"train": {{"loss": {seed}.5}}}}')
        (live / "plots" / "metrics" / "train" / "loss.tsv").write_text("timestamp\tstep\tloss\n0\t1\t3.0\n0\t2\t2.5\n")
    out = E.train_arms(params, ["copynce"], progress=False)
    assert [r.train.seed for r in runs] == [0, 1]
    models = params.parent / "models"
    assert out == {"copynce_s0": models / "descriptor_copynce.pt",
                   "copynce_s1": models / "descriptor_copynce_seeds" / "s1.pt"}
    assert all(p.read_bytes() == b"model" for p in out.values())
    rep = params.parent / "reports" / "train" / "copynce"
    assert (rep / "metrics.json").read_text() == '{"train": {"loss": 0.5}}'
    assert (rep / "seeds" / "s1" / "metrics.json").read_text() == '{"train": {"loss": 1.5}}'
    assert (rep / "plots" / "metrics" / "train" / "loss.tsv").read_text().endswith("2\t2.5\n")
    assert set(E.training_curves(params, ["copynce"])["run"]) == {"copynce_s0", "copynce_s1"}
    live = params.parent / "runs" / "copynce_s0" / "dvclive"
    (live / "plots" / "metrics" / "train" / "loss.tsv").unlink()
    E.publish_curves(params, "copynce_s0", "copynce")
    assert not (rep / "plots" / "metrics" / "train" / "loss.tsv").exists()  # no stale curve survives
    assert (rep / "seeds" / "s1" / "metrics.json").is_file()  # the other seeds' curves stay


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
