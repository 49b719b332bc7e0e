"""Runs of a stage side by side (launch.parallel_runs): the same weights as running them one by one
with the same thread count, and a failure that names its run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from icdlib.checkpoints import load_model
from icdlib.data import BuildConfig, build_benchmark
from icdlib.pipeline import training as E
from icdlib.pipeline.profile import apply_profile
from icdlib.pipeline.stage import LaunchConfig, Stage

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="side-by-side runs need 2 cores")


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    build_benchmark(root / "data", BuildConfig(size="tiny", image_size=48, workers=1), seed=0, progress=False)
    p = root / "params.yaml"
    apply_profile(ROOT / "params.yaml", "tiny", ["paths.data=data", "paths.trunk=null", "main.knn_negatives=false",
                                                 "launch.parallel_runs=2", "train.snapshots=[]"],
                  profiles_dir=ROOT / "profiles", out_path=p)
    return p


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path)[0].state_dict()


def test_side_by_side_runs_train_the_weights_of_one_by_one_runs(params, monkeypatch):
    assert E.parallel_slots(Stage(params)) == 2
    root = params.parent
    jobs = [E.Job("copynce", s, f"side/copynce_s{s}", root / "models" / "side" / f"s{s}.pt") for s in (0, 1)]
    side = E.run_jobs(params, jobs, progress=False)
    assert side == [j.out for j in jobs] and all(p.is_file() for p in side)
    monkeypatch.setattr(E, "parallel_slots", lambda st: 1)  # the same runs, in this process, one thread each
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = E.run_jobs(params, [E.Job("copynce", s, f"alone/copynce_s{s}", root / "models" / "alone" / f"s{s}.pt")
                                    for s in (0, 1)], progress=False)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(side, alone):
        wa, wb = _weights(a), _weights(b)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    wa, wb = _weights(side[0]), _weights(side[1])  # and the seeds did differ
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_failing_side_by_side_run_is_named(params):
    jobs = [E.Job("copynce", 0, "fail/ok", params.parent / "models" / "fail_ok.pt"),
            E.Job("no_such_arm", 1, "fail/bad", params.parent / "models" / "fail_bad.pt")]
    with pytest.raises(RuntimeError, match=r"fail/bad: ValueError: .*no_such_arm"):
        E.run_jobs(params, jobs, progress=False)


def test_one_slot_under_ddp_or_when_asked_and_a_clear_error_for_zero(params, tmp_path):
    for sets, slots in ((["launch.nproc_per_node=2"], 1), (["launch.parallel_runs=1"], 1),
                        (["launch.parallel_runs=64"], len(os.sched_getaffinity(0)))):
        p = tmp_path / "p.yaml"
        apply_profile(params, "tiny", sets, profiles_dir=ROOT / "profiles", out_path=p)
        assert E.parallel_slots(Stage(p)) == slots, sets
    with pytest.raises(ValueError, match="parallel_runs"):
        LaunchConfig(parallel_runs=0)


def test_prepare_builds_what_a_run_needs_before_it_starts_and_changes_nothing(params, tmp_path):
    from icdlib.data.cache import _Store, cache_folder
    from icdlib.train import loop as L

    st = Stage(params)
    run, _ = E.stage_run(st, "copynce", 1, None)
    ahead = L.resolve_run(st.params, "copynce", {"train.seed": 1, "train.pair_cache": str(tmp_path / "ahead")})
    plain = L.resolve_run(st.params, "copynce", {"train.seed": 1, "train.pair_cache": str(tmp_path / "plain")})
    assert ahead.train.steps == run.train.steps > 0
    data = st.path("data")
    L.prepare(ahead, tmp_path / "run_ahead", data_root=data, progress=False)
    paths = L.training_images(data, ahead.train.split)
    folder = cache_folder(ahead.train.pair_cache, L.pair_dataset(ahead, paths, None))
    keys = L.schedule_keys(ahead.train, len(paths))
    assert set(keys) <= set(_Store(folder).lookup())  # every item of every step is in the store
    stamps = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    a = L.train(ahead, tmp_path / "run_ahead", data_root=data, progress=False)
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == stamps  # train added nothing
    b = L.train(plain, tmp_path / "run_plain", data_root=data, progress=False)  # builds its own store
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a finished run needs nothing: no store is rebuilt for it
    gone = L.resolve_run(st.params, "copynce", {"train.seed": 1, "train.pair_cache": str(tmp_path / "gone")})
    L.prepare(gone, tmp_path / "run_ahead", data_root=data, progress=False)
    assert not (tmp_path / "gone").exists()


def test_prepare_names_a_missing_source_folder(params, tmp_path):
    from icdlib.train import loop as L

    run = L.resolve_run(Stage(params).params, "copynce", {"train.pair_cache": str(tmp_path / "p")})
    with pytest.raises(ValueError, match="prepare: give data_root"):
        L.prepare(run, tmp_path / "r")


def test_stage_run_takes_a_levers_keys_and_keeps_the_start_it_names(params, tmp_path):
    st = Stage(params)
    base, _ = E.stage_run(st, "matcher_bce", None, None)
    assert base.train.knn_checkpoint is None  # no look-alike negatives: nothing is mined
    run, sets = E.stage_run(st, "matcher_bce", None, 5, {"pairs.neg_knn_p": 0.5, "train.init": "elsewhere.pt",
                                                         "train.pair_cache": str(tmp_path / "lever")})
    assert run.pairs.neg_knn_p == 0.5 and run.train.steps == 5
    assert run.train.init == "elsewhere.pt"  # the lever's start, not the trunk
    assert run.train.knn_checkpoint == str(st.path("models", E.checkpoint_name(E.TRUNK)))  # now mined
    assert run.train.pair_cache == str(tmp_path / "lever") and sets["train.pair_cache"] == str(tmp_path / "lever")
