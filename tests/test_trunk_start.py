"""The committed trunk (weights/trunk10x_vit_tiny_cpu.safetensors): its record and hash, the
default descriptor it fits, and its re-creation at tiny size, read by stage train_trunk."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from icdlib.checkpoints import load_model
from icdlib.data import build_benchmark, data_config, edit_config
from icdlib.params import load_params
from icdlib.pipeline import trunk_start as TS
from icdlib.pipeline.arms import check_trunk_start, curve_path, record_path
from icdlib.pipeline.profile import apply_profile
from icdlib.pipeline.training import train_arms, training_curves
from icdlib.digest import file_sha256
from icdlib.train.runs import resolve_run

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "weights" / "trunk10x_vit_tiny_cpu.safetensors"


def test_the_committed_trunk_matches_its_record_and_fits_the_default_descriptor():
    params = load_params(ROOT / "params.yaml")
    assert (ROOT / params["paths"]["trunk_start"]).resolve() == COMMITTED.resolve()
    record = json.loads(record_path(COMMITTED).read_text())
    assert record["sha256"] == file_sha256(COMMITTED)  # the bytes a run reads are the bytes recorded
    trunk = resolve_run(params, "trunk").train
    assert record["steps"] == 10 * trunk.steps and record["warmup_steps"] == 10 * trunk.warmup
    assert record["factor"] == 10 and record["profile"] == "default" and len(record["commit"]) == 7
    model, meta = check_trunk_start(COMMITTED, params)
    assert meta["kind"] == "descriptor" and meta["step"] == record["steps"]
    curve = pd.read_csv(curve_path(COMMITTED))
    assert list(curve["step"]) == list(range(1, record["steps"] + 1))
    assert curve["infonce"].tail(100).mean() < curve["infonce"].head(100).mean() / 2  # it learned
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert dvc["pretrain_trunk"]["frozen"] is True
    assert "weights/trunk10x_vit_tiny_cpu.safetensors" in dvc["train_trunk"]["deps"]


def _strings(value):
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_the_committed_trunk_names_no_folder_of_the_machine_that_made_it():
    from safetensors import safe_open
    with safe_open(str(COMMITTED), "pt") as f:  # the meta inside the weights file, and its sidecar's
        inside = json.loads(f.metadata()["meta"])
    beside = json.loads(COMMITTED.with_suffix(".json").read_text())["meta"]
    for meta in (inside, beside):
        absolute = [s for s in _strings(meta) if s.startswith("/") or s[1:3] == ":\\"]
        assert not absolute, absolute


def test_portable_writes_paths_under_the_root_relative_to_it(tmp_path):
    root = tmp_path / "repo"
    meta = {"a": str(root / "runs" / "pairs"), "b": [["train.init", str(root / "models" / "t.pt")]],
            "c": "/elsewhere/x", "d": 3, "e": str(tmp_path / "repository")}
    assert TS.portable(meta, root) == {"a": "runs/pairs", "b": [["train.init", "models/t.pt"]], "c": "/elsewhere/x",
                                       "d": 3, "e": str(tmp_path / "repository")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("trunk_start")
    apply_profile(ROOT / "params.yaml", "tiny", [], profiles_dir=ROOT / "profiles", out_path=root / "params.yaml")
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["paths"]["trunk_start"] is None  # the tiny ViT trains its own trunk
    build_benchmark(root / params["paths"]["data"], data_config(params), seed=0, edit_config=edit_config(params),
                    progress=False)
    return root


def test_the_trunk_start_is_made_at_tiny_size_and_stage_train_trunk_copies_it(tiny, capsys):
    out = tiny / "weights" / "t.safetensors"
    assert TS.main(["--params", str(tiny / "params.yaml"), "--out", str(out), "--factor", "2"]) == 0
    params = load_params(tiny / "params.yaml")
    record = json.loads(record_path(out).read_text())
    steps = 2 * resolve_run(params, "trunk").train.steps
    assert record["sha256"] == file_sha256(out) and record["steps"] == steps and record["profile"] == "tiny"
    assert record["command"].endswith("--factor 2")
    assert list(pd.read_csv(curve_path(out))["step"]) == list(range(1, steps + 1))
    # stage train_trunk with paths.trunk_start set: no training, the committed weights become models/trunk.pt
    params["paths"]["trunk_start"] = "weights/t.safetensors"
    (tiny / "copy.yaml").write_text(yaml.safe_dump(params))
    got = train_arms(tiny / "copy.yaml", ["trunk"])["trunk"]
    a, b = load_model(out)[0].state_dict(), load_model(got)[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    curves = training_curves(tiny / "copy.yaml", ["trunk"])  # the notebook's plot: the committed trunk's curve
    assert sorted(curves.loc[curves["metric"] == "train/infonce", "step"]) == list(range(1, steps + 1))
    metrics = json.loads((tiny / "reports" / "train" / "trunk" / "metrics.json").read_text())
    assert metrics["trained"] is False and metrics["start"] == "weights/t.safetensors"
    assert metrics["sha256"] == record["sha256"]
    # weights that no longer match their record, or a descriptor of another shape, are refused by name
    record["sha256"] = "0" * 64
    record_path(out).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="t.safetensors does not match the sha256"):
        train_arms(tiny / "copy.yaml", ["trunk"])
    record_path(out).unlink()
    params["descriptor"]["desc_dim"] = 8
    with pytest.raises(ValueError, match=r"desc_dim=16 \(params: 8\)"):
        check_trunk_start(out, params)
    with pytest.raises(SystemExit):
        TS.main(["--params", str(tiny / "params.yaml"), "--out", str(tiny / "x.pt")])
    assert "x.pt: expected a .safetensors file" in capsys.readouterr().err


def test_a_missing_run_folder_is_named(tmp_path, capsys):
    assert TS.main(["--params", str(ROOT / "params.yaml"), "--out", str(tmp_path / "t.safetensors"),
                    "--from", str(tmp_path / "nothing")]) == 2
    assert "nothing: no finished trunk run" in capsys.readouterr().err
