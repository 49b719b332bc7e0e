"""The benchmark built from a folder of photos (``python -m icdlib.data build --photos``)."""

import csv
import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icdlib.data import Disc21, load_image, render
from icdlib.data.build import main
from icdlib.data.photo_bench import PhotoBuildConfig, assign_roles, build_photo_benchmark, photo_config, replay_query
from icdlib.data.photo_scan import dhash_bits, scan_photos

CFG = PhotoBuildConfig(queries=12, max_side=64)
ORIGINALS = 14  # decodable, distinct photos in the folder
NOTES = "Made by the test suite; CC0.\n"


def _save(img: Image.Image, path: Path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """Nested folders of JPEG/PNG/WebP photos, two duplicates and five files that are no photo."""
    root = tmp_path_factory.mktemp("photos")
    kinds = ("spectral", "dead_leaves", "mixed")
    formats = (("jpg", dict(quality=92)), ("png", {}), ("webp", dict(quality=90)))
    for i in range(ORIGINALS):
        size = (96 + 8 * (i % 3), 72 + 4 * (i % 4))
        ext, kw = formats[i % 3]
        folder = ("a", "a/b", "c")[i % 3]
        _save(render(kinds[i % 3], 100 + i, size), root / folder / f"p{i:02d}.{ext}", **kw)
    first = root / "a" / "p00.jpg"
    (root / "z_dup").mkdir()
    (root / "z_dup" / "copy.jpg").write_bytes(first.read_bytes())  # an exact copy
    _save(Image.open(first).resize((48, 36), Image.Resampling.BICUBIC), root / "z_dup" / "small.png")
    (root / "c" / "empty.png").write_bytes(b"")
    (root / "c" / "notes.jpg").write_text("not a photo, just text with a .jpg name\n")
    (root / "c" / "broken.jpg").write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # truncated
    _save(render("spectral", 7, 16), root / "c" / "icon.png")
    (root / "readme.txt").write_text("photos for the test\n")
    return root


@pytest.fixture(scope="module")
def notes(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("notes") / "LICENCES.txt"
    path.write_text(NOTES)
    return path


@pytest.fixture(scope="module")
def bench(photo_dir, notes, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b1"
    return out, build_photo_benchmark(photo_dir, out, CFG, seed=5, licence_notes=notes, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False)
    return buf.getvalue()


# ---------------------------------------------------------------------- scanning
def test_scan_counts_skip_reasons_duplicates_and_ignored_files(photo_dir):
    scan = scan_photos(photo_dir, max_side=64)
    assert len(scan.usable) == ORIGINALS
    assert scan.skip_counts() == {"empty file": 1, "not an image": 1, "corrupt": 1, "too small": 1}
    reasons = {s["path"]: s["reason"] for s in scan.skipped}
    assert reasons == {"c/empty.png": "empty file", "c/notes.jpg": "not an image", "c/broken.jpg": "corrupt",
                       "c/icon.png": "too small"}
    dups = {d["path"]: (d["duplicate_of"], d["distance"]) for d in scan.duplicates}
    assert set(dups) == {"z_dup/copy.jpg", "z_dup/small.png"}  # the first by sorted path is kept
    assert dups["z_dup/copy.jpg"] == ("a/p00.jpg", 0) and dups["z_dup/small.png"][0] == "a/p00.jpg"
    assert scan.ignored == 1  # readme.txt
    assert [p.path for p in scan.usable] == sorted(p.path for p in scan.usable)
    assert str(photo_dir) not in json.dumps(scan.report())


def test_difference_hash_fallback_finds_the_same_duplicates(photo_dir):
    scan = scan_photos(photo_dir, max_side=64, method="dhash")
    assert scan.hash_method == "dhash" and len(scan.usable) == ORIGINALS
    assert {d["path"] for d in scan.duplicates} == {"z_dup/copy.jpg", "z_dup/small.png"}


def test_difference_hash_bits_compare_neighbouring_pixels():
    rising = Image.fromarray(np.tile(np.arange(0, 90, 10, dtype=np.uint8), (8, 1)), "L")
    assert dhash_bits(rising).all() and not dhash_bits(rising.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).any()
    checker = np.zeros((8, 9), np.uint8)
    checker[:, 1::2] = 200  # brighter on odd columns: bit c set exactly when c is even
    assert dhash_bits(Image.fromarray(checker, "L")).reshape(8, 8).tolist() == [[c % 2 == 0 for c in range(8)]] * 8


# ---------------------------------------------------------------------- the benchmark
def test_manifest_lists_every_photo_file_with_its_sha256(bench, photo_dir):
    _, m = bench
    report = m["photos"]
    listed = {s["path"]: s["sha256"] for s in report["sources"]}
    listed.update({d["path"]: d["sha256"] for d in report["duplicates"]["files"]})
    listed.update({s["path"]: s["sha256"] for s in report["skipped"]["files"]})
    on_disk = {p: hashlib.sha256(b).hexdigest() for p, b in _files(photo_dir).items() if not p.endswith(".txt")}
    assert listed == on_disk
    assert report["skipped"]["counts"] == {"empty file": 1, "not an image": 1, "corrupt": 1, "too small": 1}
    assert report["duplicates"]["count"] == 2 and m["licence_notes"] == NOTES


def test_ground_truth_queries_and_references_exist_and_agree(bench):
    out, m = bench
    ds = Disc21(out)
    counts = ds.validate()
    assert counts["reference"] == m["counts"]["reference"] and "training" not in ds.splits()
    refs = {i for i, _ in ds.images("reference")}
    roles = {s["id"]: s for s in m["photos"]["sources"]}
    by_id = {q["query_id"]: q for q in m["queries"]}
    for split in ("dev_queries", "final_queries"):
        gt = ds.ground_truth(split)
        assert {q for q, _ in gt} == {i for i, _ in ds.images(split)}
        assert sum(r is not None for _, r in gt) == round(len(gt) * CFG.positive_rate)
        for q, r in gt:
            rec = by_id[q]
            assert rec["reference_id"] == r and rec["split"] == split
            if r is not None:
                assert r in refs and rec["source_id"] == r
            else:  # a distractor is made from a held-back photo, never a reference's copy
                src = roles[rec["source_id"]]
                assert src["role"] == "distractor"
                assert src["sha256"] not in {s["sha256"] for s in roles.values() if s["role"] == "reference"}
    with (out / "dev_ground_truth.csv").open() as f:
        assert next(csv.reader(f)) == ["query_id", "reference_id"]


def test_references_are_the_photos_shrunk_to_max_side(bench, photo_dir):
    out, m = bench
    sources = m["photos"]["sources"]
    for s in sources:
        if s["role"] != "reference":
            continue
        ref = np.asarray(load_image(out / "reference_images" / f"{s['id']}.jpg"), float)
        w, h = s["size"]
        assert max(ref.shape[:2]) == min(CFG.max_side, max(w, h))
        assert abs(ref.shape[1] / ref.shape[0] - w / h) < 0.05

        def gap(path):  # mean absolute difference to a photo shrunk independently
            photo = Image.open(photo_dir / path).convert("RGB").resize(ref.shape[1::-1], Image.Resampling.BILINEAR)
            return np.abs(np.asarray(photo, float) - ref).mean()

        assert min(sources, key=lambda o: gap(o["path"]))["path"] == s["path"]


def test_traces_replay_to_the_stored_queries(bench, photo_dir):
    out, m = bench
    for rec in m["queries"]:
        edited, trace = replay_query(out, rec, photos=photo_dir, manifest=m)
        assert list(edited.size) == rec["size"] == list(trace.size)
        assert round(float(trace.valid_mask().mean()), 4) == rec["traced_fraction"]
        stored = out / ("dev_queries" if rec["split"] == "dev_queries" else "final_queries") / f"{rec['query_id']}.jpg"
        assert _jpeg(edited) == stored.read_bytes()  # the exact pixels, so the exact trace
    assert any(r["reference_id"] is None for r in m["queries"]) and any(r["reference_id"] for r in m["queries"])


def test_same_folder_and_seed_give_the_same_bytes(bench, photo_dir, notes, tmp_path):
    out, _ = bench
    build_photo_benchmark(photo_dir, tmp_path / "b2", CFG, seed=5, licence_notes=notes, progress=False)
    a, b = _files(out), _files(tmp_path / "b2")
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
    assert str(photo_dir).encode() not in a["manifest.json"] and a["licence_notes.txt"] == NOTES.encode()


def test_other_seed_changes_the_queries(bench, photo_dir, tmp_path):
    out, m = bench
    m2 = build_photo_benchmark(photo_dir, tmp_path / "s6", CFG, seed=6, progress=False)
    assert [q["specs"] for q in m2["queries"]] != [q["specs"] for q in m["queries"]]
    assert (tmp_path / "s6/dev_queries/Q00000.jpg").read_bytes() != (out / "dev_queries/Q00000.jpg").read_bytes()
    assert m2["licence_notes"] is None and not (tmp_path / "s6" / "licence_notes.txt").exists()


def test_training_split_only_with_enough_photos(photo_dir, tmp_path):
    few = dataclasses.replace(CFG, train_fraction=0.5, min_training=100)
    m = build_photo_benchmark(photo_dir, tmp_path / "few", few, seed=1, progress=False)
    assert m["evaluation_only"] and m["counts"]["training"] == 0 and "min_training=100" in m["notes"][0]
    assert not (tmp_path / "few" / "training_images").exists()
    enough = dataclasses.replace(few, min_training=5)
    m = build_photo_benchmark(photo_dir, tmp_path / "ok", enough, seed=1, progress=False)
    assert not m["evaluation_only"] and m["counts"]["training"] == ORIGINALS // 2 and m["notes"] == []
    roles = [s["role"] for s in m["photos"]["sources"]]
    assert roles.count("training") == ORIGINALS // 2 == len(list((tmp_path / "ok" / "training_images").iterdir()))
    assert "training" in Disc21(tmp_path / "ok").splits()


def test_roles_are_disjoint_and_cover_every_photo():
    roles, notes = assign_roles(40, PhotoBuildConfig(queries=20, train_fraction=0.5, min_training=10), seed=3)
    assert sorted(sum(roles.values(), [])) == list(range(40)) and notes == []
    assert len(roles["training"]) == 20 and len(roles["distractor"]) == 5
    # never more held back than the distractor queries use
    roles, _ = assign_roles(400, PhotoBuildConfig(queries=8), seed=3)
    assert len(roles["distractor"]) == 4 and len(roles["reference"]) == 396
    with pytest.raises(ValueError, match="no reference"):
        assign_roles(1, PhotoBuildConfig(queries=4), seed=0)


# ---------------------------------------------------------------------- CLI
def test_cli_builds_and_reports_skips_and_evaluation_only(photo_dir, notes, tmp_path, capsys):
    rc = main(["build", "--photos", str(photo_dir), "--out", str(tmp_path / "cli"), "--queries", "6",
               "--max-side", "48", "--seed", "2", "--licence-notes", str(notes)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "skipped 4 files: empty file 1, not an image 1, corrupt 1, too small 1" in out
    assert "dropped 2 near-duplicates" in out and "evaluation-only" in out
    m = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert m["config"]["queries"] == 6 and m["config"]["max_side"] == 48 and m["seed"] == 2


@pytest.mark.parametrize("case", ["missing", "empty", "undecodable", "one photo", "notes"])
def test_bad_input_is_a_clear_error_naming_the_folder(case, photo_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    args = ["build", "--out", str(tmp_path / "out"), "--photos", str(folder)]
    if case == "empty":
        folder.mkdir()
    elif case == "undecodable":
        folder.mkdir()
        (folder / "a.jpg").write_text("text")
        (folder / "b.png").write_bytes(b"")
    elif case == "one photo":
        _save(render("spectral", 1, 64), folder / "only.png")
    elif case == "notes":
        args = ["build", "--out", str(tmp_path / "out"), "--photos", str(photo_dir),
                "--licence-notes", str(tmp_path / "nope.txt")]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    expected = {"missing": f"photo folder not found: {folder}", "empty": f"photo folder {folder} holds no",
                "undecodable": f"photo folder {folder}: none of its 2 photo files can be used (empty file: 1, "
                               "not an image: 1)",
                               "one photo": f"photo folder {folder}: 1 usable photos leave no reference",
                "notes": f"licence notes file not found: {tmp_path / 'nope.txt'}"}
    assert expected[case] in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_size_with_photos_and_photo_options_without_are_refused(photo_dir, tmp_path, capsys):
    rc = main(["build", "--photos", str(photo_dir), "--out", str(tmp_path / "x"), "--size", "tiny"])
    assert rc == 1 and "--size" in capsys.readouterr().err
    rc = main(["build", "--out", str(tmp_path / "x"), "--queries", "5", "--max-side", "64"])
    assert rc == 1 and "--queries, --max-side only apply with --photos DIR" in capsys.readouterr().err


def test_settings_come_from_the_photos_section():
    assert photo_config({"photos": {"queries": 7, "max_side": 256}}) == PhotoBuildConfig(queries=7, max_side=256)
    assert photo_config({}) == PhotoBuildConfig()
    with pytest.raises(ValueError, match="params.yaml:photos: unknown key"):
        photo_config({"photos": {"querys": 7}})
    with pytest.raises(ValueError, match="final_share"):
        PhotoBuildConfig(final_share=2.0)
