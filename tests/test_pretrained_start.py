"""The committed pretrained start: its weights are the ones its record and dvc.lock describe, and they load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import yaml

from icdlib.checkpoints import load_backbone_weights
from icdlib.models import build_descriptor, build_matcher
from icdlib.params import load_params

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "dino_vit_tiny_cpu.safetensors"


def test_committed_weights_match_their_record_and_the_dvc_lock():
    record = json.loads(WEIGHTS.with_suffix(".json").read_text())
    digest = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert record["sha256"] == digest, "weights/dino_vit_tiny_cpu.safetensors differs from its record"
    params = load_params(ROOT / "params.yaml")
    assert record["pretrain"]["steps"] == params["pretrain"]["steps"] == record["steps_done"]
    assert record["images_seen"] == record["steps_done"] * record["pretrain"]["batch_size"]
    assert record["command"].startswith("python -m icdlib.train.pretrain --params params.yaml")
    assert len(record["commit"]) == 7 and record["params"] == "params.yaml"
    stage = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]["pretrain"]
    md5 = hashlib.md5(WEIGHTS.read_bytes()).hexdigest()
    assert any(o["path"] == "weights/dino_vit_tiny_cpu.safetensors" and o["md5"] == md5 for o in stage["outs"])
    curve = pd.read_csv(WEIGHTS.with_suffix(".curve.csv"))
    assert len(curve) == record["steps_done"] and curve["loss"].iloc[-50:].mean() < curve["loss"].iloc[:50].mean()


def test_committed_weights_load_into_both_models_of_the_default_profile():
    params = load_params(ROOT / "params.yaml")
    d = build_descriptor(params["descriptor"], seed=0)
    assert load_backbone_weights(d, WEIGHTS).loaded >= 70
    m = build_matcher(params["matcher"], seed=0)
    assert load_backbone_weights(m, WEIGHTS).loaded >= 70
