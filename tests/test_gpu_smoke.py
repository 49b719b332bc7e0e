"""The gpu_smoke profile, the training loop's loader and GPU telemetry, and experiments/gpu_smoke.py.

The profile itself needs a GPU; here it is checked as a params file, then run at the tiny
profile's sizes on the CPU through the pipeline's own training entry point and summarised.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import test_pipeline as tp
from icdlib.params import has_key, load_params
from icdlib.pipeline.config import load_all
from icdlib.pipeline.profile import apply_profile
from icdlib.pipeline.stage import Stage
from icdlib.train import loop as T
from icdlib.train.telemetry import UNAVAILABLE_PARAM, GpuUtilisation, device_name
from test_train import tiny_run

from _imports import experiment

ROOT = Path(__file__).resolve().parents[1]
# the tiny profile's sections that size a run (data, models, steps, loaders); the rest stays gpu_smoke's
SHRINK = ("data", "pairs", "descriptor", "matcher", "train", "arms", "eval")


GS = experiment("gpu_smoke")


@pytest.fixture
def smoke(tmp_path) -> Path:
    """A copy of params.yaml under the gpu_smoke profile.

    Then shrunk for a CPU: the tiny profile's sizing sections and the source counts and
    size it leaves to the preset."""
    params = tmp_path / "params.yaml"
    apply_profile(ROOT / "params.yaml", "gpu_smoke", [], profiles_dir=ROOT / "profiles", out_path=params)
    tiny = yaml.safe_load((ROOT / "profiles" / "tiny.yaml").read_text())
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "shrink.yaml").write_text(yaml.safe_dump({k: tiny[k] for k in SHRINK}))
    apply_profile(params, "shrink", ["profile=gpu_smoke", "data.training=null", "data.reference=null",
                                     "data.dev_queries=null", "data.image_size=64", "dataset.workers=1",
                                     "eval.device=cpu"], profiles_dir=tmp_path / "profiles")
    return params


# ------------------------------------------------------------------------------ (a) the profile
def test_gpu_smoke_profile_is_vit_s16_at_224_px_bf16_on_one_gpu_and_every_stage_finds_its_params(tmp_path):
    out = tmp_path / "params.yaml"
    apply_profile(ROOT / "params.yaml", "gpu_smoke", [], profiles_dir=ROOT / "profiles", out_path=out)
    params = load_params(out)
    cfg = load_all(params, str(out))  # every section and every arm, built by its owner
    st = Stage(out)
    assert st.profile == "gpu_smoke" and st.launch.nproc_per_node == 1 and cfg["eval"].device == "cuda"
    assert cfg["data"].image_size >= cfg["pairs"].size == 224
    for name, run in ((k, v) for k, v in cfg.items() if k.startswith("arms.")):
        assert (run.model.img_size, run.model.patch_size, run.model.embed_dim) == (224, 16, 384), name
        assert run.train.amp and run.train.steps >= 200, name  # bf16 on CUDA, a few hundred steps
    # the ablation reuses the main descriptor runs (its steps are theirs) and trains only what they lack
    assert all(cfg[f"arms.{a}"].train.steps == st.ablation.steps for a in ("infonce", "copynce"))
    assert set(st.ablation.seeds) <= set(st.main.seeds)
    # the descriptor arms read each training image at least once
    assert cfg["data"].counts["training"] <= cfg["arms.copynce"].train.steps * cfg["arms.copynce"].train.batch_size
    for name, stage in tp._stages():  # what each dvc.yaml stage reads is in the file
        missing = [k for k in tp._stage_params(stage) if not has_key(params, k)]
        assert not missing, f"{name}: {missing}"


# --------------------------------------------------------------------------- (c) loop metrics
def test_loop_logs_loader_wait_and_share_at_the_metric_cadence_and_why_gpu_util_is_missing(images, tmp_path):
    run = tiny_run("copynce", **{"train.steps": 3, "train.log_every": 2, "train.snapshots": []})
    seen = []
    T.train(run, tmp_path / "run", image_paths=images, progress=False, device="cpu",
            callback=lambda done, m: seen.append(m))
    assert all(m["data_wait_s"] >= 0 and 0 <= m["loader_share"] <= 1 for m in seen) and len(seen) == 3
    train_dir = tmp_path / "run" / T.LIVE_DIR / "plots" / "metrics" / "train"
    for metric in ("data_wait_s", "loader_share", "pairs_per_s"):
        rows = (train_dir / f"{metric}.tsv").read_text().splitlines()
        assert rows[0] == f"step\t{metric}" and [int(r.split("\t")[0]) for r in rows[1:]] == [2, 3], metric
    shares = [float(r.split("\t")[1]) for r in (train_dir / "loader_share.tsv").read_text().splitlines()[1:]]
    assert all(0 <= s <= 1 for s in shares)
    assert not (train_dir / "gpu_util.tsv").exists()
    logged = yaml.safe_load((tmp_path / "run" / T.LIVE_DIR / "params.yaml").read_text())
    assert logged["device"] == "cpu" and logged["device_name"] == "cpu"
    assert "trained on cpu" in logged[UNAVAILABLE_PARAM]


def test_gpu_utilisation_reads_nvml_and_gives_up_once_saying_why(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: 87)
    gpu = GpuUtilisation("cuda:0")
    assert gpu.read() == 87.0 and gpu.reason is None and gpu.take_reason() is None

    def broken(device=None):
        raise ModuleNotFoundError("pynvml does not seem to be installed")

    monkeypatch.setattr(torch.cuda, "utilization", broken)
    assert gpu.read() is None and gpu.read() is None
    assert "pynvml does not seem to be installed" in gpu.take_reason() and gpu.take_reason() is None
    assert capsys.readouterr().err.count("not logging train/gpu_util") == 1  # warned once, not every step
    cpu = GpuUtilisation("cpu")
    assert cpu.read() is None and "no GPU" in cpu.take_reason() and device_name("cpu") == "cpu"


# ---------------------------------------------------- (b) the profile at tiny size, summarised
def test_gpu_smoke_at_tiny_size_on_cpu_trains_through_the_pipeline_and_is_summarised(smoke, tmp_path, monkeypatch,
                                                                                    capsys):
    from icdlib.data.build import main as data_cli
    from icdlib.pipeline.training import train_arm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU path, even on a GPU machine
    out = tmp_path / "bench" / "gpu_smoke.json"
    assert GS.main(["--params", str(smoke), "--out", str(out)]) == 2  # nothing trained yet
    err = capsys.readouterr().err
    st = Stage(smoke)
    assert str(st.path("runs")) in err and "trunk" in err and not out.exists()

    assert data_cli(["build", "--out", str(st.path("data")), "--params", str(smoke)]) == 0
    train_arm(smoke, "trunk", progress=False)  # a descriptor arm: the matcher starts from its weights
    train_arm(smoke, "matcher_bce", progress=False)
    assert GS.main(["--params", str(smoke), "--out", str(out), "--skip", "1"]) == 0

    summary = json.loads(out.read_text())
    assert {"benchmark", "device", "torch", "profile", "seed", "runs", "overall"} <= set(summary)
    assert summary["device"] == "cpu" and summary["profile"] == "gpu_smoke" and summary["seed"] == 0
    assert summary["torch"] == torch.__version__ and set(summary["runs"]) == {"trunk", "matcher_bce"}
    for name, r in summary["runs"].items():
        assert r["steps"] == 3 and r["steps_skipped"] == 1 and r["device"] == "cpu", name
        assert r["batch_size"] == 8 and r["kind"] == ("matcher" if name.startswith("matcher") else "descriptor")
        p = r["pairs_per_s"]
        assert 0 < p["p10"] <= p["median"] <= p["p90"], name
        assert 0 <= r["loader_share"]["mean"] <= r["loader_share"]["p90"] <= 1, name
        assert r["gpu_util_mean"] is None and "trained on cpu" in r["gpu_util_reason"], name
    assert summary["overall"]["gpu_util_mean"] is None and summary["overall"]["runs"] == 2
    md = out.with_suffix(".md").read_text()
    assert "| trunk | descriptor | 3 | 8 |" in md and "No GPU utilisation: trained on cpu" in md


def _write_live(run_dir: Path, steps: int, batch: int, rows: dict[str, list[float]]) -> None:
    """A run folder as the training loop leaves it: DVCLive params and one TSV per metric."""
    live = run_dir / T.LIVE_DIR
    (live / "plots" / "metrics" / "train").mkdir(parents=True)
    (live / "params.yaml").write_text(yaml.safe_dump({"arm": "trunk", "train.kind": "descriptor", "train.steps": steps,
                                                      "train.batch_size": batch, "device_name": "NVIDIA H200"}))
    for metric, values in rows.items():
        lines = [f"step\t{metric}"] + [f"{i + 1}\t{v}" for i, v in enumerate(values)]
        (live / "plots" / "metrics" / "train" / f"{metric}.tsv").write_text("\n".join(lines) + "\n")


def test_summary_skips_warm_up_steps_averages_gpu_util_and_refuses_another_profiles_run(smoke, tmp_path, capsys):
    run_dir = Stage(smoke).path("runs", "trunk")
    pps = [10.0] * 2 + [float(v) for v in range(100, 110)]  # two slow warm-up steps, then 100..109
    _write_live(run_dir, 12, 8, {"pairs_per_s": pps, "loader_share": [0.9] * 2 + [0.1] * 10,
                                 "data_wait_s": [1.0] * 2 + [0.01] * 10, "gpu_util": [0.0] * 2 + [80.0] * 10})
    apply_profile(smoke, None, ["arms.trunk.train.steps=12"])  # the run these params make: 12 steps of 8
    summary = GS.summarise(smoke, skip=2)
    assert summary["device"] == "NVIDIA H200"  # what the run logged, not the machine summarising it
    r = summary["runs"]["trunk"]
    assert r["pairs_per_s"]["median"] == pytest.approx(104.5) and r["pairs_per_s"]["p10"] == pytest.approx(100.9)
    assert r["loader_share"] == pytest.approx({"mean": 0.1, "p90": 0.1}) and r["gpu_util_mean"] == 80.0
    assert r["data_wait_s_mean"] == pytest.approx(0.01) and r["device"] == "NVIDIA H200"
    apply_profile(smoke, None, ["arms.trunk.train.steps=13"])  # the folder is no longer this profile's run
    with pytest.raises(ValueError, match=rf"{run_dir}: trained with train.steps=12.*gives 13"):
        GS.summarise(smoke)
