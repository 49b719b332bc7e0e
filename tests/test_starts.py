"""The pretrained start at tiny size: DINO pretraining (lightly) writes a backbone the models load,
resumes exactly, and experiments/starts.py trains and scores every arm from each candidate start."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

pytest.importorskip("lightly")

from icdlib.checkpoints import load_backbone_weights  # noqa: E402
from icdlib.data import build_benchmark, data_config, edit_config  # noqa: E402
from icdlib.models import DescriptorConfig, build_descriptor, build_matcher  # noqa: E402
from icdlib.pipeline.profile import apply_profile  # noqa: E402
from icdlib.train.inputs import training_images  # noqa: E402
from icdlib.digest import file_sha256  # noqa: E402
from icdlib.train.pretrain import PretrainConfig, pretrain  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = DescriptorConfig(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, desc_dim=16)
CFG = PretrainConfig(steps=4, batch_size=4, out_dim=64, hidden_dim=32, bottleneck_dim=16, local_views=2,
                     local_size=16, freeze_last_layer_steps=1, workers=0, checkpoint_every=2)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("starts")
    apply_profile(ROOT / "params.yaml", "tiny", [], profiles_dir=ROOT / "profiles", out_path=root / "params.yaml")
    params = yaml.safe_load((root / "params.yaml").read_text())
    build_benchmark(root / params["paths"]["data"], data_config(params), seed=0, edit_config=edit_config(params),
                    progress=False)
    return root


def test_pretraining_writes_a_backbone_both_models_load_and_a_record(tiny_run, tmp_path):
    paths = training_images(tiny_run / "data" / "mini_disc")
    out = pretrain(CFG, TINY, paths, tmp_path / "dino.safetensors", progress=False)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["sha256"] == file_sha256(out) and record["steps_done"] == 4 and record["images_seen"] == 16
    curve = pd.read_csv(out.with_suffix(".curve.csv"))
    assert list(curve["step"]) == [1, 2, 3, 4] and curve["loss"].notna().all()
    assert not (tmp_path / "dino.safetensors.state.pt").exists()
    d = build_descriptor(TINY, seed=0)
    before = d.vit.blocks[0].attn.qkv.weight.detach().clone()
    report = load_backbone_weights(d, out)
    assert report.loaded > 0 and not torch.equal(before, d.vit.blocks[0].attn.qkv.weight)
    m = build_matcher(dict(img_size=32, patch_size=16, embed_dim=32, num_heads=2, encoder_depth=1, fusion_depth=1))
    assert load_backbone_weights(m, out).loaded > 0


def test_interrupted_pretraining_resumes_to_the_same_weights(tiny_run, tmp_path):
    paths = training_images(tiny_run / "data" / "mini_disc")
    whole = pretrain(CFG, TINY, paths, tmp_path / "whole.safetensors", progress=False)
    # interrupt the third step, after the state of step 2 was written (checkpoint_every=2)
    from lightly.models import utils as lightly_utils

    calls = {"n": 0}

    original = lightly_utils.update_momentum

    def stop_at_third(student, teacher, m):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(student, teacher, m)

    lightly_utils.update_momentum = stop_at_third
    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain(CFG, TINY, paths, tmp_path / "cut.safetensors", progress=False)
    finally:
        lightly_utils.update_momentum = original
    assert (tmp_path / "cut.safetensors.state.pt").is_file()
    resumed = pretrain(CFG, TINY, paths, tmp_path / "cut.safetensors", progress=False)
    assert file_sha256(resumed) == file_sha256(whole)


def test_bad_pretraining_inputs_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="pretrain.steps"):
        PretrainConfig(steps=0)
    with pytest.raises(ValueError, match=".safetensors"):
        pretrain(CFG, TINY, [tmp_path / "a.png", tmp_path / "b.png"], tmp_path / "w.pt")


@pytest.mark.slow
def test_starts_experiment_trains_and_scores_each_start(tiny_run, tmp_path):
    paths = training_images(tiny_run / "data" / "mini_disc")
    dino = pretrain(CFG, TINY, paths, tmp_path / "dino.safetensors", progress=False)
    starts = _script("starts")
    out = tmp_path / "starts"
    assert starts.main(["--run", str(tiny_run), "--starts", "trunk,dino", "--seeds", "0,1", "--split",
                        "final_queries", "--dino", str(dino), "--out", str(out)]) == 0
    frame = pd.read_csv(out.with_suffix(".csv"))
    assert set(frame["start"]) == {"trunk", "dino"} and set(frame["seed"]) == {0, 1}
    assert set(frame["arm"]) == {"infonce", "copynce", "matcher_copynce"} and frame["uAP"].between(0, 1).all()
    assert (frame["split"] == "final_queries").all()
    text = out.with_suffix(".md").read_text()
    assert "| dino | copynce |" in text and "Chosen on the mean" in text
    dino_params = yaml.safe_load((tiny_run / "runs" / "starts" / "dino" / "params.yaml").read_text())
    assert dino_params["paths"]["trunk"] is None and dino_params["paths"]["backbone"] == str(dino.resolve())


@pytest.mark.slow
def test_robustness_chooses_each_arm_s_lr_on_the_held_out_split_and_tests_the_claims(tiny_run, tmp_path):
    from icdlib.pipeline.training import train_arms

    train_arms(tiny_run / "params.yaml", ["trunk"])
    robustness = _script("robustness")
    out = tmp_path / "tables"
    assert robustness.main(["--run", str(tiny_run), "--factors", "0.5,2", "--seeds", "0,1", "--bootstrap", "50",
                            "--out", str(out)]) == 0
    grid = pd.read_csv(out / "robustness_grid.csv")
    assert len(grid) == 3 * 2 * 2 * 2  # arms x factors x seeds x splits
    assert set(grid["split"]) == {"final_queries", "dev_queries"}
    table = pd.read_csv(out / "robustness.csv")
    assert list(table.columns) == ["claim", "a", "b", "lr_a", "lr_b", "gap", "ci_low", "ci_high", "seeds", "verdict"]
    assert list(table["claim"]) == ["copynce>infonce (each at its best lr)", "pixtrace>uniform (each at its best lr)"]
    sel = grid[grid["split"] == "final_queries"].groupby(["arm", "factor"])["uAP"].mean()
    for r in table.itertuples():  # the chosen lr is the arm's best on the selection split
        for arm, lr in ((r.a, r.lr_a), (r.b, r.lr_b)):
            factor = grid[(grid["arm"] == arm) & (grid["lr"].round(12) == round(lr, 12))]["factor"].iloc[0]
            assert sel[arm][factor] == sel[arm].max()
    assert (table["ci_low"] <= table["gap"]).all() and (table["gap"] <= table["ci_high"]).all()
    text = (out / "robustness.md").read_text()  # says what made it
    assert "--factors 0.5,2 --seeds 0,1" in text and "profile `" in text and "at commit `" in text
    # a rerun (as when the grid is widened) embeds nothing again: it reads the embeddings back, same numbers
    kept = sorted((tiny_run / "runs" / "robustness").rglob("features/embeddings/*.npy"))
    assert len(kept) == 3 * 3 * 2 * 2  # (references, dev and final queries) x arms x factors x seeds
    stamps = [p.stat().st_mtime_ns for p in kept]
    assert robustness.main(["--run", str(tiny_run), "--factors", "0.5,2", "--seeds", "0,1", "--bootstrap", "50",
                            "--out", str(out)]) == 0
    assert sorted((tiny_run / "runs" / "robustness").rglob("features/embeddings/*.npy")) == kept
    assert [p.stat().st_mtime_ns for p in kept] == stamps
    pd.testing.assert_frame_equal(pd.read_csv(out / "robustness_grid.csv"), grid)
    with pytest.raises(SystemExit, match="tables' split"):
        robustness.main(["--run", str(tiny_run), "--select", "dev_queries"])


@pytest.mark.slow
def test_robustness_at_1x_reuses_the_run_s_own_recipe_runs_and_takes_another_table_split(tiny_run, tmp_path):
    from icdlib.pipeline.arms import run_names
    from icdlib.pipeline.training import train_arms
    from icdlib.train.runs import recipe_lr, resolve_run

    train_arms(tiny_run / "params.yaml", ["trunk", "infonce"])  # the run's own recipe runs, as a pipeline trains them
    ckpts = [tiny_run / "runs" / name / "checkpoint.pt" for name in run_names(tiny_run / "params.yaml", "infonce")]
    before = [c.stat().st_mtime_ns for c in ckpts]
    out = tmp_path / "tables"
    robustness = _script("robustness")  # the claims on final_queries, the lr chosen on dev_queries
    assert robustness.main(["--run", str(tiny_run), "--factors", "1", "--arms", "infonce,copynce", "--seeds", "0,1",
                            "--select", "dev_queries", "--table-split", "final_queries", "--bootstrap", "20",
                            "--out", str(out)]) == 0
    assert [c.stat().st_mtime_ns for c in ckpts] == before  # reused, not trained again
    rule = resolve_run(yaml.safe_load((tiny_run / "params.yaml").read_text()), "infonce").train
    grid = pd.read_csv(out / "robustness_grid.csv")
    assert set(grid["factor"]) == {1.0}
    assert (grid["lr"] - recipe_lr(rule.rule_base_lr, rule.batch_size)).abs().max() < 1e-12
    assert list(pd.read_csv(out / "robustness.csv")["claim"]) == ["copynce>infonce (each at its best lr)"]


def test_pretraining_command_records_its_commit_command_and_params(tiny_run, tmp_path):
    from icdlib.train.pretrain import main

    params = yaml.safe_load((tiny_run / "params.yaml").read_text())
    params["pretrain"] = {k: getattr(CFG, k) for k in ("batch_size", "out_dim", "hidden_dim", "bottleneck_dim",
                                                       "local_views", "local_size", "freeze_last_layer_steps",
                                                       "workers")}
    params["descriptor"].update(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, desc_dim=16)
    params["paths"]["data"] = str(tiny_run / params["paths"]["data"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "w.safetensors"
    assert main(["--params", str(tmp_path / "params.yaml"), "--out", str(out), "--steps", "2", "--no-resume"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["steps_done"] == 2 and record["params"] == str(tmp_path / "params.yaml")
    assert record["command"] == f"python -m icdlib.train.pretrain --params {tmp_path / 'params.yaml'} --out {out} " \
                                "--steps 2 --no-resume"
    assert record["commit"] == "unknown"  # tmp_path is outside any git work tree


def test_robustness_1x_of_a_run_with_an_explicit_lr_trains_apart_at_the_rule(tmp_path):
    robustness = _script("robustness")
    apply_profile(ROOT / "params.yaml", "tiny", [], profiles_dir=ROOT / "profiles", out_path=tmp_path / "params.yaml")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "trunk.pt").write_bytes(b"start")  # variant_params only copies it
    own = json.loads(robustness.variant_params(tmp_path, params, 1.0, [0]).read_text())
    assert own["train"]["lr"] is None and own["paths"]["runs"] == str(tmp_path / "runs")  # the run's own runs
    params["train"]["lr"] = 0.003  # the run fine-tunes at an lr of its own: its runs are not the rule's
    apart = json.loads(robustness.variant_params(tmp_path, params, 1.0, [0]).read_text())
    assert apart["train"]["lr"] == pytest.approx(6e-4 * (params["train"]["batch_size"] / 1024) ** 0.5)  # the rule
    assert apart["paths"]["runs"] == "runs" and apart["paths"]["models"] == "models"
