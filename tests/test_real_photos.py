"""Stage real_photos: photos -> benchmark -> every row scored -> table and claims, and its "not run" path."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from icdlib.data import render
from icdlib.params import load_params
from icdlib.pipeline import real_photo_eval, real_photos
from icdlib.pipeline.profile import apply_profile

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["PDQ", "pHash", "InfoNCE descriptor", "InfoNCE descriptor + SN", "CopyNCE descriptor",
        "CopyNCE descriptor + SN", "matcher (BCE only)", "matcher (CopyNCE)", "matcher (CopyNCE) + LCE"]
REAL_CLAIMS = ["copynce>infonce (real photos)", "infonce>best_hash (real photos)"]


def _params(folder: Path, sets: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "params.yaml"
    apply_profile(ROOT / "params.yaml", "tiny", sets, profiles_dir=ROOT / "profiles", out_path=out)
    return out


def _photo_folder(root: Path, n: int = 20) -> Path:
    """Photos the test makes (no network): procedural images of several kinds, sizes and formats."""
    kinds = ("spectral", "dead_leaves", "mixed", "text")
    for i in range(n):
        folder = root / ("a", "b/c")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        img = render(kinds[i % len(kinds)], 500 + i, (120 + 8 * (i % 3), 90 + 6 * (i % 4)))
        img.save(folder / f"photo{i:02d}.{('jpg', 'png')[i % 2]}")
    return root


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny pipeline run (two seeds) through stage real_photos on a photo folder and the report."""
    from icdlib.pipeline import ablations, evaluation, prepare, report, training

    run = tmp_path_factory.mktemp("real_photos_run")
    photos = _photo_folder(run / "my_photos")
    params = _params(run, [f"paths.real_photos={photos.name}", "ablation.seeds=[0]"])
    prepare.prepare_data(params, progress=False)
    training.train_arms(params, ["trunk", "infonce", "copynce"], progress=False)
    training.train_arms(params, ["matcher_bce", "matcher_copynce"], progress=False)
    evaluation.evaluate_suite(params)
    ablations.run_ablations(params, progress=False)
    real_photos.prepare_real_photos(params, progress=False)
    real_photo_eval.evaluate_real_photos(params)
    report.write_report(params)
    return run


pytestmark = pytest.mark.slow


def test_a_photo_folder_becomes_an_evaluation_only_benchmark(finished_run):
    status = json.loads((finished_run / "reports/real_photos/status.json").read_text())
    assert status["run"] and status["reason"] is None and status["source"] == "folder"
    assert status["root"] == "runs/real_photos/benchmark" and status["photos"] == 20
    assert status["counts"]["training"] == 0 and status["counts"]["dev_queries"] == 6
    manifest = finished_run / status["root"] / "manifest.json"
    assert manifest.is_file() and json.loads(manifest.read_text())["kind"] == "photos"


def test_every_row_is_scored_on_the_photos_with_the_main_evaluation_s_auxiliary_set(finished_run):
    from icdlib.eval import metrics

    res = json.loads((finished_run / "reports/real_photos/results.json").read_text())
    main = json.loads((finished_run / "reports/eval/results.json").read_text())
    assert res["run"] and res["split"] == "dev_queries" and res["n_queries"] == 6 and res["n_positives"] == 3
    assert res["n_auxiliary"] == main["n_auxiliary"] == 16  # the embedded training images, as report.aux_images
    assert res["ground_truth"] == "runs/real_photos/benchmark/dev_ground_truth.csv"
    assert [r["seed"] for r in res["rows"]["CopyNCE descriptor"]["runs"]] == [0, 1]
    # each recorded metric is what the metrics module computes from the written files alone
    gt = finished_run / res["ground_truth"]
    for label in ("PDQ", "CopyNCE descriptor", "matcher (CopyNCE)"):
        entry = res["rows"][label]["plain"]
        assert entry["predictions"].startswith("features/real_photos/")
        preds = metrics.read_predictions(finished_run / entry["predictions"])
        assert set(preds["query_id"]) <= set(pd.read_csv(gt, dtype=str)["query_id"])
        again = metrics.evaluate_files(finished_run / entry["predictions"], gt)[0]
        assert again.uAP == pytest.approx(entry["metrics"]["uAP"], abs=1e-9), label


def test_the_table_has_every_row_in_the_descriptor_table_s_columns(finished_run):
    table = pd.read_csv(finished_run / "reports/tables/real_photos.csv")
    descriptor = pd.read_csv(finished_run / "reports/tables/descriptor.csv", nrows=0)
    assert list(table["method"]) == ROWS
    assert list(table.columns) == list(descriptor.columns)
    rows = table.set_index("method")
    assert rows.loc["CopyNCE descriptor", "n_seeds"] == 2 and not math.isnan(rows.loc["CopyNCE descriptor", "uAP_std"])
    assert rows["uAP"].between(0, 1).all() and rows["paper_uAP"].isna().all()
    md = (finished_run / "reports/tables/real_photos.md").read_text()
    assert md.startswith("# Real photos") and "20 usable images: photos from paths.real_photos" in md


def test_the_orderings_gain_the_two_real_photo_claims(finished_run):
    claims = pd.read_csv(finished_run / "reports/tables/orderings.csv", keep_default_na=False).set_index("claim")
    for name in REAL_CLAIMS:
        assert claims.loc[name, "verdict"] in ("holds", "fails", "inconclusive")
        assert claims.loc[name, "a"].endswith(" descriptor (real photos)")
        assert claims.loc[name, "seeds"] == "0,1"
    assert claims.loc["infonce>best_hash (real photos)", "b"] in ("PDQ (real photos)", "pHash (real photos)")
    assert "Claims `(real photos)`" in (finished_run / "reports/tables/orderings.md").read_text()


def _copy_run(finished_run: Path, dest: Path, sets: list[str]) -> Path:
    shutil.copytree(finished_run, dest)
    return _params(dest, sets)


@pytest.mark.parametrize("apt", ["missing", "offline"])
def test_without_apt_or_archive_every_consumer_says_not_run(finished_run, tmp_path, monkeypatch, apt):
    from icdlib.pipeline import report

    params = _copy_run(finished_run, tmp_path / "run", ["ablation.seeds=[0]", "real_photos.source=debian"])
    assert load_params(params)["paths"]["real_photos"] is None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if apt == "offline":  # apt-get as on a machine without network
        script = bin_dir / "apt-get"
        script.write_text("#!/bin/sh\necho \"E: Failed to fetch http://deb.debian.org/x  Could not resolve "
                          "'deb.debian.org'\" >&2\nexit 100\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no .deb cached anywhere
    status = real_photos.prepare_real_photos(params, progress=False)
    want = "apt-get is not on PATH" if apt == "missing" else "Debian's archive is unreachable"
    assert status["run"] is False and want in status["reason"] and status["source"] == "debian"
    assert "root" not in status
    res = real_photo_eval.evaluate_real_photos(params)
    assert res["run"] is False and res["rows"] == {}
    assert (tmp_path / "run/features/real_photos").is_dir()
    assert not any((tmp_path / "run/features/real_photos").iterdir())  # no earlier run's predictions survive
    table = pd.read_csv(tmp_path / "run/reports/tables/real_photos.csv").set_index("method")
    assert list(table.index) == ROWS and table["uAP"].isna().all() and (table["missing"] == status["reason"]).all()
    md = (tmp_path / "run/reports/tables/real_photos.md").read_text()
    assert md.count(f"(not run: {status['reason']})") == len(ROWS)
    report.write_report(params)
    claims = pd.read_csv(tmp_path / "run/reports/tables/orderings.csv", keep_default_na=False).set_index("claim")
    for name in REAL_CLAIMS:
        assert claims.loc[name, "verdict"] == "not run" and claims.loc[name, "note"] == f"not run: {status['reason']}"
    assert claims.loc["copynce>infonce", "verdict"] in ("holds", "fails", "inconclusive")


def test_the_report_without_the_real_photo_stage_says_it_has_not_run(finished_run, tmp_path):
    from icdlib.pipeline import report

    params = _copy_run(finished_run, tmp_path / "run", ["ablation.seeds=[0]"])
    (tmp_path / "run/reports/real_photos/results.json").unlink()
    claims = report.write_report(params)["orderings"].set_index("claim")
    assert claims.loc[REAL_CLAIMS[0], "verdict"] == "not run"
    assert "stage real_photos has not run here" in claims.loc[REAL_CLAIMS[0], "note"]


def test_the_tiny_profile_renders_stand_ins_and_never_downloads(tmp_path, monkeypatch):
    params = _params(tmp_path, [])
    assert load_params(params)["real_photos"]["source"] == "stand_ins"

    def no_download(*args, **kwargs):
        raise AssertionError("the tiny profile must not fetch Debian's photos")

    monkeypatch.setattr(real_photos, "fetch_photos", no_download)
    status = real_photos.prepare_real_photos(params, progress=False)
    assert status["run"] and status["source"] == "stand_ins" and status["photos"] == 24
    assert "stand-ins (procedural images" in real_photos.describe(status)
    stand_ins = sorted((tmp_path / "runs/real_photos/stand_ins").iterdir())
    first = [p.read_bytes() for p in stand_ins]
    real_photos.render_stand_ins(tmp_path / "again", 24, 128, 0)
    assert [p.read_bytes() for p in sorted((tmp_path / "again").iterdir())] == first  # seeded: the same bytes
    assert len({p.read_bytes() for p in stand_ins}) == 24


def test_a_missing_photo_folder_is_an_error_naming_the_key(tmp_path):
    params = _params(tmp_path, ["paths.real_photos=nowhere"])
    with pytest.raises(FileNotFoundError, match="paths.real_photos: photo folder not found: .*nowhere"):
        real_photos.prepare_real_photos(params, progress=False)


def test_a_bad_source_is_rejected_with_its_key(tmp_path):
    with pytest.raises(ValueError, match="real_photos.source"):
        _params(tmp_path, ["real_photos.source=flickr"])


def test_debian_source_is_the_default_and_caches_under_paths_runs(tmp_path, monkeypatch):
    """The default profile fetches Debian's photos into paths.runs (the fetch itself is stubbed here)."""
    from icdlib.data.debian_photos import NotRun

    params = _params(tmp_path, ["real_photos.source=debian"])
    assert real_photos.RealPhotosConfig().source == "debian"
    seen = {}

    def fake_fetch(out, cache=None, *args, **kwargs):
        seen.update(out=Path(out), cache=Path(cache))
        return NotRun("stubbed")

    monkeypatch.setattr(real_photos, "fetch_photos", fake_fetch)
    assert real_photos.prepare_real_photos(params, progress=False)["reason"] == "stubbed"
    assert seen == {"out": tmp_path / "runs/real_photos/photos", "cache": tmp_path / "runs/real_photos/debs"}
    assert os.path.isfile(tmp_path / "reports/real_photos/status.json")
