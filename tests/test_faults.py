"""Bad inputs: nothing executes, nothing is silently wrong, nothing is lost (docs/faults.md).

Each test feeds one bad input a user can give and asserts its outcome: a clear error
naming the file or key (never a traceback), no code run from a checkpoint, no partial or
stale output taken for a real one, no file of the user's destroyed.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from icdlib import edits
from icdlib.checkpoints import CheckpointError, load_backbone_weights, load_model, read_file, save_checkpoint
from icdlib.checkpoints.io import FORMAT, sidecar
from icdlib.data import Disc21, build_benchmark, load_image, to_rgb8
from icdlib import isc_csv
from icdlib.data.build import BuildConfig, main as data_main
from icdlib.data.disc21 import BUILDING
from icdlib.edits import EditConfig
from icdlib.edits.limits import size_bound
from icdlib.eval import metrics
from icdlib.eval.cli import main as eval_main
from icdlib.eval.retrieval import embed
from icdlib.losses import copynce
from icdlib.models import build_descriptor, build_matcher
from icdlib.params import build
from icdlib.pipeline.config import load_all
from icdlib.pipeline.profile import main as profile_main
from icdlib.train import cli as train_cli
from icdlib.train import loop as T
from icdlib.train.runs import TrainConfig, resolve_run

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(img_size=32, patch_size=8, embed_dim=32, num_heads=2)
TINY_SETS = ["train.steps=2", "train.batch_size=4", "train.warmup_steps=0", "train.workers=0",
             "train.checkpoint_every=1", "pairs.size=32", "pairs.patch=8", "pairs.donors=procedural",
             "descriptor.embed_dim=32", "descriptor.depth=1", "descriptor.num_heads=2",
             "descriptor.img_size=32", "descriptor.patch_size=8", "descriptor.desc_dim=16"]


# ------------------------------------------------------------------------- helpers
class Plant:
    """Unpickling this would create ``marker`` (``open(marker, "w")``): code execution."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def plant(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A checkpoint-shaped file whose state dict would run code when unpickled in full."""
    payload = {"format": FORMAT, "meta": {"kind": "descriptor"}, "state_dict": Plant(marker)}
    if legacy:
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    return path


def descriptor(depth=1, dim=32):
    return build_descriptor("vit_tiny_cpu", seed=0, depth=depth, desc_dim=16,
                            **{**SMALL, "embed_dim": dim})


def assert_refused(err: str, path: Path, marker: Path):
    assert not marker.exists(), "the checkpoint's code ran"
    assert str(path) in err, err
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    build_benchmark(root, BuildConfig(size="tiny", image_size=48, workers=1), seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "desc.pt", descriptor())


@pytest.fixture
def params_file(tmp_path, bench) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"paths": {"data": str(bench)}}))
    return p


def run_train(capsys, params_file, out, *extra) -> tuple[int, str]:
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    rc = train_cli.main(["--params", str(params_file), "--out", str(out), "--device", "cpu", *sets, *extra])
    return rc, capsys.readouterr().err


# ---------------------------------------------- 1. weights only: malicious pickles
def test_load_model_refuses_a_malicious_pickle(tmp_path):
    path, marker = plant(tmp_path / "evil.pt", tmp_path / "pwned"), tmp_path / "pwned"
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    assert_refused(str(e.value), path, marker)


def test_legacy_pickle_file_is_refused_too(tmp_path):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "evil.pkl", marker, legacy=True)
    with pytest.raises(CheckpointError) as e:
        read_file(path)
    assert_refused(str(e.value), path, marker)


def test_evaluate_descriptor_refuses_a_malicious_pickle(tmp_path, bench, capsys):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "evil.pt", marker)
    assert eval_main(["--data", str(bench), "--descriptor", str(path), "--out", str(tmp_path / "o")]) == 2
    assert_refused(capsys.readouterr().err, path, marker)
    assert not (tmp_path / "o").exists()


def test_evaluate_matcher_refuses_a_malicious_pickle(tmp_path, bench, capsys):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "evil_matcher.pt", marker)
    cands = tmp_path / "c.csv"
    cands.write_text("query_id,reference_id,score\nQ00000,R000000,0.5\n")
    rc = eval_main(["--data", str(bench), "--candidates", str(cands), "--matcher", str(path),
                    "--split", "dev_queries", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert_refused(capsys.readouterr().err, path, marker)


def test_train_init_refuses_a_malicious_pickle(tmp_path, params_file, capsys):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "evil.pt", marker)
    rc, err = run_train(capsys, params_file, tmp_path / "run", "--init", str(path))
    assert rc == 2
    assert_refused(err, path, marker)


def test_train_backbone_refuses_a_malicious_pickle(tmp_path, params_file, capsys):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "dino.pth", marker)
    rc, err = run_train(capsys, params_file, tmp_path / "run", "--set", f"train.backbone={path}")
    assert rc == 2
    assert_refused(err, path, marker)


def test_train_knn_checkpoint_refuses_a_malicious_pickle(tmp_path, params_file, capsys):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "knn.pt", marker)
    rc, err = run_train(capsys, params_file, tmp_path / "run", "--set", f"train.knn_checkpoint={path}")
    assert rc == 2
    assert_refused(err, path, marker)


def test_load_backbone_weights_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "dino.pth", marker)
    with pytest.raises(CheckpointError) as e:
        load_backbone_weights(descriptor(), path)
    assert_refused(str(e.value), path, marker)


def test_resume_refuses_a_malicious_checkpoint_left_in_the_run_folder(tmp_path, params_file, capsys):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    path = plant(out / T.CHECKPOINT, marker)
    rc, err = run_train(capsys, params_file, out)
    assert rc == 2
    assert_refused(err, path, marker)


def test_viz_explorer_refuses_a_malicious_checkpoint(tmp_path):
    from icdlib.viz.config import VizConfig
    from icdlib.viz.explorer import Explorer

    marker = tmp_path / "pwned"
    path = plant(tmp_path / "evil.pt", marker)
    ex = Explorer(VizConfig(size=64, patch=16, random_chain=False))
    ex.controls.descriptor.value = str(path)
    ex.load_button.click()
    assert not marker.exists() and ex.models == {}
    assert str(path) in ex.status.value


# ----------------------------------------------------- 1. formats that load safely
def test_safetensors_with_json_sidecar_round_trip(tmp_path):
    model = descriptor()
    path = save_checkpoint(tmp_path / "m.safetensors", model, {"step": 3})
    doc = json.loads(sidecar(path).read_text())
    assert doc["format"] == FORMAT and doc["meta"]["config"]["embed_dim"] == 32
    loaded, meta = load_model(path)
    assert meta["step"] == 3
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_safetensors_meta_must_be_json_data(tmp_path):
    with pytest.raises(ValueError, match="meta value meta.optimizer"):
        save_checkpoint(tmp_path / "m.safetensors", descriptor(), {"optimizer": torch.zeros(2)})


def test_pickle_only_meta_is_refused_at_save_time(tmp_path):
    with pytest.raises(ValueError, match=r"meta value meta\.path is a PosixPath"):
        save_checkpoint(tmp_path / "m.pt", descriptor(), {"path": tmp_path})
    assert not (tmp_path / "m.pt").exists()


def test_resume_state_and_final_model_load_weights_only(tmp_path, params_file, capsys):
    rc, err = run_train(capsys, params_file, tmp_path / "run")
    assert rc == 0, err
    state = torch.load(tmp_path / "run" / T.CHECKPOINT, weights_only=True)
    assert state["meta"]["step"] == 2 and "optimizer" in state["meta"] and "rng" in state["meta"]
    assert torch.load(tmp_path / "run" / T.FINAL, weights_only=True)["format"] == FORMAT
    model, meta = load_model(tmp_path / "run" / "model.safetensors")
    assert meta["step"] == 2 and (tmp_path / "run" / "model.json").is_file()


def test_checkpoints_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        p = save_checkpoint(tmp_path / "m.pt", descriptor())
        s = save_checkpoint(tmp_path / "m.safetensors", descriptor())
    finally:
        os.umask(mask)
    for f in (p, s, sidecar(s)):
        assert f.stat().st_mode & 0o777 == 0o644, f


# ----------------------------------------------------- 5. corrupt checkpoint files
def test_truncated_checkpoint_names_the_file(tmp_path, good_ckpt):
    path = tmp_path / "cut.pt"
    data = good_ckpt.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt.*not a readable torch checkpoint"):
        load_model(path)


def test_empty_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt.*empty"):
        load_model(path)


def test_non_checkpoint_file_names_the_file(tmp_path):
    path = tmp_path / "photo.pt"
    Image.new("RGB", (8, 8)).save(path, format="PNG")
    with pytest.raises(CheckpointError, match="photo.pt"):
        load_model(path)


def test_directory_as_checkpoint_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="is not a file"):
        load_model(tmp_path)


def test_truncated_safetensors_names_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", descriptor())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="m.safetensors.*not a readable safetensors"):
        load_model(path)


def test_checkpoint_with_broken_config_names_the_file(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"format": FORMAT, "meta": {"kind": "descriptor", "config": {"embed_dim": "wide"}},
                "state_dict": {}}, path)
    with pytest.raises(ValueError, match="bad.pt"):
        load_model(path)


def test_init_of_another_width_names_the_file(tmp_path, params_file, capsys):
    path = save_checkpoint(tmp_path / "wide.pt", descriptor(dim=48))
    rc, err = run_train(capsys, params_file, tmp_path / "run", "--init", str(path))
    assert rc == 2 and str(path) in err and "does not fit" in err and "Traceback" not in err


def test_truncated_image_in_a_dataloader_worker_names_the_file(tmp_path):
    good = tmp_path / "a.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError) as e:
        embed(torch.nn.Flatten(), [good, bad], 16, batch_size=1, num_workers=1, device="cpu")
    msg = str(e.value)
    assert str(bad) in msg and "Traceback" not in msg and "worker" not in msg


# ----------------------------------------------------------- 2. ISC21 CSV reader
def _csv(path: Path, text: str, encoding="utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_bom_and_crlf_read_like_plain_lf(tmp_path):
    plain = _csv(tmp_path / "a.csv", "query_id,reference_id\nQ1,R1\nQ2,\n")
    fancy = _csv(tmp_path / "b.csv", "\ufeffquery_id,reference_id\r\nQ1,R1\r\nQ2,\r\n")
    assert isc_csv.read_ground_truth(plain) == isc_csv.read_ground_truth(fancy) == [("Q1", "R1"), ("Q2", None)]


@pytest.mark.parametrize("ref", [" ", "None", "null", "NaN"])
def test_distractor_must_be_the_empty_field(tmp_path, ref):
    path = _csv(tmp_path / "gt.csv", f"query_id,reference_id\nQ1,R1\nQ2,{ref}\n")
    with pytest.raises(ValueError, match=r"gt.csv:3"):
        isc_csv.read_ground_truth(path)


def test_ground_truth_gives_a_query_several_references(tmp_path):
    """A collage copies several sources: one row per (query, reference) pair, as ISC21 counts them."""
    path = _csv(tmp_path / "gt.csv", "query_id,reference_id\nQ1,R1\nQ2,\nQ1,R2\n")
    assert isc_csv.read_ground_truth(path) == [("Q1", "R1"), ("Q2", None), ("Q1", "R2")]


@pytest.mark.parametrize("rows, message", [
    ("Q1,R1\nQ2,R2\nQ1,R1\n", r"gt.csv:4: pair \(query_id Q1, reference_id R1\) appears twice \(first on line 2\)"),
    ("Q1,\nQ1,\n", r"gt.csv:3: distractor row Q1 \(empty reference_id\) appears twice \(first on line 2\)"),
    ("Q1,\nQ1,R1\n", r"gt.csv:3: query Q1 has reference R1 but line 2 lists it as a distractor"),
    ("Q1,R1\nQ1,\n", r"gt.csv:3: query Q1 is listed as a distractor but line 2 gives it reference R1"),
])
def test_ground_truth_refuses_a_repeated_pair_or_a_distractor_with_a_copy(tmp_path, rows, message):
    path = _csv(tmp_path / "gt.csv", "query_id,reference_id\n" + rows)
    with pytest.raises(ValueError, match=message):
        isc_csv.read_ground_truth(path)

def test_predictions_with_comma_space_separators_are_refused(tmp_path, capsys):
    p = _csv(tmp_path / "p.csv", "query_id,reference_id,score\nQ1, R1, 0.9\n")
    g = _csv(tmp_path / "g.csv", "query_id,reference_id\nQ1,R1\n")
    assert metrics.main(["--predictions", str(p), "--ground-truth", str(g)]) == 2
    err = capsys.readouterr().err
    assert "p.csv:2" in err and "spaces around it" in err


def test_predictions_header_with_spaces_is_refused(tmp_path):
    p = _csv(tmp_path / "p.csv", "query_id, reference_id, score\nQ1,R1,0.9\n")
    with pytest.raises(ValueError, match="p.csv: bad header.*no spaces around fields"):
        isc_csv.read_predictions(p)


def test_semicolon_separated_predictions_are_refused(tmp_path):
    p = _csv(tmp_path / "p.csv", "query_id;reference_id;score\nQ1;R1;0.9\n")
    with pytest.raises(ValueError, match="bare comma"):
        isc_csv.read_predictions(p)


def test_non_utf8_csv_names_the_file(tmp_path):
    p = _csv(tmp_path / "gt.csv", "query_id,reference_id\nQé,R1\n", encoding="utf-16")
    with pytest.raises(ValueError, match="gt.csv"):
        isc_csv.read_ground_truth(p)


def test_partial_ground_truth_warns_in_metrics(tmp_path):
    p = _csv(tmp_path / "p.csv", "query_id,reference_id,score\nQ1,R1,0.9\nQ2,R2,0.8\n")
    g = _csv(tmp_path / "g.csv", "query_id,reference_id\nQ1,R1\n")
    with pytest.warns(UserWarning, match="covers only some"):
        metrics.evaluate_files(p, g)


def test_partial_ground_truth_warns_in_data_check(bench, tmp_path):
    rows = isc_csv.read_ground_truth(bench / "dev_ground_truth.csv")
    gt = _csv(tmp_path / "gt.csv", "query_id,reference_id\n" + "".join(f"{q},{r or ''}\n" for q, r in rows[:3]))
    with pytest.warns(UserWarning, match="covers 3 of the"):
        Disc21(bench, ground_truth=gt).ground_truth("dev_queries")


def test_data_check_and_evaluate_use_the_same_reader(bench, tmp_path, capsys):
    gt = _csv(tmp_path / "gt.csv", "query_id,reference_id\nQ00000, \n")
    assert data_main(["check", "--root", str(bench), "--ground-truth", str(gt), "--no-decode"]) == 1
    assert "gt.csv:2" in capsys.readouterr().err
    rc = eval_main(["--data", str(bench), "--baseline", "phash", "--ground-truth", str(gt),
                    "--split", "dev_queries", "--out", str(tmp_path / "o")])
    assert rc == 2 and "gt.csv:2" in capsys.readouterr().err


def test_candidates_file_with_spaces_is_refused(bench, tmp_path, good_ckpt, capsys):
    c = _csv(tmp_path / "c.csv", "query_id,reference_id,score\nQ00000 ,R000000,0.9\n")
    m = save_checkpoint(tmp_path / "m.pt", build_matcher("vit_tiny_cpu", seed=0, encoder_depth=1,
                                                           fusion_depth=1, **SMALL))
    rc = eval_main(["--data", str(bench), "--candidates", str(c), "--matcher", str(m),
                    "--split", "dev_queries", "--out", str(tmp_path / "o")])
    assert rc == 2 and "c.csv:2" in capsys.readouterr().err


# ------------------------------------------------------------------ 3. configuration
def test_train_set_refuses_an_unknown_section(tmp_path, params_file, capsys):
    rc, err = run_train(capsys, params_file, tmp_path / "run", "--set", "trian.steps=5")
    assert rc == 2 and "unknown section 'trian'" in err


@pytest.mark.parametrize("item, key", [("train.lr=fast", "train.lr"), ("train.steps=ten", "train.steps"),
                                       ("train.amp=3", "train.amp"), ("train.lr=.nan", "train.lr"),
                                       ("train.heads=[1, 2]", "train.heads")])
def test_train_set_values_are_type_checked_naming_the_key(tmp_path, params_file, capsys, item, key):
    rc, err = run_train(capsys, params_file, tmp_path / "run", "--set", item)
    assert rc == 2 and f"{key}: expected" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_params_file_values_are_type_checked_on_load():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["edits"]["crop_area"] = [0.5]
    with pytest.raises(ValueError, match=r"edits\.crop_area: expected tuple"):
        load_all(params)


def test_build_normalises_yaml_numbers():
    cfg = build(TrainConfig, {"lr": "5e-4", "steps": 10.0, "warmup_steps": 1}, "params.yaml:train")
    assert cfg.lr == 5e-4 and isinstance(cfg.lr, float) and cfg.steps == 10 and isinstance(cfg.steps, int)


def _params_copy(tmp_path) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text((ROOT / "params.yaml").read_text())
    return p


@pytest.mark.parametrize("item", ["train=5", "train.lr=fast", "train.steps=[1]"])
def test_profile_set_refuses_bad_values_and_keeps_the_file(tmp_path, capsys, item):
    p = _params_copy(tmp_path)
    before = p.read_text()
    assert profile_main(["--params", str(p), "--profiles-dir", str(ROOT / "profiles"), "--set", item]) == 2
    assert "error:" in capsys.readouterr().err
    assert p.read_text() == before


def test_profile_names_resolve_only_inside_profiles(tmp_path, capsys):
    p = _params_copy(tmp_path)
    (tmp_path / "evil.yaml").write_text("train: {steps: 1}\n")
    rc = profile_main(["--params", str(p), "--profiles-dir", str(ROOT / "profiles"),
                       "../" * 8 + str(tmp_path / "evil")])
    assert rc == 2 and "not a path" in capsys.readouterr().err


def test_profile_good_set_still_works(tmp_path):
    p = _params_copy(tmp_path)
    assert profile_main(["--params", str(p), "--profiles-dir", str(ROOT / "profiles"), "--set", "train.steps=700"]) == 0
    assert yaml.safe_load(p.read_text())["train"]["steps"] == 700


def test_resolve_run_refuses_unknown_section_in_overrides():
    with pytest.raises(ValueError, match="unknown section 'eval'"):
        resolve_run({}, None, ["eval.k=3"])


# ------------------------------------------------------- 4. partial and stale outputs
def test_interrupted_build_is_refused_by_check(tmp_path, monkeypatch, capsys):
    import icdlib.data.build as B

    calls = {"n": 0}
    real = B._run_task

    def dies(task):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(B, "_run_task", dies)
    with pytest.raises(KeyboardInterrupt):
        build_benchmark(tmp_path, BuildConfig(size="tiny", image_size=32, workers=1), progress=False)
    assert (tmp_path / BUILDING).exists() and not (tmp_path / "manifest.json").exists()
    assert data_main(["check", "--root", str(tmp_path), "--no-decode"]) == 1
    assert "partial build" in capsys.readouterr().err


def test_check_refuses_a_build_with_missing_images(bench, tmp_path, capsys):
    import shutil

    root = tmp_path / "b"
    shutil.copytree(bench, root)
    next((root / "reference_images").iterdir()).unlink()
    assert data_main(["check", "--root", str(root), "--no-decode"]) == 1
    assert "partial build" in capsys.readouterr().err


def test_evaluate_out_never_mixes_two_runs(bench, tmp_path):
    out = tmp_path / "o"
    assert eval_main(["--data", str(bench), "--baseline", "phash", "--split", "dev_queries", "--out", str(out)]) == 0
    (out / "features").mkdir()
    (out / "features" / "stale.npy").write_bytes(b"old run")
    assert eval_main(["--data", str(bench), "--baseline", "phash", "--split", "dev_queries", "--out", str(out)]) == 0
    assert not (out / "features").exists() and (out / "metrics.json").is_file()
    assert not list(tmp_path.glob(".o.*"))  # no temporary folder left behind


def test_failed_evaluate_keeps_the_previous_output(bench, tmp_path, capsys):
    out = tmp_path / "o"
    assert eval_main(["--data", str(bench), "--baseline", "phash", "--split", "dev_queries", "--out", str(out)]) == 0
    before = (out / "predictions.csv").read_text()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert eval_main(["--data", str(bench), "--descriptor", str(bad), "--split", "dev_queries", "--out", str(out)]) == 2
    assert (out / "predictions.csv").read_text() == before
    assert not list(tmp_path.glob(".o.*"))


def test_evaluate_refuses_to_replace_a_foreign_folder(bench, tmp_path, capsys):
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    rc = eval_main(["--data", str(bench), "--baseline", "phash", "--split", "dev_queries", "--out", str(tmp_path)])
    assert rc == 2 and "not an evaluation output folder" in capsys.readouterr().err
    assert keep.read_text() == "mine"


def test_train_no_resume_clears_the_previous_run(tmp_path, params_file, capsys):
    out = tmp_path / "run"
    (out / T.LIVE_DIR / "plots").mkdir(parents=True)
    (out / T.LIVE_DIR / "plots" / "old.tsv").write_text("step\n99\n")
    (out / "model.safetensors").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    rc, err = run_train(capsys, params_file, out, "--no-resume", "--set", "train.steps=1")
    assert rc == 0, err
    assert not (out / T.LIVE_DIR / "plots" / "old.tsv").exists()
    assert load_model(out / "model.safetensors")[1]["step"] == 1
    assert (out / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------- 6. resources, numbers
def test_growing_chain_is_refused_before_allocating():
    img = Image.new("RGB", (64, 48))
    with pytest.raises(ValueError, match=r"edit #2 \(scale\).*max_pixels"):
        edits.apply(img, [{"op": "scale", "factor": 8.0}] * 3)


def test_pixel_cap_comes_from_the_config():
    img = Image.new("RGB", (64, 48))
    with pytest.raises(ValueError, match="max_pixels=1000"):
        edits.apply(img, [{"op": "hflip"}], config=EditConfig(max_pixels=1000))


def test_size_bounds_hold_for_sampled_chains():
    img = Image.new("RGB", (40, 30), (90, 20, 10))
    for seed in range(60):
        for fam in (None, ["geometric"], ["composite"]):
            edits.apply(img, edits.sample_chain(seed, families=fam))  # asserts output <= bound
    assert size_bound("collage", {"rows": 4, "cols": 4, "tile_scale": 2.0, "gap": 0.5}, (10, 10))[0] >= 4 * 20


def test_16_bit_image_is_scaled_not_saturated(tmp_path):
    a = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(a).save(p)
    rgb = np.asarray(load_image(p))
    assert rgb.min() == 0 and rgb.max() == 255 and 100 < rgb.mean() < 155


def test_float_image_is_scaled(tmp_path):
    a = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    buf = io.BytesIO()
    Image.fromarray(a, "F").save(buf, format="TIFF")
    rgb = np.asarray(to_rgb8(Image.open(io.BytesIO(buf.getvalue()))))
    assert rgb.max() == 255 and 100 < rgb.mean() < 155


def _tokens(b=2, n=4, m=4, c=8):
    g = torch.Generator().manual_seed(0)
    o_qr = torch.rand(b, n, m + 1, generator=g)
    o_rq = torch.rand(b, m, n + 1, generator=g)
    return torch.randn(b, n, c, generator=g), torch.randn(b, m, c, generator=g), o_qr, o_rq


def test_copynce_refuses_nan_tokens():
    q, r, a, b = _tokens()
    q[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        copynce(q, r, a, b)


def test_copynce_refuses_nan_overlaps():
    q, r, a, b = _tokens()
    a[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        copynce(q, r, a, b)


def test_copynce_refuses_an_empty_batch():
    q, r, a, b = _tokens(b=0)
    with pytest.raises(ValueError, match="empty input"):
        copynce(q, r, a, b)


@pytest.mark.parametrize("kw", [{"scale": float("nan")}, {"gamma": float("nan")}, {"lam": float("nan")}])
def test_copynce_refuses_nan_hyperparameters(kw):
    q, r, a, b = _tokens()
    with pytest.raises(ValueError, match="copynce"):
        copynce(q, r, a, b, **kw)



# ------------------------------------------------------------- CLI inputs, in general
def test_unreadable_params_yaml_names_the_file(tmp_path, capsys):
    p = tmp_path / "params.yaml"
    p.write_text("train: {steps: [\n")
    rc, err = run_train(capsys, p, tmp_path / "run")
    assert rc == 2 and str(p) in err and "Traceback" not in err


def test_set_value_that_is_not_yaml_names_the_item(tmp_path, params_file, capsys):
    rc, err = run_train(capsys, params_file, tmp_path / "run", "--set", "train.steps=[1")
    assert rc == 2 and "train.steps=[1" in err


def test_out_that_is_a_file_is_one_error_line(tmp_path, params_file, capsys):
    out = tmp_path / "run"
    out.write_text("a file")
    rc, err = run_train(capsys, params_file, out)
    assert rc == 2 and err.startswith("error:") and str(out) in err and out.read_text() == "a file"


def test_data_build_never_overwrites_a_folder_it_did_not_build(tmp_path, capsys):
    ref = tmp_path / "reference_images"
    ref.mkdir()
    (ref / "R000000.jpg").write_bytes(b"a real DISC21 image")
    assert data_main(["build", "--out", str(tmp_path), "--size", "tiny", "--workers", "1"]) == 1
    assert "did not build" in capsys.readouterr().err
    assert (ref / "R000000.jpg").read_bytes() == b"a real DISC21 image"


def test_corrupt_knn_cache_names_the_file(tmp_path):
    from icdlib.train.mining import load_table

    p = tmp_path / "neighbours_x.npy"
    np.save(p, np.full((4, 2), 9))
    with pytest.raises(ValueError, match="neighbours_x.npy.*delete it"):
        load_table(p, 4, 2)
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="neighbours_x.npy.*unreadable"):
        load_table(p, 4, 2)


def test_profile_that_is_not_a_mapping_names_the_file(tmp_path, capsys):
    p = _params_copy(tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "odd.yaml").write_text("- train\n- steps\n")
    assert profile_main(["--params", str(p), "--profiles-dir", str(tmp_path / "profiles"), "odd"]) == 2
    assert "odd.yaml: a profile must be a mapping" in capsys.readouterr().err


def test_own_safetensors_descriptor_initialises_a_matcher_trunk(tmp_path):
    src = build_descriptor("vit_tiny_cpu", seed=1, depth=2, desc_dim=16, **SMALL)
    path = save_checkpoint(tmp_path / "d.safetensors", src)
    matcher = build_matcher("vit_tiny_cpu", seed=0, encoder_depth=1, fusion_depth=1, **SMALL)
    report = load_backbone_weights(matcher, path)
    assert report.loaded > 0
    assert torch.equal(matcher.vit.state_dict()["pos_embed"], src.vit.state_dict()["pos_embed"])
