"""Training loop: schedule, data order, DDP equivalence, exact resume, logging, mining."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from icdlib.params import load_params
from icdlib.train import cli as train_cli
from icdlib.train import loop as T
from icdlib.train.mining import knn_from_features, neighbours_file
from icdlib.train.schedule import global_batch, lr_schedule, shard

# A model small enough for a few CPU steps per second: width 32, depth 2, 32 px, patch 8.
TINY = {
    "train.steps": 6,
    "train.batch_size": 8,
    "train.lr": 1e-3,
    "train.warmup_steps": 1,
    "train.workers": 0,
    "train.checkpoint_every": 3,
    "train.w_koleo": 0.5,
    "pairs.size": 32,
    "pairs.patch": 8,
    "pairs.donors": "procedural",
}
TINY_MODEL = {
    "descriptor": {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32, "patch_size": 8,
                   "desc_dim": 16},
    "matcher": {"embed_dim": 32, "num_heads": 2, "img_size": 32, "patch_size": 8,
                "encoder_depth": 1, "fusion_depth": 1},
}


# The arms are defined only in params.yaml: tests resolve them from the repository's file.
ARMS = {"arms": load_params(Path(__file__).resolve().parents[1] / "params.yaml")["arms"]}


def tiny_run(arm="copynce", **extra) -> T.RunConfig:
    kind = "matcher" if arm.startswith("matcher") else "descriptor"
    sets = dict(TINY)
    sets.update({f"{T.model_section(kind)}.{k}": v for k, v in TINY_MODEL[kind].items()})
    sets.update(extra)
    return T.resolve_run(ARMS, arm, sets)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from icdlib.checkpoints import load_model

    model, _ = load_model(path)
    return model.state_dict()


# ------------------------------------------------------------------------ schedule
def test_lr_schedule_matches_hand_computed_warmup_and_cosine():
    lrs = lr_schedule(steps=6, lr=1.0, warmup_steps=2, min_lr=0.1, warmup_start=0.0)
    # warm-up: 0, 1/2; cosine over steps 2..5 (span 3): progress 0, 1/3, 2/3, 1
    expected = [0.0, 0.5, 1.0, 0.1 + 0.9 * 0.75, 0.1 + 0.9 * 0.25, 0.1]
    np.testing.assert_allclose(lrs, expected, atol=1e-12)


def test_lr_schedule_warmup_starts_at_fraction_of_lr():
    lrs = lr_schedule(steps=10, lr=2e-3, warmup_steps=4, min_lr=0.0, warmup_start=0.01)
    assert lrs[0] == pytest.approx(2e-5)
    assert lrs[2] == pytest.approx(2e-3 * (0.01 + 0.99 * 0.5))
    assert lrs[4] == pytest.approx(2e-3) and lrs[-1] == pytest.approx(0.0, abs=1e-15)


def test_lr_schedule_rejects_warmup_longer_than_run():
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_schedule(steps=5, lr=1.0, warmup_steps=5, min_lr=0.0)


# ---------------------------------------------------------------------- data order
def test_global_batches_cover_each_epoch_once_and_cross_epoch_boundaries():
    n, b = 10, 4
    stream = np.concatenate([global_batch(7, t, b, n)[0] for t in range(5)])  # 20 = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    _, pos = global_batch(7, 2, b, n)  # positions 8..11: epochs 0, 0, 1, 1
    assert list(pos // n) == [0, 0, 1, 1]


def test_global_batch_is_a_pure_function_of_seed_and_step():
    a, _ = global_batch(3, 41, 6, 25)
    global_batch(3, 5, 6, 25)  # no hidden state between calls
    b, _ = global_batch(3, 41, 6, 25)
    c, _ = global_batch(4, 41, 6, 25)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_shards_of_all_ranks_and_microsteps_reassemble_the_global_batch():
    batch = np.arange(12)
    parts = [shard(batch, r, 2, 3, m) for m in range(3) for r in range(2)]
    assert np.array_equal(np.concatenate(parts), batch)
    with pytest.raises(ValueError, match="not divisible"):
        shard(np.arange(10), 0, 4, 1, 0)


# -------------------------------------------------------------------------- config
def test_arm_and_sets_override_params_and_unknown_keys_are_named():
    run = T.resolve_run({**ARMS, "train": {"steps": 90}}, "copynce", ["train.lr=0.01"])
    assert run.train.w_copynce == 5.0 and run.train.gamma == 3.0
    assert run.train.steps == 90 and run.train.lr == 0.01
    assert T.resolve_run(ARMS, "copynce_uniform").pairs.targets == "uniform"
    with pytest.raises(ValueError, match="stepz"):
        T.resolve_run({}, None, ["train.stepz=3"])
    with pytest.raises(ValueError, match="'nope'.*known arms: trunk, infonce, copynce"):
        T.resolve_run(ARMS, "nope")


def test_arms_exist_only_in_the_params_file():
    with pytest.raises(ValueError, match="unknown arm 'copynce'.*no arms section"):
        T.resolve_run({}, "copynce")  # no built-in copy of the arms
    with pytest.raises(ValueError, match="arms.bad: expected a mapping"):
        T.resolve_run({"arms": {"bad": 3}}, "bad")


def test_params_arms_section_adds_an_arm():
    params = {"arms": {"strong": {"train.w_copynce": 9.0}}}
    assert T.resolve_run(params, "strong").train.w_copynce == 9.0


def test_arm_precedence_is_section_then_arm_then_sets_and_shadowed_values_are_listed():
    """Regression: arm keys silently overrode train.*, so `dvc exp run -S train.steps=...`
    did nothing for the matcher arms. Arms may be nested, so DVC can address their keys,
    and the values an arm replaces are reported."""
    params = {"train": {"steps": 900, "lr": 0.01},
              "arms": {"m": {"train": {"steps": 400, "lr": 0.01}}, "d": {"train.w_copynce": 5.0}}}
    m = T.resolve_run(params, "m")
    assert m.train.steps == 400 and m.shadowed == (("train.steps", 900, 400),)  # lr: same value, not shadowed
    assert T.resolve_run(params, "m", ["train.steps=70"]).train.steps == 70  # explicit overrides win
    d = T.resolve_run(params, "d")
    assert d.train.steps == 900 and d.shadowed == ()
    with pytest.raises(ValueError, match=r"arms.x.lr: expected a section of keys or a dotted"):
        T.resolve_run({"arms": {"x": {"train": {"steps": 40}, "lr": 3}}}, "x")


def test_the_edits_section_reaches_the_training_pairs():
    """Regression: training pairs were built without params.yaml's edits section."""
    run = T.resolve_run({**ARMS, "edits": {"max_edits": 1}}, "copynce")
    assert run.edits is not None and run.edits.max_edits == 1
    assert T.pair_dataset(run, [Path("a.png"), Path("b.png")], None).edit_config == run.edits
    assert run.to_dict()["edits"]["max_edits"] == 1  # saved with the run, checked on resume
    assert T.resolve_run(ARMS, "copynce").edits is None  # no section: the library's defaults


# -------------------------------------------------------------------------- mining
def test_knn_skips_the_image_itself_and_orders_by_similarity():
    f = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.6, 0.8]], dtype=np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    nb = knn_from_features(f, 2)
    brute = np.argsort(-(f @ f.T) + 10 * np.eye(4), axis=1)[:, :2]  # self pushed last
    assert np.array_equal(nb, brute)
    assert not (nb == np.arange(4)[:, None]).any()


def test_model_input_size_must_match_pairs_size():
    with pytest.raises(ValueError, match="pairs size/patch"):
        T.resolve_run(ARMS, "infonce", {"pairs.size": 64})


# --------------------------------------------------------------------- training runs
def _losses(run, out, images, **kw):
    seen = []
    T.train(run, out, image_paths=images, progress=False,
            callback=lambda step, m: seen.append((step, m)), **kw)
    return seen


def test_copynce_run_lowers_its_loss_logs_dvclive_and_saves_a_loadable_model(images, tmp_path):
    from icdlib.checkpoints import load_model

    run = tiny_run("copynce", **{"train.steps": 12, "train.checkpoint_every": 6, "train.lr": 2e-3})
    seen = _losses(run, tmp_path / "run", images)
    nce = [m["infonce"] for _, m in seen]
    cn = [m["copynce"] for _, m in seen]
    assert np.mean(nce[-3:]) < np.mean(nce[:3]) and np.mean(cn[-3:]) < np.mean(cn[:3])
    model, meta = load_model(tmp_path / "run" / T.FINAL)
    assert meta["kind"] == "descriptor" and meta["seed"] == 0 and meta["step"] == 12
    assert meta["run"]["train"]["w_copynce"] == 5.0 and meta["run"]["arm"] == "copynce"
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 16)
    tsv = tmp_path / "run" / T.LIVE_DIR / "plots" / "metrics" / "train" / "copynce.tsv"
    rows = tsv.read_text().splitlines()
    assert rows[0].split("\t")[0] == "step" and len(rows) == 1 + 12
    summary = json.loads((tmp_path / "run" / T.LIVE_DIR / "metrics.json").read_text())
    assert summary["train"]["lr"] == pytest.approx(run.train.min_lr)


class _Kill(Exception):
    pass


def _kill_after(k):
    def hook(step, metrics):
        if step == k:
            raise _Kill(f"killed after step {k}")
    return hook


def test_snapshots_keep_loadable_weights_of_their_steps_and_a_fresh_run_clears_them(images, tmp_path):
    from icdlib.checkpoints import load_model
    from icdlib.train.state import snapshot_path

    run = tiny_run("copynce", **{"train.steps": 4, "train.snapshots": [2, 4, 9]})  # 4 and 9: not before the end
    out = tmp_path / "run"
    T.train(run, out, image_paths=images, progress=False)
    kept = sorted(p.name for p in out.glob("model_step*.pt"))
    assert kept == ["model_step2.pt"]
    snap, meta = load_model(snapshot_path(out, 2))
    assert meta["step"] == 2 and meta["arm"] == "copynce" and meta["kind"] == "descriptor"
    # deterministic (a second run keeps the same step-2 weights) and not the final weights
    other = tmp_path / "again"
    T.train(run, other, image_paths=images, progress=False)
    a, b = snap.state_dict(), load_model(snapshot_path(other, 2))[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    final = _weights(out / T.FINAL)
    assert any(not torch.equal(a[k], final[k]) for k in a)
    T.train(tiny_run("copynce", **{"train.steps": 4, "train.snapshots": []}), out, image_paths=images,
            progress=False, resume=False)
    assert not list(out.glob("model_step*.pt"))  # a fresh run leaves no stale snapshot


def test_kept_snapshots_reads_back_snapshot_path_names_by_step_and_nothing_else(tmp_path):
    from icdlib.train.state import kept_snapshots, snapshot_path

    for step in (150, 75, 225):
        snapshot_path(tmp_path, step).write_bytes(b"w")
    for other in ("model.pt", "model_step.pt", "model_step_x.pt", "model_step075.pt", "model_step3.safetensors"):
        (tmp_path / other).write_bytes(b"w")
    kept = kept_snapshots(tmp_path)
    assert list(kept) == [75, 150, 225] and kept == {s: snapshot_path(tmp_path, s) for s in (75, 150, 225)}
    assert kept_snapshots(tmp_path / "missing") == {}


@pytest.mark.parametrize("arm", ["copynce", "matcher_copynce"])
def test_killed_run_resumes_to_the_same_final_weights(arm, images, tmp_path):
    run = tiny_run(arm)  # 6 steps, checkpoint every 3
    T.train(run, tmp_path / "straight", image_paths=images, progress=False)
    with pytest.raises(_Kill):
        T.train(run, tmp_path / "resumed", image_paths=images, progress=False, callback=_kill_after(4))
    assert not (tmp_path / "resumed" / T.FINAL).exists()
    seen = _losses(run, tmp_path / "resumed", images)  # restarts from the step-3 checkpoint
    assert [s for s, _ in seen] == [4, 5, 6]
    a, b = _weights(tmp_path / "straight" / T.FINAL), _weights(tmp_path / "resumed" / T.FINAL)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = (tmp_path / "resumed" / T.LIVE_DIR / "plots" / "metrics" / "train" / "lr.tsv").read_text()
    assert [int(r.split("\t")[0]) for r in rows.splitlines()[1:]] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match=r"train.lr: 0.001 -> 0.002"):
        T.train(tiny_run(arm, **{"train.lr": 2e-3}), tmp_path / "resumed",
                image_paths=images, progress=False)


def test_changed_config_refuses_to_resume_unless_auto_starts_over(images, tmp_path):
    out = tmp_path / "run"
    T.train(tiny_run(**{"train.steps": 2}), out, image_paths=images, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        T.train(tiny_run(**{"train.steps": 3}), out, image_paths=images, progress=False)
    fresh = tmp_path / "fresh"
    T.train(tiny_run(**{"train.steps": 3}), fresh, image_paths=images, progress=False)
    T.train(tiny_run(**{"train.steps": 3}), out, image_paths=images, progress=False, resume="auto")
    a, b = _weights(out / "model.pt"), _weights(fresh / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)  # started over: same as a fresh 3-step run


def test_matcher_arm_trains_with_bce_and_copynce_on_positives(images, tmp_path):
    run = tiny_run("matcher_copynce", **{"train.steps": 3, "pairs.pos_rate": 0.5})
    seen = _losses(run, tmp_path / "m", images, neighbours=knn_from_features(
        np.eye(len(images), dtype=np.float32) + 0.1, 3))
    assert all(math.isfinite(m["bce"]) and 0 <= m["accuracy"] <= 1 for _, m in seen)
    assert any(m["copynce"] > 0 for _, m in seen)


def test_matcher_mines_hard_negatives_with_a_descriptor_checkpoint(images, tmp_path):
    from icdlib.train.mining import mine_neighbours
    from icdlib.models import build_descriptor
    from icdlib.checkpoints import save_checkpoint

    from icdlib.models.precision import bf16_enabled

    torch.manual_seed(0)
    desc = save_checkpoint(tmp_path / "desc.pt", build_descriptor(TINY_MODEL["descriptor"]).eval())
    run = tiny_run("matcher_bce", **{"train.steps": 1, "train.warmup_steps": 0,
                                     "train.knn_checkpoint": str(desc), "train.knn_k": 3})
    bf16 = bf16_enabled("cpu", run.train.amp, run.train.amp_cpu)  # the run mines in the precision it trains in
    nb = mine_neighbours(desc, images, 3, batch_size=8, amp=bf16)
    assert nb.shape == (len(images), 3) and not (nb == np.arange(len(images))[:, None]).any()
    T.train(run, tmp_path / "m", image_paths=images, progress=False)
    assert np.array_equal(np.load(neighbours_file(desc, images, 3, tmp_path / "m", bf16)), nb)


def test_mined_neighbours_are_shared_through_the_cache_and_never_stale(images, tmp_path, monkeypatch):
    from icdlib.train import mining as mining
    from icdlib.models import build_descriptor
    from icdlib.checkpoints import save_checkpoint

    torch.manual_seed(0)
    desc = save_checkpoint(tmp_path / "desc.pt", build_descriptor(TINY_MODEL["descriptor"]).eval())
    calls = []
    real = mining.mine_neighbours
    monkeypatch.setattr(mining, "mine_neighbours", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = mining.cached_neighbours(desc, images, 3, tmp_path / "knn", batch_size=8)
    again = mining.cached_neighbours(desc, images, 3, tmp_path / "knn", batch_size=8)
    assert len(calls) == 1 and np.array_equal(first, again)
    # a retrained descriptor (other bytes) or another k gets its own table
    torch.manual_seed(1)
    save_checkpoint(desc, build_descriptor(TINY_MODEL["descriptor"]).eval())
    mining.cached_neighbours(desc, images, 3, tmp_path / "knn", batch_size=8)
    mining.cached_neighbours(desc, images, 2, tmp_path / "knn", batch_size=8)
    assert len(calls) == 3 and len(list((tmp_path / "knn").glob("neighbours_*.npy"))) == 3
    # a table mined under bf16 autocast is named apart from the float32 one
    assert mining.neighbours_file(desc, images, 3, tmp_path, True) != mining.neighbours_file(desc, images, 3, tmp_path)
    if mining.bf16_enabled("cpu"):
        mining.cached_neighbours(desc, images, 3, tmp_path / "knn", batch_size=8, amp=True)
        assert len(calls) == 4 and mining.neighbours_file(desc, images, 3, tmp_path / "knn", True).is_file()


def test_fine_tuning_starts_from_the_init_checkpoint_weights(images, tmp_path):
    from icdlib.checkpoints import load_model

    base = T.train(tiny_run("infonce", **{"train.steps": 2}), tmp_path / "base",
                   image_paths=images, progress=False)
    run = tiny_run("infonce", **{"train.steps": 1, "train.init": str(base), "train.lr": 1e-12,
                                 "train.warmup_steps": 0, "train.min_lr": 0.0})
    tuned = T.train(run, tmp_path / "tuned", image_paths=images, progress=False)
    a = dict(load_model(base)[0].named_parameters())
    b = dict(load_model(tuned)[0].named_parameters())
    for k in a:  # a 1e-12 step leaves the initial weights as they were
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-8, msg=k)
    fresh = dict(T.build_run_model(run).named_parameters())
    assert not torch.allclose(fresh["proj.weight"], b["proj.weight"])


def test_cli_trains_an_arm_from_a_params_file_and_rejects_a_bad_set(images, tmp_path, capsys):
    import yaml

    data = tmp_path / "disc"  # a DISC21 layout whose training split holds 8 images
    for folder in ("training_images", "reference_images", "dev_queries"):
        (data / folder).mkdir(parents=True)
    for p in images[:8]:
        (data / "training_images" / p.name).symlink_to(p)
    params = {"seed": 3, "paths": {"data": "disc"}, "train": {"steps": 2, "warmup_steps": 0}, **ARMS}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--params", str(tmp_path / "params.yaml"), "--arm", "infonce", "--out", str(tmp_path / "run")]
    sets = [a for k, v in TINY.items() if k not in ("train.steps", "train.warmup_steps")
            for a in ("--set", f"{k}={v}")]
    sets += [a for k, v in TINY_MODEL["descriptor"].items() for a in ("--set", f"descriptor.{k}={v}")]
    assert train_cli.main(args + sets) == 0
    meta = torch.load(tmp_path / "run" / T.FINAL, weights_only=True)["meta"]
    assert meta["seed"] == 3 and meta["step"] == 2 and meta["arm"] == "infonce"
    assert train_cli.main(args + ["--set", "train.stepz=1"]) == 2
    assert "stepz" in capsys.readouterr().err


# ---------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, run, images, out, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    seen = []
    T.train(run, out, image_paths=images, progress=False, device="cpu",
            callback=lambda step, m: seen.append(m))
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(seen))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_ddp_follows_the_single_process_loss_trajectory(images, tmp_path):
    import torch.multiprocessing as mp

    # fp32: bf16 autocast (train.amp_cpu, on CPUs with bf16 units) rounds each shard's activations
    # differently from the whole batch's, which the 1e-3 trajectory tolerance does not cover
    run = tiny_run("copynce", **{"train.steps": 3, "train.checkpoint_every": 3, "train.lr": 3e-4,
                                 "train.amp_cpu": False})
    single = [m for _, m in _losses(run, tmp_path / "single", images)]
    mp.start_processes(_ddp_worker, args=(2, _free_port(), run, images, tmp_path / "ddp", tmp_path),
                       nprocs=2, start_method="spawn")
    for rank in (0, 1):
        ddp = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # step 1 runs on identical weights: losses and the global gradient agree to float
        # rounding; afterwards Adam's normalised steps amplify that rounding slowly
        for key in ("infonce", "koleo", "copynce", "grad_norm"):
            assert ddp[0][key] == pytest.approx(single[0][key], rel=1e-5), key
            np.testing.assert_allclose([m[key] for m in ddp], [m[key] for m in single],
                                       rtol=1e-3, err_msg=key)
    assert (tmp_path / "ddp" / T.FINAL).is_file()


def test_head_lr_scale_scales_the_first_adam_step_of_what_the_trunk_lacks(images, tmp_path):
    # AdamW's first update of a parameter without weight decay is lr * g / (|g| + eps): lr per
    # element wherever the gradient is not tiny. Measured on the weights themselves, the step
    # of the matcher's own parts (fusion token, token norm, head) must be scale * lr, and the
    # trunk's (model.vit) lr, independently of how the optimiser groups were built.
    start = tmp_path / "start"
    T.train(tiny_run("matcher_bce", **{"train.steps": 2}), start, image_paths=images, progress=False)
    one = {"train.steps": 1, "train.warmup_steps": 0, "train.init": str(start / T.FINAL), "train.lr": 1e-3,
           "train.grad_clip": 0.0}
    before = _weights(start / T.FINAL)
    for scale in (1.0, 0.01):
        out = tmp_path / f"s{scale}"
        T.train(tiny_run("matcher_bce", **one, **{"train.head_lr_scale": scale}), out, image_paths=images,
                progress=False)
        after = _weights(out / T.FINAL)
        steps = {"head": [], "trunk": []}
        for name, w in before.items():
            if w.ndim < 2 and w.dtype.is_floating_point:  # no weight decay: the step is the lr alone
                moved = (after[name] - w).abs().flatten()
                steps["trunk" if name.startswith("vit.") else "head"].append(moved[moved > 0])
        head, trunk = (torch.cat(steps[k]).median().item() for k in ("head", "trunk"))
        assert trunk == pytest.approx(1e-3, rel=0.02)
        assert head == pytest.approx(1e-3 * scale, rel=0.02)


def test_head_lr_scale_must_be_positive():
    with pytest.raises(ValueError, match="head_lr_scale"):
        tiny_run("matcher_bce", **{"train.head_lr_scale": 0.0})


def test_a_run_ends_when_a_run_beside_it_removed_dvclives_shared_step_signal(tmp_path, monkeypatch):
    """Two runs side by side in one DVC repository share DVCLive's VS Code signal file; the run
    ending second must not fail because the first removed it. Any other missing file still fails."""
    from dvclive import Live

    from icdlib.train.loop import STEP_SIGNAL, end_live

    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    signal = tmp_path / ".dvc" / "tmp" / "exps" / "run" / STEP_SIGNAL

    def live_after_a_step(name):
        live = Live(dir=str(tmp_path / name), save_dvc_exp=False, dvcyaml=None)
        live.log_metric("train/loss", 1.0)
        live.next_step()
        assert signal.is_file()  # DVCLive found the repository and wrote the shared file
        return live

    first, second, third = live_after_a_step("a"), live_after_a_step("b"), live_after_a_step("c")
    end_live(first)
    assert not signal.exists()
    # the interleaving of the race: the run ending second checks that the file exists just before
    # the first removes it, so its check passes and its removal finds nothing
    exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: True if Path(p) == signal else exists(p))
    with pytest.raises(FileNotFoundError, match=STEP_SIGNAL):
        third.end()  # what DVCLive alone does then
    end_live(second)
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["train"]["loss"] == 1.0

    class Failing:
        def end(self):
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "b" / "metrics.json"))

    with pytest.raises(FileNotFoundError, match="metrics.json"):
        end_live(Failing())
