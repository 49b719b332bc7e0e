import csv
import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icdlib.data.build import SIZES, main, plan_queries
from icdlib.data import BuildConfig, Disc21, build_benchmark, load_image

ROOT = Path(__file__).resolve().parents[1]
TINY = BuildConfig(size="tiny", workers=1)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny"
    manifest = build_benchmark(out, TINY, seed=3, progress=False)
    return out, manifest


# ---------------------------------------------------------------------- builder
def test_build_is_byte_identical_for_one_or_two_processes(tiny, tmp_path):
    out, _ = tiny
    build_benchmark(tmp_path / "two", dataclasses.replace(TINY, workers=2), seed=3, progress=False)
    a, b = _files(out), _files(tmp_path / "two")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_other_seed_gives_other_ground_truth(tmp_path):
    cfg = dataclasses.replace(TINY, training=2, reference=8, dev_queries=8, final_queries=0)
    build_benchmark(tmp_path / "s1", cfg, seed=1, progress=False)
    build_benchmark(tmp_path / "s2", cfg, seed=2, progress=False)
    assert (tmp_path / "s1/manifest.json").read_bytes() != (tmp_path / "s2/manifest.json").read_bytes()
    assert (tmp_path / "s1/training_images/T000000.jpg").read_bytes() != (
        tmp_path / "s2/training_images/T000000.jpg"
    ).read_bytes()


def test_layout_ids_and_final_ids_continue_after_dev(tiny):
    out, _ = tiny
    n = SIZES["tiny"]
    assert sorted(p.name for p in (out / "training_images").iterdir())[0] == "T000000.jpg"
    assert len(list((out / "training_images").iterdir())) == n["training"]
    assert len(list((out / "reference_images").iterdir())) == n["reference"]
    dev = sorted(p.stem for p in (out / "dev_queries").iterdir())
    final = sorted(p.stem for p in (out / "final_queries").iterdir())
    assert dev == [f"Q{i:05d}" for i in range(n["dev_queries"])]
    assert final == [f"Q{i:05d}" for i in range(n["dev_queries"], n["dev_queries"] + n["final_queries"])]
    with (out / "dev_ground_truth.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["query_id", "reference_id"] and len(rows) == 1 + n["dev_queries"]


def test_half_of_each_query_split_are_copies(tiny):
    out, manifest = tiny
    for split in ("dev_queries", "final_queries"):
        gt = Disc21(out).ground_truth(split)
        assert sum(r is not None for _, r in gt) == len(gt) // 2
    big = plan_queries(dataclasses.replace(TINY, dev_queries=1001, final_queries=999), seed=0)
    assert sum(t[3] is not None for t in big) == round(1001 * 0.5) + round(999 * 0.5)


def test_roles_share_no_source(tiny):
    out, manifest = tiny
    queries = manifest["queries"]
    for q in queries:  # a positive is made from its own reference, a distractor from a "D" source
        assert q["source_id"] == (q["reference_id"] or q["source_id"])
        assert q["source_id"].startswith("R" if q["reference_id"] else "D")
    distractors = [q["source_id"] for q in queries if q["reference_id"] is None]
    assert len(set(distractors)) == len(distractors)
    refs = [q["reference_id"] for q in queries if q["reference_id"]]
    assert len(set(refs)) == len(refs)  # distinct references while there are enough

    def digests(folder):
        return {hashlib.sha1(np.asarray(Image.open(p)).tobytes()).hexdigest() for p in (out / folder).iterdir()}

    train, ref = digests("training_images"), digests("reference_images")
    assert len(train) == SIZES["tiny"]["training"] and not train & ref


def test_manifest_replays_every_query(tiny):
    from icdlib import edits
    from icdlib.data.build import _Worker

    out, manifest = tiny
    assert manifest["seed"] == 3 and manifest["config"]["size"] == "tiny"
    json.dumps(manifest)  # plain JSON
    worker = _Worker(out, TINY, 3, None)
    q = next(q for q in manifest["queries"] if q["reference_id"])
    src, _ = worker.source("reference", int(q["reference_id"][1:]))
    ref = load_image(out / "reference_images" / f"{q['reference_id']}.jpg")
    assert np.abs(np.asarray(ref, float) - np.asarray(src, float)).mean() < 8  # the reference is this source
    edited, trace = edits.apply(src, q["specs"], donors=worker.donor)
    assert list(edited.size) == q["size"]
    assert round(float(trace.valid_mask().mean()), 4) == q["traced_fraction"]


def test_build_config_sizes_and_bad_values():
    assert BuildConfig().counts == SIZES["default"]
    assert BuildConfig(size="tiny", reference=5).counts["reference"] == 5
    with pytest.raises(ValueError, match="huge"):
        BuildConfig(size="huge")
    with pytest.raises(ValueError, match="positive_rate"):
        BuildConfig(positive_rate=1.5)
    with pytest.raises(ValueError, match="seed"):
        build_benchmark("unused", TINY, seed=-1)


# ---------------------------------------------------------------------- reader
def _jpeg(path: Path, colour=(120, 30, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), colour).save(path, quality=90)


def _gt(path: Path, rows, header=("query_id", "reference_id")) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def hand(tmp_path):
    """A hand-made DISC21 folder: 2 training, 3 references, 2 dev and 1 final query."""
    for name in ("training_images/T000000", "training_images/T000001", "reference_images/R000000",
                 "reference_images/R000001", "reference_images/R000002", "dev_queries/Q00000",
                 "dev_queries/Q00001", "final_queries/Q00002"):
        _jpeg(tmp_path / f"{name}.jpg")
    _gt(tmp_path / "dev_ground_truth.csv", [("Q00001", ""), ("Q00000", "R000002")])
    _gt(tmp_path / "final_ground_truth.csv", [("Q00002", "R000000")])
    return tmp_path


def test_reader_lists_splits_sorted_images_and_ground_truth(hand):
    d = Disc21(hand)
    assert d.splits() == ["training", "reference", "dev_queries", "final_queries"]
    assert [i for i, _ in d.images("reference")] == ["R000000", "R000001", "R000002"]
    assert d.images("references") == d.images("reference")
    assert d.ground_truth("dev_queries") == [("Q00000", "R000002"), ("Q00001", None)]
    counts = d.validate()
    assert counts["training"] == 2 and counts["dev_queries_positives"] == 1 and counts["final_queries_gt"] == 1
    assert load_image(hand / "dev_queries/Q00000.jpg").mode == "RGB"


def test_a_query_copying_two_references_keeps_both_rows_and_counts_once_as_a_positive(hand):
    _gt(hand / "dev_ground_truth.csv", [("Q00001", ""), ("Q00000", "R000002"), ("Q00000", "R000001")])
    d = Disc21(hand)
    assert d.ground_truth("dev_queries") == [("Q00000", "R000001"), ("Q00000", "R000002"), ("Q00001", None)]
    counts = d.validate(decode=False)
    assert counts["dev_queries_gt"] == 3 and counts["dev_queries_positives"] == 1  # rows; queries with a copy

def test_reader_on_built_benchmark_matches_config(tiny):
    out, manifest = tiny
    counts = Disc21(out).validate(decode=True)
    for split, n in SIZES["tiny"].items():
        assert counts[split] == n
    assert counts["dev_queries_positives"] == sum(
        1 for q in manifest["queries"] if q["split"] == "dev_queries" and q["reference_id"]
    )


def test_missing_reference_folder_names_it(hand):
    import shutil

    shutil.rmtree(hand / "reference_images")
    with pytest.raises(FileNotFoundError, match="reference_images"):
        Disc21(hand)
    with pytest.raises(FileNotFoundError, match="nothere"):
        Disc21(hand / "nothere")


def test_ground_truth_id_without_image_names_file_and_id(hand):
    _gt(hand / "dev_ground_truth.csv", [("Q00000", "R000002"), ("Q00077", "")])
    with pytest.raises(ValueError, match=r"dev_ground_truth\.csv.*Q00077"):
        Disc21(hand).ground_truth("dev_queries")
    _gt(hand / "dev_ground_truth.csv", [("Q00000", "R000099")])
    with pytest.raises(ValueError, match="R000099"):
        Disc21(hand).ground_truth("dev_queries")
    with pytest.warns(UserWarning, match="skipped 1"):
        assert Disc21(hand, on_error="skip").ground_truth("dev_queries") == []


def test_truncated_jpeg_is_named_and_skipped_on_request(hand):
    bad = hand / "reference_images/R000001.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:400])
    with pytest.raises(ValueError, match="R000001.jpg"):
        Disc21(hand).validate()
    with pytest.raises(ValueError, match="R000001.jpg"):
        load_image(bad)
    d = Disc21(hand, on_error="skip")
    with pytest.warns(UserWarning, match="1 unreadable"):
        counts = d.validate()
    assert counts["reference"] == 2 and counts["skipped"] == 1
    assert "R000001" not in [i for i, _ in d.images("reference")]


def test_empty_split_and_bad_header_raise(hand):
    for p in (hand / "final_queries").iterdir():
        p.unlink()
    with pytest.raises(ValueError, match="empty split final_queries"):
        Disc21(hand).validate(decode=False)
    _gt(hand / "dev_ground_truth.csv", [("Q00000", "R000002")], header=("query", "ref"))
    with pytest.raises(ValueError, match=r"dev_ground_truth\.csv: bad header"):
        Disc21(hand).ground_truth("dev_queries")


def test_single_query_folder_layout_with_root_ground_truth(tmp_path):
    _jpeg(tmp_path / "reference_images/R000000.jpg")
    _jpeg(tmp_path / "query_images/Q00000.jpg")
    _jpeg(tmp_path / "query_images/Q00001.jpg")
    _gt(tmp_path / "ground_truth.csv", [("Q00000", "R000000"), ("Q00001", "")])
    d = Disc21(tmp_path)
    assert d.splits() == ["reference", "queries"]
    assert d.ground_truth("queries") == [("Q00000", "R000000"), ("Q00001", None)]
    other = tmp_path / "elsewhere.csv"
    _gt(other, [("Q00001", "R000000")])
    assert Disc21(tmp_path, ground_truth=other).ground_truth("queries") == [("Q00001", "R000000")]


def test_missing_image_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        load_image(tmp_path / "gone.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="text.jpg"):
        load_image(tmp_path / "text.jpg")


# ---------------------------------------------------------------------- CLI
def test_cli_build_reads_params_and_check_counts(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 5\ndata:\n  size: tiny\n  workers: 1\n  training: 4\n  reference: 6\n"
                      "  dev_queries: 4\n  final_queries: 2\n")
    out = tmp_path / "bench"
    assert main(["build", "--out", str(out), "--params", str(params)]) == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 5
    capsys.readouterr()
    assert main(["check", "--root", str(out)]) == 0
    text = capsys.readouterr().out
    assert "training: 4" in text and "reference: 6" in text and "dev_queries_positives: 2" in text


def test_cli_check_exits_non_zero_naming_the_faulty_file(hand):
    (hand / "dev_queries/Q00001.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    proc = subprocess.run([sys.executable, "-m", "icdlib.data", "check", "--root", str(hand)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 1
    assert "Q00001.jpg" in proc.stderr
    assert main(["check", "--root", str(hand / "missing")]) == 1


def test_params_yaml_sections_build_the_configs():
    from icdlib.data import data_config
    from icdlib.data import pairs_config
    from icdlib.params import load_params

    params = load_params(ROOT / "params.yaml")
    assert data_config(params).counts == SIZES[data_config(params).size]
    assert pairs_config(params).size >= pairs_config(params).patch
    nested = data_config({"data": {"size": "tiny", "sources": {"photo_share": 0.25, "kinds": ["spectral"],
                                                                "weights": [1.0]}}})
    assert nested.sources.photo_share == 0.25 and nested.sources.kinds == ("spectral",)
    with pytest.raises(ValueError, match="data.sources"):
        data_config({"data": {"sources": {"colour": 1}}})


def test_photo_sources_never_cross_roles(tmp_path):
    from icdlib.data.sources import SKIMAGE_PHOTOS
    from icdlib.data import SourceConfig

    cfg = dataclasses.replace(TINY, training=6, reference=6, dev_queries=4, final_queries=0,
                              sources=SourceConfig(photo_share=1.0))
    manifest = build_benchmark(tmp_path, cfg, seed=0, progress=False)
    role_of = {f"photo:skimage:{n}": i % 3 for i, n in enumerate(SKIMAGE_PHOTOS)}
    assert {role_of[k] for k in manifest["source_kinds"]["training"]} == {0}
    assert {role_of[k] for k in manifest["source_kinds"]["reference"]} == {1}
    for q in manifest["queries"]:
        assert role_of[q["source_kind"]] == (1 if q["reference_id"] else 2)
