"""python -m icdlib.search: folders in, matches / features / reusable index / index.html out;
calibration written by evaluate --calibrate and read by --threshold auto."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import icdlib.eval.engine as ev
import icdlib.eval.folder_search as fs
from icdlib.eval.calibration import (calibration_path, read_calibration, threshold_at_precision)
from icdlib.eval.engine import evaluate_benchmark
from icdlib.eval.folder_search import list_images, run_search
from icdlib.eval.metrics import PrCurve, evaluate_files
from icdlib.eval.retrieval import EvalConfig, build_index
from icdlib.search import main
from test_evaluate import ColourMatcher, MeanColour, _benchmark, _smooth


@pytest.fixture
def fake_models(monkeypatch, tmp_path):
    """Colour-mean descriptor and matcher behind stand-in checkpoint files; returns their paths."""
    def load(path, kind, device="cpu"):
        return (MeanColour() if kind == "descriptor" else ColourMatcher()), {"kind": kind, "config": {"img_size": 32}}

    monkeypatch.setattr(ev, "load_checkpoint", load)
    monkeypatch.setattr(fs, "load_checkpoint", load)
    d, m = tmp_path / "desc.pt", tmp_path / "match.pt"
    d.write_bytes(b"descriptor stand-in")
    m.write_bytes(b"matcher stand-in")
    return d, m


def _folders(tmp_path):
    """The _benchmark images as two plain folders, queries nested in sub-folders."""
    bench = _benchmark(tmp_path / "bench")
    q = tmp_path / "my queries"
    (q / "a" / "b").mkdir(parents=True)
    for i, p in enumerate(sorted((bench / "query_images").iterdir())):
        p.rename(q / ("a/b" if i % 2 else "a") / p.name)
    return q, bench / "reference_images", bench


CFG = EvalConfig(k=3, num_workers=0)


def test_list_images_is_recursive_with_relative_ids_and_skips_non_images(tmp_path):
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("x/y/a.webp", "b.BMP", "x/c.tif", ".hidden/d.png", ".e.png"):
        _smooth(1).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [i for i, _ in list_images(tmp_path)] == ["b.BMP", "x/c.tif", "x/y/a.webp"]
    with pytest.raises(ValueError, match="no image files under"):
        list_images(_empty(tmp_path))
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        list_images(tmp_path / "nope")


def _empty(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def test_search_finds_the_copies_and_writes_every_output(tmp_path, fake_models, capsys):
    desc, _ = fake_models
    q, r, _ = _folders(tmp_path)
    out = tmp_path / "out"
    assert main(["--queries", str(q), "--references", str(r), "--descriptor", str(desc), "--k", "3",
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_queries"] == 4 and summary["n_references"] == 5 and summary["n_matches"] == 12
    m = pd.read_csv(out / "matches.csv", dtype={"query_id": str, "reference_id": str})
    assert list(m.columns) == ["query_id", "reference_id", "score", "rank"]
    top = m[m["rank"] == 1].set_index("query_id")["reference_id"].to_dict()
    assert top["a/Q000.jpg"] == "R003.png" and top["a/b/Q001.jpg"] == "R001.png" and top["a/b/Q003.jpg"] == "R000.png"
    for _, g in m.groupby("query_id"):  # ranks 1..k follow the score
        assert list(g["rank"]) == [1, 2, 3] and g["score"].is_monotonic_decreasing
    assert np.load(out / "features" / "queries.npy").shape == (4, 12)
    assert (out / "features" / "references.ids.txt").read_text().split() == [f"R00{i}.png" for i in range(5)]
    page = (out / "index.html").read_text()
    assert page.count('<img src="data:image/jpeg;base64,') == 4 * (1 + 3)
    assert "http" not in page  # self-contained: nothing to fetch


def test_reference_index_is_reused_without_embedding_references(tmp_path, fake_models, monkeypatch):
    desc, _ = fake_models
    q, r, _ = _folders(tmp_path)
    first = run_search(q, desc, tmp_path / "first", r, cfg=CFG)
    seen = []
    real_embed = fs.embed
    monkeypatch.setattr(fs, "embed", lambda model, paths, *a, **kw: seen.append(len(paths)) or
                        real_embed(model, paths, *a, **kw))
    second = run_search(q, desc, tmp_path / "second", reference_index=tmp_path / "first", cfg=CFG)
    assert seen == [4]  # queries only
    pd.testing.assert_frame_equal(first.matches, second.matches)
    assert second.reference_paths["R003.png"].is_file()  # thumbnails come from the recorded folder
    other = tmp_path / "other.pt"
    other.write_bytes(b"another descriptor")
    with pytest.raises(ValueError, match="was built with descriptor"):
        run_search(q, other, tmp_path / "third", reference_index=tmp_path / "first", cfg=CFG)
    with pytest.raises(FileNotFoundError, match="incomplete"):
        run_search(q, desc, tmp_path / "third", reference_index=tmp_path / "second", cfg=CFG)


def test_matcher_rescores_and_reranks(tmp_path, fake_models):
    desc, match = fake_models
    q, r, _ = _folders(tmp_path)
    res = run_search(q, desc, tmp_path / "out", r, matcher=match, cfg=CFG)
    assert res.matches["score"].between(0, 1).all()
    for _, g in res.matches.groupby("query_id"):
        assert g["score"].is_monotonic_decreasing and list(g["rank"]) == [1, 2, 3]


def test_ivf_pq_on_too_few_references_says_so(tmp_path, fake_models, capsys):
    desc, _ = fake_models
    q, r, _ = _folders(tmp_path)
    assert main(["--queries", str(q), "--references", str(r), "--descriptor", str(desc),
                 "--index", "IVF1024,PQ4", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot be trained on 5 references" in err and "--index Flat" in err
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = build_index(x, "IVF16,PQ4", nprobe=16)  # enough vectors: trains and searches
    _, found = idx.search(x[:20], 1)
    assert (found[:, 0] == np.arange(20)).mean() > 0.5


def test_threshold_at_precision_by_hand():
    # ranks: T T F T F -> precision 1, 1, .667, .75, .6; recall over 4 positives .25 .5 .5 .75 .75
    curve = PrCurve(np.array([1, 1, 2 / 3, 0.75, 0.6]), np.array([0.25, 0.5, 0.5, 0.75, 0.75]),
                    np.array([0.9, 0.8, 0.7, 0.6, 0.5]))
    assert threshold_at_precision(curve, 0.9) == (0.8, 0.5)
    assert threshold_at_precision(curve, 0.7) == (0.6, 0.75)
    assert threshold_at_precision(PrCurve(np.array([0.5]), np.array([0.1]), np.array([0.3]))) == (None, 0.0)


def test_threshold_auto_uses_the_calibration_evaluate_wrote(tmp_path, fake_models, capsys):
    desc, _ = fake_models
    q, r, bench = _folders(tmp_path)
    assert main(["--queries", str(q), "--references", str(r), "--descriptor", str(desc),
                 "--threshold", "auto", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no calibration for" in err and "--calibrate" in err
    # calibrate on the benchmark (queries restored to its layout)
    cal_bench = _benchmark(tmp_path / "cal")
    res = evaluate_benchmark(cal_bench, descriptor=desc, cfg=CFG, calibrate=True)
    cal = read_calibration(desc)
    assert cal.threshold == res.metrics.threshold_at_rp90 and cal.recall == res.metrics.RP90 == 1.0
    assert cal.score == "descriptor cosine" and calibration_path(desc).name == "desc.pt.calibration.json"
    assert main(["--queries", str(q), "--references", str(r), "--descriptor", str(desc),
                 "--threshold", "auto", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr()
    assert "threshold auto: score" in out.err and "precision 90%" in out.err
    assert json.loads(out.out)["threshold"] == cal.threshold
    copies = pd.read_csv(tmp_path / "o" / "copies.csv")
    assert set(copies["query_id"]) == {"a/Q000.jpg", "a/b/Q001.jpg", "a/b/Q003.jpg"}  # Q002 is a distractor
    desc.write_bytes(b"retrained")  # the calibration no longer describes this checkpoint
    assert main(["--queries", str(q), "--references", str(r), "--descriptor", str(desc),
                 "--threshold", "auto", "--out", str(tmp_path / "o")]) == 2
    assert "SHA-256 differs" in capsys.readouterr().err
    assert main(["--queries", str(q), "--references", str(r), "--descriptor", str(desc),
                 "--threshold", "high", "--out", str(tmp_path / "o")]) == 2
    assert "'auto' or a number" in capsys.readouterr().err


def test_search_uap_equals_evaluate_on_a_disc21_folder(tmp_path):
    """Same model, same k, Flat index: search's matches scored against the ground truth
    give evaluate's uAP (search ids are file names, the ground truth's are stems)."""
    from icdlib.checkpoints import save_checkpoint
    from icdlib.models import build_descriptor

    root = tmp_path / "tiny"
    subprocess.run([sys.executable, "-m", "icdlib.data", "build", "--out", str(root), "--size", "tiny"],
                   check=True, capture_output=True)
    desc = save_checkpoint(tmp_path / "d.pt", build_descriptor("vit_tiny_cpu", seed=0))
    cfg = EvalConfig(k=10, num_workers=0)
    ev_res = evaluate_benchmark(root, descriptor=desc, split="dev_queries", cfg=cfg)
    res = run_search(root / "dev_queries", desc, tmp_path / "out", root / "reference_images", cfg=cfg)
    m = pd.read_csv(tmp_path / "out" / "matches.csv", dtype={"query_id": str, "reference_id": str})
    for col in ("query_id", "reference_id"):
        m[col] = m[col].str.rsplit(".", n=1).str[0]
    m[["query_id", "reference_id", "score"]].to_csv(tmp_path / "preds.csv", index=False)
    metrics, _ = evaluate_files(tmp_path / "preds.csv", root / "dev_ground_truth.csv")
    assert len(res.matches) == ev_res.metrics.n_predictions
    assert metrics.uAP == pytest.approx(ev_res.metrics.uAP, abs=1e-12)
    assert metrics.n_true_predictions == ev_res.metrics.n_true_predictions


def test_gallery_escapes_file_names(tmp_path, fake_models):
    desc, _ = fake_models
    q = tmp_path / "q"
    q.mkdir()
    Image.open(next((_benchmark(tmp_path / "b") / "query_images").iterdir())).save(q / "<script>x.png")
    assert main(["--queries", str(q), "--references", str(tmp_path / "b" / "reference_images"),
                 "--descriptor", str(desc), "--out", str(tmp_path / "o")]) == 0
    page = (tmp_path / "o" / "index.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;x.png" in page
