"""A built benchmark's copy query beside its reference with its trace (icdlib.viz.queries), and the
explorer's ``benchmark`` source that opens one."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from icdlib.data import BuildConfig, build_benchmark, render
from icdlib.data.photo_bench import PhotoBuildConfig, build_photo_benchmark
from icdlib.viz import queries
from icdlib.viz.explorer import Explorer, VizConfig


@pytest.fixture(scope="module")
def photo_bench(tmp_path_factory):
    """A photo benchmark whose chains are geometric only, so colours survive the edits."""
    photos = tmp_path_factory.mktemp("photos")
    for i in range(10):
        render(("spectral", "dead_leaves", "mixed")[i % 3], 40 + i, (150, 110)).save(photos / f"p{i}.png")
    out = tmp_path_factory.mktemp("bench")
    build_photo_benchmark(photos, out, PhotoBuildConfig(queries=12, jpeg_quality=95, edit_families=("geometric",)),
                          seed=3, progress=False)
    return out


@pytest.fixture(scope="module")
def embedded_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    build_benchmark(out, BuildConfig(size="tiny", workers=1), seed=0, progress=False)
    return out


def _bilinear(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``img`` (float [H, W, 3]) at continuous points ``xy`` (pixel centres at +0.5), bilinear."""
    x, y = xy[:, 0] - 0.5, xy[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    h, w = img.shape[:2]
    c = lambda yy, xx: img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]  # noqa: E731
    return (c(y0, x0) * (1 - fx) * (1 - fy) + c(y0, x0 + 1) * fx * (1 - fy)
            + c(y0 + 1, x0) * (1 - fx) * fy + c(y0 + 1, x0 + 1) * fx * fy)


def test_the_trace_points_each_stored_query_pixel_at_the_reference_pixel_it_shows(photo_bench):
    """Independent of the replay: the stored query's colours, looked up through the trace in
    the stored reference, come back (geometric edits keep colours; JPEG and resampling blur them)."""
    records = queries.copy_records(photo_bench)
    assert records and all(r["reference_id"] for r in records)
    for i in range(len(records)):
        copy = queries.load_copy(photo_bench, i)
        assert copy.trace.size == copy.query.size and copy.trace.source_size == copy.reference.size
        xy = copy.trace.to_dense()
        ok = np.isfinite(xy).all(-1)
        inner = np.zeros_like(ok)
        inner[3:-3, 3:-3] = True  # away from image borders and resampling seams
        keep = ok & inner
        if keep.sum() < 200:
            continue
        q = np.asarray(copy.query, np.float64)[keep]
        r = _bilinear(np.asarray(copy.reference, np.float64), xy[keep])
        assert np.median(np.abs(q - r)) < 12, copy.query_id
        # and a wrong trace (the reference flipped left-right) does not match
        flipped = _bilinear(np.asarray(copy.reference, np.float64)[:, ::-1], xy[keep])
        assert np.median(np.abs(q - flipped)) > np.median(np.abs(q - r)) + 5


def test_copies_are_picked_by_index_or_id_and_bad_picks_name_themselves(photo_bench):
    records = queries.copy_records(photo_bench, "dev_queries")
    first = queries.load_copy(photo_bench, records[0]["query_id"])
    assert first.query_id == records[0]["query_id"] and first.split == "dev_queries"
    typical = queries.typical_copy(photo_bench)
    fractions = sorted(r["traced_fraction"] for r in queries.copy_records(photo_bench))
    assert queries.copy_records(photo_bench)[typical]["traced_fraction"] == fractions[(len(fractions) - 1) // 2]
    with pytest.raises(ValueError, match="#99 outside"):
        queries.load_copy(photo_bench, 99)
    with pytest.raises(ValueError, match="'Q99999' is no copy query"):
        queries.load_copy(photo_bench, "Q99999")


def test_a_folder_without_manifest_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        queries.load_copy(tmp_path)


def test_the_embedded_benchmark_s_copies_load_too(embedded_bench):
    copy = queries.load_copy(embedded_bench, 0)
    assert copy.trace.size == copy.query.size and copy.reference.size == (128, 128)


def test_copy_figures_draw_the_pair_the_trace_and_the_correspondences(photo_bench):
    copy = queries.load_copy(photo_bench, 0)
    figs = queries.copy_figures(copy, grid=6)
    assert set(figs) == {"pair", "trace", "correspondence"}
    assert copy.query_id in figs["pair"].layout.annotations[1].text
    assert figs["correspondence"].layout.title.text.endswith("of 36 query points trace into the reference")


def test_the_explorer_opens_a_real_photo_copy_with_its_chain_and_stored_pixels(photo_bench, embedded_bench):
    ex = Explorer(VizConfig(size=64, random_chain=False, real_photos_root=str(photo_bench),
                            embedded_root=str(embedded_bench)))
    with ex.hold():
        ex.controls.benchmark.value = "real photos"
        ex.controls.benchmark_copy.value = 1
        ex.controls.mode.value = "benchmark"
    ex.refresh()
    want = queries.load_copy(photo_bench, 1)
    assert ex.status.value == ""
    assert ex.query_chain.specs() == want.specs
    assert np.array_equal(np.asarray(ex.query), np.asarray(want.query))  # the stored query, not a replay
    assert np.array_equal(np.asarray(ex.source), np.asarray(want.reference))
    assert np.array_equal(ex.query_trace.to_dense(), want.trace.to_dense(), equal_nan=True)
    ex.query_chain.remove(0)  # an edited chain: the query becomes its replay on the reference
    assert ex.query_chain.specs() != want.specs and ex.query.size == ex.query_trace.size
    ex.controls.benchmark.value = "embedded"  # another benchmark: its copy and recorded chain
    assert ex.query_chain.specs() == queries.load_copy(embedded_bench, 1).specs
    ex.controls.benchmark_copy.value = 999
    assert "outside" in ex.status.value
    ex.controls.mode.value = "procedural"
    assert ex.status.value == "" and ex.source.size == (64, 64)


def test_the_explorer_names_a_benchmark_without_a_folder():
    ex = Explorer(VizConfig(size=64, random_chain=False))
    ex.controls.mode.value = "benchmark"
    assert "no folder for benchmark" in ex.status.value
    assert isinstance(ex.source, Image.Image)  # the last good state stays
