"""The explorer's results tab: an evaluation folder, stepped through query by query;
the explorer's tabs and chain export."""

import json

import numpy as np
import pytest

import icdlib.eval.engine as ev
from icdlib import edits
from icdlib.checkpoints import save_checkpoint
from icdlib.eval.engine import evaluate_benchmark
from icdlib.eval.retrieval import EvalConfig
from icdlib.models import build_descriptor
from icdlib.viz.results import ResultsBrowser, explorer_with_results, load_eval_run
from test_evaluate import ColourMatcher, MeanColour, _benchmark


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    """An evaluation of the colour-mean descriptor at k=2 on the 4-query benchmark:
    Q000->R003, Q001->R001, Q003->R000 found at rank 1, Q002 a distractor."""
    tmp = tmp_path_factory.mktemp("results")
    data = _benchmark(tmp / "bench")
    mp = pytest.MonkeyPatch()
    mp.setattr(ev, "load_checkpoint", lambda p, kind, device="cpu": (
        MeanColour() if kind == "descriptor" else ColourMatcher(), {"kind": kind, "config": {"img_size": 32}}))
    try:
        evaluate_benchmark(data, descriptor="fake.pt", cfg=EvalConfig(k=2, num_workers=0), out=tmp / "eval")
    finally:
        mp.undo()
    return tmp / "eval"


def test_eval_run_marks_copies_false_positives_and_misses(eval_dir, tmp_path):
    run = load_eval_run(eval_dir)
    top = run.top("Q000", 2)
    assert list(top["reference_id"])[0] == "R003" and list(top["copy"]) == [True, False]
    assert list(top["rank"]) == [1, 2]
    assert run.queries("false positive at rank 1") == ["Q002"]  # only the distractor
    assert run.missed("Q000") == [] and run.queries("missed copies") == []
    # a ground truth naming a reference outside Q001's top 2 makes it a missed copy
    other = sorted({f"R00{i}" for i in range(5)} - set(run.top("Q001", 2)["reference_id"]))[0]
    gt = tmp_path / "gt.csv"
    gt.write_text(f"query_id,reference_id\nQ000,R003\nQ001,{other}\nQ002,\nQ003,R000\n")
    run2 = load_eval_run(eval_dir, gt)
    assert run2.missed("Q001") == [other] and run2.queries("missed copies") == ["Q001"]
    assert run2.queries("false positive at rank 1") == ["Q001", "Q002"]


def test_eval_run_of_a_query_with_two_references_marks_and_misses_each(eval_dir, tmp_path):
    run = load_eval_run(eval_dir)
    found = run.top("Q000", 2)
    other = min({f"R00{i}" for i in range(5)} - set(found["reference_id"]))
    gt = tmp_path / "gt.csv"  # Q000 copies R003 (its rank 1), R000 at rank 2 and a reference it never predicts
    gt.write_text(f"query_id,reference_id\nQ000,R003\nQ000,{found['reference_id'][1]}\nQ000,{other}\n"
                  "Q001,R001\nQ002,\nQ003,R000\n")
    run2 = load_eval_run(eval_dir, gt)
    assert run2.copies["Q000"] == {"R003", found["reference_id"][1], other}
    assert list(run2.top("Q000", 2)["copy"]) == [True, True]
    assert run2.missed("Q000") == [other] and run2.queries("missed copies") == ["Q000"]
    assert run2.queries("false positive at rank 1") == ["Q002"]

def test_results_browser_steps_through_queries(eval_dir):
    rb = ResultsBrowser(str(eval_dir), k=2)
    assert rb.current == "Q000" and rb.hits.value.count("<img") == 1 + 2
    assert rb.hits.value.count("#2ca02c") == 1 and rb.hits.value.count("#d62728") == 1  # one copy, one not
    rb.next_button.click()
    assert rb.current == "Q001" and "query 2 of 4" in rb.status.value
    rb.controls.view.value = "false positive at rank 1"
    assert rb.current == "Q002" and "distractor" in rb.status.value
    assert rb.hits.value.count("#2ca02c") == 0
    rb.controls.view.value = "missed copies"
    assert rb.current is None and "no query in view" in rb.status.value


def test_results_browser_reports_a_bad_folder(tmp_path):
    rb = ResultsBrowser()
    rb.controls.folder.value = str(tmp_path)
    rb.load_button.click()
    assert "eval_config.json" in rb.status.value and rb.run is None


def test_affinity_of_two_descriptors_side_by_side(eval_dir, tmp_path):
    small = dict(img_size=32, patch_size=8, depth=1, embed_dim=24, num_heads=2, desc_dim=8)
    a = save_checkpoint(tmp_path / "a.pt", build_descriptor("vit_tiny_cpu", seed=0, **small))
    b = save_checkpoint(tmp_path / "b.pt", build_descriptor("vit_tiny_cpu", seed=1, **small))
    rb = ResultsBrowser(str(eval_dir), str(a), str(b), k=2)
    assert rb.controls.pair.options == ("R003", rb.run.top("Q000", 2)["reference_id"][1])
    rb.compare_button.click()
    assert "color:#c00" not in rb.status.value, rb.status.value
    ta, tb = rb.affinity_a.layout.title.text, rb.affinity_b.layout.title.text
    assert ta.startswith("a.pt: descriptor cosine") and tb.startswith("b.pt: descriptor cosine") and ta != tb
    assert sum(type(t).__name__ == "Heatmap" for t in rb.affinity_a.data) == 3


def test_explorer_is_tabbed_and_exports_its_chain_as_json(eval_dir):
    ex = explorer_with_results(folder=str(eval_dir))
    titles = [ex.widget.get_title(i) for i in range(len(ex.widget.children))]
    assert titles == ["edit chain", "trace", "patch overlap", "model", "results"]
    assert ex.results.current == "Q000"
    spec = json.loads(ex.export_chain())
    assert spec["reference"] is None and spec["query"] == ex.query_chain.specs()
    again, _ = edits.apply(ex.source, spec["query"])
    np.testing.assert_array_equal(np.asarray(again), np.asarray(ex.query))
    assert ex.chain_json.value == ex.export_chain()
    assert ex.controls.size.continuous_update is False
