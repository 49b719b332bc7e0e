import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import icdlib.eval.engine as ev
from icdlib.eval import metrics as metrics
from icdlib.eval.cli import main
from icdlib.eval.engine import evaluate_benchmark, pick_split
from icdlib.eval.hashes import missing_reason
from icdlib.eval.retrieval import EvalConfig

# query id -> (reference index it copies, or None for a distractor)
COPIES = {"Q000": 3, "Q001": 1, "Q002": None, "Q003": 0}


def _smooth(seed, size=(64, 64)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)


def _benchmark(root, with_training=False):
    """A 5-reference, 4-query DISC21 folder (single query_images/ layout)."""
    (root / "reference_images").mkdir(parents=True)
    (root / "query_images").mkdir()
    for i in range(5):
        _smooth(100 + i).save(root / "reference_images" / f"R{i:03d}.png")
    rows = ["query_id,reference_id"]
    for q, r in COPIES.items():
        im = _smooth(100 + r, size=(64, 64)).resize((72, 54)) if r is not None else _smooth(999)
        im.save(root / "query_images" / f"{q}.jpg", quality=90)
        rows.append(f"{q},{'' if r is None else f'R{r:03d}'}")
    (root / "ground_truth.csv").write_text("\n".join(rows) + "\n")
    if with_training:
        (root / "training_images").mkdir()
        for i in range(6):
            _smooth(500 + i).save(root / "training_images" / f"T{i:03d}.png")
    return root


class MeanColour(torch.nn.Module):
    """Fake descriptor: 2x2 grid of channel means, L2-normalised -> [B, 12]."""

    def forward(self, x):
        return torch.nn.functional.normalize(torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1), dim=1)


class ColourMatcher(torch.nn.Module):
    """Fake matcher: logit = 3 - 6 * mean |2x2 colour grid(q) - grid(r)|."""

    def forward(self, q, r):
        g = torch.nn.functional.adaptive_avg_pool2d
        return 3.0 - 6.0 * (g(q, 2) - g(r, 2)).abs().mean(dim=(1, 2, 3))


@pytest.fixture
def fake_models(monkeypatch):
    def load(path, kind, device="cpu"):
        model = MeanColour() if kind == "descriptor" else ColourMatcher()
        return model, {"kind": kind, "config": {"img_size": 32}}

    monkeypatch.setattr(ev, "load_checkpoint", load)


def test_pick_split_prefers_single_layout_and_rejects_unknown():
    assert pick_split(["reference", "dev_queries", "queries"], None) == "queries"
    assert pick_split(["reference", "final_queries", "dev_queries"], None) == "dev_queries"
    with pytest.raises(ValueError, match="split 'final_queries' not available"):
        pick_split(["reference", "queries"], "final_queries")


def test_descriptor_pipeline_finds_every_copy(tmp_path, fake_models):
    data = _benchmark(tmp_path / "bench")
    res = evaluate_benchmark(data, descriptor="fake.pt", cfg=EvalConfig(k=2, num_workers=0), out=tmp_path / "out")
    top = res.predictions.groupby("query_id").head(1).set_index("query_id")["reference_id"].to_dict()
    assert {q: top[q] for q, r in COPIES.items() if r is not None} == {"Q000": "R003", "Q001": "R001", "Q003": "R000"}
    assert res.metrics.n_positives == 3 and res.metrics.n_predictions == 8
    # every copy is found at rank 1 of its query, so per-query AP is 1
    assert res.metrics.mAP == pytest.approx(1.0)
    assert (tmp_path / "out" / "features" / "queries.npy").is_file()
    saved = json.loads((tmp_path / "out" / "eval_config.json").read_text())
    assert saved["eval"]["k"] == 2 and saved["descriptor_img_size"] == 32


def test_a_collage_query_with_two_references_scores_both_pairs(tmp_path, fake_models):
    data = _benchmark(tmp_path / "bench")
    gt = tmp_path / "collage.csv"  # Q001 copies R001 and R002 (a collage); 4 pairs, Q002 a distractor
    gt.write_text("query_id,reference_id\nQ000,R003\nQ001,R001\nQ001,R002\nQ002,\nQ003,R000\n")
    out = tmp_path / "out"
    res = evaluate_benchmark(data, descriptor="fake.pt", ground_truth=gt, cfg=EvalConfig(k=5, num_workers=0), out=out)
    assert res.metrics.n_positives == 4 and res.metrics.n_true_predictions == 4  # k = 5: every pair predicted
    assert res.metrics.n_queries == 4
    assert res.metrics.to_dict() == metrics.evaluate_files(out / "predictions.csv", gt)[0].to_dict()
    assert ev.Benchmark(data, ground_truth=gt).n_positives == 4

def test_written_metrics_equal_the_metrics_cli_on_written_files(tmp_path, fake_models, capsys):
    data = _benchmark(tmp_path / "bench", with_training=True)
    out = tmp_path / "out"
    res = evaluate_benchmark(data, descriptor="fake.pt", auxiliary=data, cfg=EvalConfig(k=3, num_workers=0), out=out)
    written = json.loads((out / "metrics.json").read_text())
    assert metrics.main(["--predictions", str(out / "predictions.csv"),
                         "--ground-truth", str(data / "ground_truth.csv")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert written == printed == res.metrics.to_dict()


def test_cli_matches_library_function(tmp_path, fake_models, capsys):
    data = _benchmark(tmp_path / "bench")
    res = evaluate_benchmark(data, descriptor="fake.pt", matcher="fake.pt", cfg=EvalConfig(num_workers=0))
    assert main(["--data", str(data), "--descriptor", "fake.pt", "--matcher", "fake.pt",
                 "--out", str(tmp_path / "out")]) == 0
    cli = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert cli == res.metrics.to_dict()
    assert (tmp_path / "out" / "candidates.csv").is_file()
    # matcher scores are probabilities
    assert res.predictions["score"].between(0, 1).all()


def test_normalisation_shifts_each_query_by_its_auxiliary_bias(tmp_path, fake_models):
    data = _benchmark(tmp_path / "bench", with_training=True)
    cfg = EvalConfig(k=2, num_workers=0)
    raw = evaluate_benchmark(data, descriptor="fake.pt", cfg=cfg).predictions
    norm = evaluate_benchmark(data, descriptor="fake.pt", auxiliary=data, cfg=cfg).predictions
    key = ["query_id", "reference_id"]
    both = raw.merge(norm, on=key, suffixes=("_raw", "_norm"))
    assert len(both) == len(raw)
    shift = (both["score_raw"] - both["score_norm"]).groupby(both["query_id"]).agg(["min", "max"])
    # one constant per query (its auxiliary bias), positive for these all-positive features
    np.testing.assert_allclose(shift["min"], shift["max"], atol=1e-6)
    assert (shift["min"] > 0).all()


@pytest.mark.skipif(missing_reason("pdq") is not None, reason=str(missing_reason("pdq")))
def test_pdq_baseline_cli_writes_predictions_and_metrics(tmp_path, capsys):
    data = _benchmark(tmp_path / "bench")
    assert main(["--data", str(data), "--baseline", "pdq", "--out", str(tmp_path / "out")]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(m) >= {"uAP", "RP90", "mAP", "n_predictions", "n_positives"}
    assert m["n_predictions"] == 4 * 5 and m["n_positives"] == 3  # k=10 clipped to 5 references
    # resized and recompressed copies of smooth images keep their PDQ hash nearly intact
    assert m["mAP"] == pytest.approx(1.0)


def test_cli_reads_the_working_directory_params_unless_given_one(tmp_path, monkeypatch, capsys):
    data = _benchmark(tmp_path / "bench")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("eval: {k: 2}\n")
    (tmp_path / "other.yaml").write_text("eval: {k: 3}\n")

    def n_predictions(*extra):
        assert main(["--data", str(data), "--baseline", "pdq", "--out", "out", *extra]) == 0
        summary = json.loads(capsys.readouterr().out)
        return summary["n_predictions"], summary["params"]

    assert n_predictions() == (4 * 2, "params.yaml")  # ./params.yaml's eval.k
    assert n_predictions("--params", "other.yaml") == (4 * 3, "other.yaml")
    (tmp_path / "params.yaml").unlink()
    assert n_predictions() == (4 * 5, "built-in defaults")  # k=10, clipped to the 5 references
    (tmp_path / "params.yaml").write_text("eval: {kk: 2}\n")
    assert main(["--data", str(data), "--baseline", "pdq", "--out", "out"]) == 2
    assert "params.yaml:eval: unknown key(s) kk" in capsys.readouterr().err


def test_cli_reports_bad_arguments_with_exit_code_2(tmp_path, capsys):
    data = _benchmark(tmp_path / "bench")
    assert main(["--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "exactly one of descriptor, baseline or candidates" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "missing"), "--baseline", "pdq", "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err


def test_wrong_checkpoint_kind_is_rejected(tmp_path, monkeypatch):
    import icdlib.eval.engine

    monkeypatch.setattr(icdlib.eval.engine, "load_model",
                        lambda p, device="cpu", what="": (MeanColour(), {"kind": "matcher"}))
    data = _benchmark(tmp_path / "bench")
    (tmp_path / "m.pt").write_bytes(b"stand-in")
    with pytest.raises(ValueError, match="holds a 'matcher' model, expected 'descriptor'"):
        evaluate_benchmark(data, descriptor=tmp_path / "m.pt")


def test_auxiliary_can_be_a_bare_image_folder(tmp_path, fake_models):
    data = _benchmark(tmp_path / "bench", with_training=True)
    cfg = EvalConfig(k=2, num_workers=0)
    a = evaluate_benchmark(data, descriptor="fake.pt", auxiliary=data, cfg=cfg).predictions
    b = evaluate_benchmark(data, descriptor="fake.pt", auxiliary=data / "training_images", cfg=cfg).predictions
    np.testing.assert_allclose(a["score"], b["score"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no auxiliary images"):
        evaluate_benchmark(data, descriptor="fake.pt", auxiliary=tmp_path / "empty", cfg=cfg)
    with pytest.raises(FileNotFoundError, match="auxiliary folder not found"):
        evaluate_benchmark(data, descriptor="fake.pt", auxiliary=tmp_path / "nope", cfg=cfg)


def test_matcher_rescores_a_candidate_file(tmp_path, fake_models):
    data = _benchmark(tmp_path / "bench")
    cand = tmp_path / "cand.csv"
    cand.write_text("query_id,reference_id,score\nQ000,R003,0.1\nQ000,R002,0.9\nQ001,R001,0.5\n")
    res = evaluate_benchmark(data, matcher="fake.pt", candidates=cand, cfg=EvalConfig(num_workers=0))
    s = res.predictions.set_index(["query_id", "reference_id"])["score"]
    # the colour matcher prefers the true copy whatever the candidate file's scores
    assert s[("Q000", "R003")] > s[("Q000", "R002")]
    assert res.metrics.n_predictions == 3
    with pytest.raises(ValueError, match="give a matcher"):
        evaluate_benchmark(data, candidates=cand)


def test_cli_lce_views_reach_the_matcher_rescoring(tmp_path, fake_models, capsys):
    data = _benchmark(tmp_path / "bench")
    cand = tmp_path / "cand.csv"
    cand.write_text("query_id,reference_id,score\nQ000,R003,0.1\nQ000,R002,0.9\nQ001,R001,0.5\n")
    scores = {}
    for views in ("full", "light"):
        out = tmp_path / views
        assert main(["--data", str(data), "--matcher", "fake.pt", "--candidates", str(cand), "--lce",
                     "--lce-views", views, "--out", str(out)]) == 0
        assert json.loads((out / "eval_config.json").read_text())["eval"]["lce_views"] == views
        want = evaluate_benchmark(data, matcher="fake.pt", candidates=cand,
                                  cfg=EvalConfig(num_workers=0, lce=True, lce_views=views)).predictions
        got = pd.read_csv(out / "predictions.csv", dtype={"query_id": str, "reference_id": str})
        np.testing.assert_allclose(got.sort_values(["query_id", "reference_id"])["score"],
                                   want.sort_values(["query_id", "reference_id"])["score"], rtol=1e-6)
        scores[views] = want["score"].to_numpy()
    assert not np.allclose(scores["full"], scores["light"])  # different view sets, different maxima
    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(data), "--matcher", "fake.pt", "--candidates", str(cand), "--lce-views", "most",
              "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "'most'" in capsys.readouterr().err


def test_real_random_init_checkpoints_run_end_to_end(tmp_path, capsys):
    from icdlib.models import build_descriptor, build_matcher
    from icdlib.checkpoints import save_checkpoint

    torch.manual_seed(0)  # random init only; the check is the pipeline, not the scores
    desc = save_checkpoint(tmp_path / "d.pt", build_descriptor("vit_tiny_cpu", img_size=48, depth=1,
                                                                embed_dim=48, desc_dim=16))
    match = save_checkpoint(tmp_path / "m.pt", build_matcher("vit_tiny_cpu", img_size=48, embed_dim=48,
                                                             encoder_depth=1, fusion_depth=1))
    data = _benchmark(tmp_path / "bench", with_training=True)
    out = tmp_path / "out"
    assert main(["--data", str(data), "--descriptor", str(desc), "--matcher", str(match),
                 "--auxiliary", str(data), "--out", str(out)]) == 0
    cfg = json.loads((out / "eval_config.json").read_text())
    assert cfg["descriptor_img_size"] == 48 and cfg["matcher_img_size"] == 48
    assert np.load(out / "features" / "reference.npy").shape == (5, 16)
    written = json.loads((out / "metrics.json").read_text())
    res = evaluate_benchmark(data, descriptor=desc, matcher=match, auxiliary=data, cfg=EvalConfig(num_workers=0))
    assert written == res.metrics.to_dict()
    assert written["n_predictions"] == 4 * 5 and 0.0 <= written["uAP"] <= 1.0


@pytest.mark.slow
def test_tiny_generated_benchmark_dev_split_scores_like_the_metrics_cli(tmp_path, capsys):
    root = tmp_path / "tiny"
    subprocess.run([sys.executable, "-m", "icdlib.data", "build", "--out", str(root), "--size", "tiny"],
                   cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True)
    out = tmp_path / "out"
    assert main(["--data", str(root), "--baseline", "phash", "--split", "dev_queries", "--out", str(out)]) == 0
    capsys.readouterr()
    assert metrics.main(["--predictions", str(out / "predictions.csv"),
                         "--ground-truth", str(root / "dev_ground_truth.csv")]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((out / "metrics.json").read_text())


def test_without_ground_truth_only_predictions_are_written(tmp_path, fake_models):
    data = _benchmark(tmp_path / "bench")
    out = tmp_path / "out"
    evaluate_benchmark(data, descriptor="fake.pt", cfg=EvalConfig(num_workers=0), out=out)
    assert (out / "metrics.json").is_file()
    (data / "ground_truth.csv").unlink()
    res = evaluate_benchmark(data, descriptor="fake.pt", cfg=EvalConfig(num_workers=0), out=out)
    assert res.metrics is None and res.curve is None
    assert (out / "predictions.csv").is_file() and not (out / "metrics.json").exists()
