"""The DISC21 download as unpacked (nested folders) laid out flat by ``prepare``, and
parallel image validation with its cache. Every file is made here, in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from icdlib.data import Disc21, prepare, validation
from icdlib.data.build import main
from icdlib.data.raw import PrepareError
from icdlib.data.validation import CACHE_NAME


def _image(path, seed=0, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(a).save(path, format=fmt)
    return path


def _csv(path, rows):
    path.write_text("query_id,reference_id\n" + "".join(f"{q},{r}\n" for q, r in rows))


@pytest.fixture
def raw(tmp_path):
    """A tiny download in the official nested layout: 2 reference and 2 training archives,
    dev queries under images/, final queries at the top, both ground-truth files."""
    root = tmp_path / "download"
    for k, ids in enumerate([(0, 1), (2,)]):
        for i in ids:
            _image(root / f"references_{k}/images/references/R{i:06d}.jpg", seed=i)
    for k, ids in enumerate([(0, 1), (2, 3)]):
        for i in ids:
            _image(root / f"training_{k}/images/train/T{i:06d}.jpg", seed=10 + i)
    _image(root / "images/dev_queries/Q00000.jpg", seed=20)
    _image(root / "images/dev_queries/Q00001.png", seed=21, fmt="PNG")
    _image(root / "final_queries/Q50000.jpg", seed=22)
    _csv(root / "public_ground_truth.csv", [("Q00000", "R000002"), ("Q00001", "")])
    _csv(root / "final_ground_truth.csv", [("Q50000", "R000000")])
    return root


def _links(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_symlink())


def test_prepare_lays_out_the_nested_download_flat(raw, tmp_path, capsys):
    out = tmp_path / "flat"
    assert main(["prepare", "--raw", str(raw), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reference: 3 images (3 new links" in printed and "training: 4 images" in printed
    assert "public_ground_truth.csv" in printed
    # links only, no copies, and they resolve to the raw files
    assert all(p.is_symlink() for d in out.iterdir() if d.is_dir() for p in d.iterdir())
    assert os.path.samefile(out / "reference_images/R000002.jpg", raw / "references_1/images/references/R000002.jpg")
    d = Disc21(out)
    assert d.splits() == ["training", "reference", "dev_queries", "final_queries"]
    assert [i for i, _ in d.images("reference")] == ["R000000", "R000001", "R000002"]
    assert d.ground_truth("dev_queries") == [("Q00000", "R000002"), ("Q00001", None)]
    assert d.ground_truth("final_queries") == [("Q50000", "R000000")]
    counts = d.validate(workers=2)
    assert (counts["training"], counts["reference"], counts["dev_queries"], counts["final_queries"]) == (4, 3, 2, 1)
    assert counts["dev_queries_positives"] == 1 and counts["skipped"] == 0


def test_prepare_rerun_is_idempotent_and_follows_changes(raw, tmp_path):
    out = tmp_path / "flat"
    first = prepare(raw, out)
    links = _links(out)
    again = prepare(raw, out)
    assert _links(out) == links
    assert all(r["new"] == 0 and r["removed"] == 0 for r in again["splits"].values())
    assert {s: r["images"] for s, r in again["splits"].items()} == {s: r["images"] for s, r in first["splits"].items()}
    # a file gone from the download loses its link; a new one gains one
    (raw / "training_1/images/train/T000003.jpg").unlink()
    _image(raw / "training_1/images/train/T000009.jpg", seed=9)
    third = prepare(raw, out)
    assert third["splits"]["training"] == {"images": 4, "new": 1, "removed": 1}
    assert [i for i, _ in Disc21(out).images("training")] == ["T000000", "T000001", "T000002", "T000009"]


def test_prepare_refuses_a_duplicate_id_naming_both_files(raw, tmp_path):
    other = _image(raw / "references_1/images/references/R000000.jpg", seed=99)
    with pytest.raises(PrepareError, match=r"R000000 appears twice.*references_0.*R000000\.jpg and .*references_1"):
        prepare(raw, tmp_path / "flat")
    other.unlink()
    # one query id in both dev and final
    _image(raw / "final_queries/Q00000.jpg", seed=5)
    twice = r"Q00000 appears twice \(as (dev|final)_queries and (dev|final)_queries\): .*Q00000\.jpg and .*Q00000\.jpg"
    with pytest.raises(PrepareError, match=twice):
        prepare(raw, tmp_path / "flat")


def test_prepare_refuses_conflicts_in_out_and_ground_truth(raw, tmp_path, capsys):
    out = tmp_path / "flat"
    (out / "reference_images").mkdir(parents=True)
    _image(out / "reference_images/R000001.jpg", seed=3)  # a real file where a link should go
    assert main(["prepare", "--raw", str(raw), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "R000001.jpg already exists" in err and "Traceback" not in err
    _csv(raw / "images/dev_ground_truth.csv", [("Q00000", "")])
    with pytest.raises(PrepareError, match="two ground-truth files for dev_queries"):
        prepare(raw, tmp_path / "other")
    (raw / "images/dev_ground_truth.csv").unlink()
    _image(raw / "queries/Q00007.jpg")  # a query in no dev/final folder
    with pytest.raises(PrepareError, match=r"queries/Q00007\.jpg.*cannot tell dev from final"):
        prepare(raw, tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="nothere"):
        prepare(tmp_path / "nothere", out)


def test_disc21_on_a_raw_root_says_to_run_prepare(raw, capsys):
    with pytest.raises(FileNotFoundError, match=r"python -m icdlib\.data prepare --raw .*download --out"):
        Disc21(raw)
    assert main(["check", "--root", str(raw)]) == 1
    assert "icdlib.data prepare --raw" in capsys.readouterr().err


@pytest.fixture
def flat(raw, tmp_path):
    out = tmp_path / "flat"
    prepare(raw, out)
    return out


def _corrupt(path):
    """Cut a JPEG short, keeping nothing decodable past its header."""
    path.write_bytes(path.read_bytes()[:300])


def test_parallel_validate_finds_a_corrupt_image_raise_and_skip(flat, raw, tmp_path):
    _corrupt(raw / "references_0/images/references/R000001.jpg")
    with pytest.raises(ValueError, match=r"R000001\.jpg"):
        Disc21(flat).validate(workers=2, cache=tmp_path)
    d = Disc21(flat, on_error="skip")
    with pytest.warns(UserWarning, match="1 unreadable"):
        counts = d.validate(workers=2, cache=tmp_path)
    assert counts["reference"] == 2 and counts["skipped"] == 1
    assert "R000001" not in [i for i, _ in d.images("reference")]
    # the CLI names the file on one line
    proc = subprocess.run([sys.executable, "-m", "icdlib.data", "check", "--root", str(flat), "--workers", "2",
                           "--cache", str(tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "R000001.jpg" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.filterwarnings("ignore:.*skipped 1 ground-truth rows")  # the corrupt query's row
def test_workers_do_not_change_the_result(flat, raw):
    _corrupt(raw / "training_1/images/train/T000002.jpg")
    _corrupt(raw / "images/dev_queries/Q00001.png")
    results = []
    for workers in (1, 2):
        d = Disc21(flat, on_error="skip")
        with pytest.warns(UserWarning, match="2 unreadable"):
            counts = d.validate(workers=workers)
        results.append((counts, {s: d.images(s) for s in d.splits()}))
    assert results[0] == results[1]
    faults = validation.check_files(sorted(flat.rglob("*.*g")), workers=2, stop_at_first=False)
    assert sorted(p.name for p in faults) == ["Q00001.png", "T000002.jpg"]


def test_second_validate_decodes_nothing_and_rechecks_changed_files(flat, raw, tmp_path, monkeypatch):
    calls = []
    real = validation.check_image
    monkeypatch.setattr(validation, "check_image", lambda p: (calls.append(p), real(p))[1])
    counts = Disc21(flat).validate(workers=1, cache=tmp_path)
    assert len(calls) == 10 and (tmp_path / CACHE_NAME).is_file()
    calls.clear()
    assert Disc21(flat).validate(workers=1, cache=tmp_path) == counts
    assert calls == []  # every image trusted from the cache
    # corrupt a file's bytes, keeping its size and mtime: still trusted (size + mtime is the contract)
    target = raw / "references_0/images/references/R000000.jpg"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[100:] = b"\0" * (len(data) - 100)
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert Disc21(flat).validate(workers=1, cache=tmp_path) == counts and calls == []
    # touching its mtime makes it re-checked, and only it
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ValueError, match=r"R000000\.jpg"):
        Disc21(flat).validate(workers=1, cache=tmp_path)
    assert [p.name for p in calls] == ["R000000.jpg"]
    calls.clear()
    # the fault is remembered too: the next run reports it without decoding anything
    with pytest.raises(ValueError, match=r"R000000\.jpg"):
        Disc21(flat).validate(workers=1, cache=tmp_path)
    assert calls == []


def test_cache_is_written_atomically_and_a_broken_one_is_ignored(flat, tmp_path):
    cache = tmp_path / "v.json"
    Disc21(flat).validate(cache=cache)
    assert cache.is_file() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    cache.write_text("{not json")
    with pytest.warns(UserWarning, match=r"v\.json: unreadable validation cache"):
        counts = Disc21(flat).validate(cache=cache)
    assert counts["reference"] == 3
    assert '"version":1' in cache.read_text()


def test_no_cache_keeps_the_old_behaviour(flat, tmp_path):
    Disc21(flat).validate()
    assert not list(tmp_path.rglob(CACHE_NAME))


def test_broken_link_is_named(flat, raw):
    (raw / "final_queries/Q50000.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"broken link .*Q50000\.jpg"):
        Disc21(flat).images("final_queries")


def _die(paths):
    os._exit(3)  # a checking process killed (out of memory, say)


@pytest.mark.skipif(sys.platform != "linux", reason="needs fork to patch the pool's function")
def test_a_dead_checking_process_is_named_not_a_traceback(flat, monkeypatch):
    monkeypatch.setattr(validation, "_check_chunk", _die)
    paths = [p for _, p in Disc21(flat).images("training")]
    with pytest.raises(OSError, match=r"checking process died .*T00000\d\.jpg"):
        validation.check_files(paths, workers=2)
