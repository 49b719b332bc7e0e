"""Tests of the static PixTrace figures and of the ipywidgets explorer, driven from code."""

from __future__ import annotations

import io
import math
from datetime import datetime, timezone

import numpy as np
import pytest
import torch
from PIL import Image
from plotly.callbacks import InputDeviceState, Points

from icdlib import edits

from icdlib.viz import figures as figures
from icdlib.viz.chain_widgets import ChainEditor, EditRow, default_spec
from icdlib.pixtrace import Step, Trace, overlap, transfer
from icdlib.data import render
from icdlib.viz.affinity import fit_size, map_patch, patch_affinity, resized_trace
from icdlib.viz.explorer import Explorer, VizConfig


def hflip(size):
    w, h = size
    return Step(np.array([[-1.0, 0, w], [0, 1, 0], [0, 0, 1]]), size, size, name="hflip")


def pad(size, left, top, new_size):
    return Step(np.array([[1.0, 0, left], [0, 1, top], [0, 0, 1]]), size, new_size, name="pad")


def shown(widget, index):
    """Pixels of the image trace ``index`` of a figure widget."""
    return figures.decode_data_uri(widget.data[index].source)


def rgb(image):
    return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------------- static figures
def test_png_data_uri_roundtrips_pixels_exactly():
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(figures.decode_data_uri(figures.png_data_uri(arr)), arr)


def test_images_figure_places_top_left_pixel_corner_at_origin_with_y_down():
    a = np.zeros((4, 6, 3), np.uint8)
    b = np.full((3, 3, 3), 200, np.uint8)
    fig = figures.images_figure([a, b], ["source", "edited"])
    assert [t.type for t in fig.data] == ["image", "image"]
    assert fig.data[0].x0 == 0.5 and fig.data[0].y0 == 0.5  # centre of pixel (0, 0)
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.yaxis2.autorange == "reversed"
    assert np.array_equal(figures.decode_data_uri(fig.data[1].source), b)


def test_images_figure_rejects_missing_titles():
    with pytest.raises(ValueError, match="images_figure"):
        figures.images_figure([np.zeros((2, 2, 3), np.uint8)], [])


def test_to_rgb_array_rejects_float_pixels():
    with pytest.raises(ValueError, match="uint8"):
        figures.to_rgb_array(np.zeros((2, 2, 3), np.float32))


def test_coordinate_colours_separate_corners_and_blacken_untraceable():
    xy = np.array([[0.5, 0.5], [99.5, 0.5], [0.5, 49.5], [99.5, 49.5], [np.nan, np.nan]])
    c = figures.coordinate_colours(xy, (100, 50)).astype(int)
    corners = {tuple(v) for v in c[:4]}
    assert len(corners) == 4
    assert tuple(c[4]) == (0, 0, 0)


def test_trace_map_hatches_padding_and_colours_the_rest_by_source_position():
    src = (4, 3)
    trace = Trace(src, [pad(src, 2, 1, (8, 5))])  # source sits at columns 2..5, rows 1..3
    m = figures.trace_map(trace)
    assert m.shape == (5, 8, 3)
    inside = np.zeros((5, 8), bool)
    inside[1:4, 2:6] = True
    # hatch: grey (equal channels) in {70, 110}
    out = m[~inside]
    assert np.all(out[:, 0] == out[:, 1]) and set(np.unique(out)) <= {70, 110}
    # inside: pixel (c, r) is coloured by source centre (c - 2 + 0.5, r - 1 + 0.5)
    for r in range(1, 4):
        for c in range(2, 6):
            want = figures.coordinate_colours(np.array([c - 2 + 0.5, r - 1 + 0.5]), src)
            assert np.array_equal(m[r, c], want)


def test_trace_figure_titles_traceable_share():
    src = (4, 3)
    fig = figures.trace_figure(Trace(src, [pad(src, 2, 1, (8, 5))]))
    assert "30%" in fig.layout.annotations[1].text  # 12 of 40 pixels


def test_correspondence_points_of_hflip_mirror_x():
    trace = Trace((10, 4), [hflip((10, 4))])
    src, dst = figures.correspondence_points(trace.forward, grid=2)
    assert np.allclose(src, [[2.5, 1], [7.5, 1], [2.5, 3], [7.5, 3]])
    assert np.allclose(dst, [[7.5, 1], [2.5, 1], [7.5, 3], [2.5, 3]])


def test_correspondence_figure_lines_join_traced_points_across_the_gap():
    size = (10, 4)
    trace = Trace(size, [hflip(size)])
    img = np.zeros((4, 10, 3), np.uint8)
    fig = figures.correspondence_figure(img, img, trace.forward, grid=2, gap=5)
    lines = fig.data[2]
    assert list(lines.x[:3]) == [2.5, 7.5 + 15, None]  # reference drawn 10 + 5 px to the right
    assert list(lines.y[:3]) == [1.0, 1.0, None]


def test_correspondence_figure_rejects_images_of_the_wrong_size():
    trace = Trace((10, 4))
    with pytest.raises(ValueError, match="correspondence_figure"):
        figures.correspondence_figure(np.zeros((5, 10, 3), np.uint8), np.zeros((4, 10, 3), np.uint8),
                                      trace.forward)


def test_patch_of_point_agrees_with_patch_outline_for_every_patch():
    size, p = (20, 13), 4  # 5 x 3 grid, one stray row
    for i in range(15):
        xs, ys = figures.patch_outline(i, size, p)
        assert figures.patch_of_point(xs[0] + 0.1, ys[0] + 0.1, size, p) == i
        assert figures.patch_of_point(xs[2] - 0.1, ys[2] - 0.1, size, p) == i
    assert figures.patch_of_point(1, 12.5, size, p) is None  # dropped remainder row
    with pytest.raises(ValueError, match="patch_outline"):
        figures.patch_outline(15, size, p)


def test_row_heatmap_blanks_zero_cells_and_labels_ratios():
    hm = figures.row_heatmap(np.array([0.0, 0.25, 0.5, 0.0, 0.0, 0.25]), (12, 8), 4)
    assert hm["z"].shape == (2, 3)
    assert np.isnan(hm["z"][0, 0]) and hm["z"][0, 1] == 0.25 and hm["z"][1, 2] == 0.25
    assert hm["text"].tolist() == [["", "0.25", "0.50"], ["", "", "0.25"]]
    assert list(hm["x"]) == [2, 6, 10] and list(hm["y"]) == [2, 6]
    with pytest.raises(ValueError, match="row_heatmap"):
        figures.row_heatmap(np.zeros(5), (12, 8), 4)


def test_patch_overlap_figure_shows_selected_rows_ratios_over_the_reference():
    size = (8, 4)  # 2 x 1 patches of 4
    trace = Trace(size, [hflip(size)])
    ref = Trace(size)
    o = overlap(trace, ref, 4).numpy()
    assert np.allclose(o, [[0, 1, 0], [1, 0, 0]])  # hflip swaps the two patches
    img = np.zeros((4, 8, 3), np.uint8)
    fig = figures.patch_overlap_figure(img, img, o, 4, selected=0)
    z = np.nan_to_num(np.asarray(fig.data[6].z, float))
    assert z.tolist() == [[0.0, 1.0]]
    assert list(fig.data[3].x) == [0, 4, 4, 0, 0]  # outline of query patch 0
    with pytest.raises(ValueError, match="patch_overlap_figure"):
        figures.patch_overlap_figure(img, img, o[:, :2], 4)


def test_overlap_matrix_figure_frames_the_untraceable_column_and_selected_row():
    o = np.array([[0.5, 0.25, 0.25], [0.0, 0.0, 1.0]])
    fig = figures.overlap_matrix_figure(o, selected=1)
    assert np.array_equal(np.asarray(fig.data[0].z), o)
    invalid, sel = fig.layout.shapes
    assert (invalid.x0, invalid.x1) == (1.5, 2.5)
    assert (sel.y0, sel.y1) == (0.5, 1.5)
    with pytest.raises(ValueError, match="overlap_matrix_figure"):
        figures.overlap_matrix_figure(np.zeros(3))


def test_affinity_figure_puts_model_row_left_and_overlap_row_right():
    img = np.zeros((8, 8, 3), np.uint8)
    fig = figures.affinity_figure(img, np.array([0.7, 0.1, 0.1, 0.1]), np.array([0.5, 0, 0, 0, 0.5]), 4, 0)
    assert np.nanmax(np.asarray(fig.data[1].z, float)) == pytest.approx(0.7)
    assert np.nanmax(np.asarray(fig.data[3].z, float)) == pytest.approx(0.5)
    assert "50% traces nowhere" in fig.layout.annotations[1].text


# ---------------------------------------------------------------------- pure helpers
def test_patch_affinity_equals_softmax_of_scaled_cosines_by_loop():
    g = torch.Generator().manual_seed(0)
    q, r = torch.randn(3, 5, generator=g), torch.randn(4, 5, generator=g)
    got = patch_affinity(q, r, 2, scale=16.0)
    cos = [float(q[2] @ r[j]) / (float(q[2].norm()) * float(r[j].norm())) for j in range(4)]
    e = [math.exp(16.0 * c) for c in cos]
    assert torch.allclose(got, torch.tensor([v / sum(e) for v in e]), atol=1e-5)
    with pytest.raises(ValueError, match="patch_affinity"):
        patch_affinity(q, r, 3)


def test_resized_trace_scales_source_points_into_the_new_frame():
    t = resized_trace(Trace((10, 20)), (5, 40))
    assert t.size == (5, 40)
    assert np.allclose(t.from_source(np.array([2.0, 3.0])), [1.0, 6.0])


def test_map_patch_picks_the_model_patch_under_the_selected_patch_centre():
    # 64 px image, patch 16 (4x4 grid) -> 32 px model input, patch 4 (8x8 grid)
    assert map_patch(0, (64, 64), 16, (32, 32), 4) == 1 * 8 + 1  # centre (8, 8) -> (4, 4)
    assert map_patch(15, (64, 64), 16, (32, 32), 4) == 7 * 8 + 7


def test_fit_size_keeps_aspect_with_longer_side_given():
    assert fit_size(Image.new("RGB", (300, 150)), 100).size == (100, 50)


def test_viz_config_rejects_bad_patch():
    with pytest.raises(ValueError, match="viz.patch"):
        VizConfig(patch=15)


def test_every_registered_op_gets_controls_that_roundtrip_its_spec():
    for name in edits.list_ops():
        spec = default_spec(name)
        assert edits.complete(EditRow(spec, lambda: None).spec()) == spec, name


def test_chain_editor_adds_moves_and_removes_edits():
    calls = []
    ed = ChainEditor("chain", on_change=lambda: calls.append(1))
    a, b = edits.list_ops()[:2]
    ed.add(a)
    ed.add(b)
    assert [s["op"] for s in ed.specs()] == [a, b]
    ed.rows[1].up.click()
    assert [s["op"] for s in ed.specs()] == [b, a]
    ed.rows[0].remove.click()
    assert [s["op"] for s in ed.specs()] == [a]
    assert len(calls) == 4
    with pytest.raises(ValueError, match="ChainEditor.remove"):
        ed.remove(3)


# ---------------------------------------------------------------------- explorer
SIZE, PATCH = 64, 16


@pytest.fixture
def ex():
    return Explorer(VizConfig(size=SIZE, patch=PATCH, random_chain=False))


def first_op(family):
    return edits.list_ops(family)[0]


def test_explorer_starts_with_sampled_chain_of_its_chain_seed():
    e = Explorer(VizConfig(size=SIZE, chain_seed=4))
    assert e.query_chain.specs() == [edits.complete(s) for s in edits.sample_chain(4)]


def test_seed_change_redraws_source_and_query_as_apply_makes_them(ex):
    ex.query_chain.add(first_op("geometric"))
    before = shown(ex.images_fig, 1)
    ex.controls.seed.value = 3
    source = render(ex.controls.kind.value, 3, SIZE)
    query, _ = edits.apply(source, ex.query_chain.specs())
    assert np.array_equal(shown(ex.images_fig, 0), rgb(source))
    assert np.array_equal(shown(ex.images_fig, 1), rgb(query))
    assert not np.array_equal(shown(ex.images_fig, 1), before)


def test_random_button_loads_the_chain_of_the_seed_field(ex):
    ex.controls.chain_seed.value = 7
    ex.random_button.click()
    specs = ex.query_chain.specs()
    assert [edits.complete(s) for s in specs] == [edits.complete(s) for s in edits.sample_chain(7)]
    query, trace = edits.apply(ex.source, specs)
    assert np.array_equal(shown(ex.images_fig, 1), rgb(query))
    assert np.allclose(ex.overlap, overlap(trace, Trace(ex.source.size), PATCH).numpy())


def test_parameter_slider_change_reapplies_the_edit_and_retraces(ex):
    ex.query_chain.add("rotate")
    ctl = ex.query_chain.rows[0].params["degrees"]
    old = shown(ex.images_fig, 1)
    ctl.widget.value = 90.0 if ctl.get() != 90.0 else 45.0
    assert ex.query_chain.specs()[0]["degrees"] == ctl.get()
    query, trace = edits.apply(ex.source, ex.query_chain.specs())
    assert np.array_equal(shown(ex.images_fig, 1), rgb(query))
    assert not np.array_equal(shown(ex.images_fig, 1), old)
    assert np.allclose(ex.overlap, overlap(trace, Trace(ex.source.size), PATCH).numpy())


def test_select_patch_highlights_the_overlap_row_of_that_patch(ex):
    ex.controls.chain_seed.value = 1
    ex.random_button.click()
    expected = overlap(ex.query_trace, Trace(ex.source.size), PATCH).numpy()
    n = expected.shape[0]
    for i in (0, n // 2, n - 1):
        ex.select_patch(i)
        assert np.allclose(ex.highlighted_ratios(), expected[i, :-1])
        assert f"query patch {i}<br>" in ex.patch_fig.layout.annotations[1].text
        shape = ex.matrix_fig.layout.shapes[1]
        assert (shape.y0, shape.y1) == (i - 0.5, i + 0.5)
    with pytest.raises(ValueError, match="select_patch"):
        ex.select_patch(n)


def test_clicking_a_query_patch_selects_it(ex):
    cols = ex.query.size[0] // PATCH
    x, y = 1.5 * PATCH, 2.5 * PATCH  # patch (col 1, row 2)
    ex.patch_fig.data[1]._dispatch_on_click(Points([0], [x], [y], "query patch", 1), InputDeviceState())
    assert ex.selected == 2 * cols + 1
    assert list(ex.patch_fig.data[3].x)[:2] == [PATCH, 2 * PATCH]


def test_hovering_selects_only_when_enabled():
    e = Explorer(VizConfig(size=SIZE, patch=PATCH, random_chain=False, select_on_hover=True))
    e.patch_fig.data[1]._dispatch_on_hover(Points([0], [40.0], [8.0], "query patch", 1), InputDeviceState())
    assert e.selected == 2  # (col 2, row 0)


def test_invalid_parameter_combination_is_reported_in_status(ex):
    ex.query_chain.add("collage")
    ctl = ex.query_chain.rows[0].params
    with ex.hold():
        ctl["rows"].widget.value, ctl["cols"].widget.value = 1, 2
    ctl["index"].widget.value = 15
    assert "collage" in ex.status.value and "index" in ex.status.value
    ctl["index"].widget.value = 1
    assert ex.status.value == ""


def test_copy_vs_copy_edits_the_reference_with_its_own_chain(ex):
    ex.query_chain.add(first_op("geometric"))
    ex.reference_chain.set_specs([default_spec(first_op("composite"))])
    ex.controls.copy_vs_copy.value = True
    ref, rtrace = edits.apply(ex.source, ex.reference_chain.specs())
    assert np.array_equal(shown(ex.images_fig, 2), rgb(ref))
    assert np.allclose(ex.overlap, overlap(ex.query_trace, rtrace, PATCH).numpy())
    m = transfer(ex.query_trace, rtrace)
    src, _ = figures.correspondence_points(m, ex.config.correspondence_grid)
    assert ex.correspondence_fig.layout.title.text.startswith(f"{len(src)} of")
    ex.controls.copy_vs_copy.value = False
    assert len(ex.images_fig.data) == 2


def test_patch_size_change_regrids_the_overlap(ex):
    ex.controls.patch.value = 32
    assert ex.overlap.shape == (4, 5)
    ex.controls.patch.value = 8
    assert ex.overlap.shape == (64, 65)


def test_uploaded_image_becomes_the_source(ex):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 60, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    ex.controls.upload.value = ({"name": "cat.png", "type": "image/png", "size": buf.tell(),
                                 "content": memoryview(buf.getvalue()),
                                 "last_modified": datetime.now(timezone.utc)},)
    ex.controls.mode.value = "upload"
    assert np.array_equal(rgb(ex.source), rgb(fit_size(img, SIZE)))
    assert ex.status.value == ""


def test_disc21_folder_image_becomes_the_source(ex, tmp_path):
    (tmp_path / "reference_images").mkdir()
    (tmp_path / "dev_queries").mkdir()
    imgs = [Image.new("RGB", (40, 20), (i * 60, 0, 0)) for i in range(3)]
    for i, im in enumerate(imgs):
        im.save(tmp_path / "reference_images" / f"R{i:06d}.png")
    from icdlib.data import SPLIT_DIRS

    with ex.hold():
        ex.controls.disc21_root.value = str(tmp_path)
        ex.controls.disc21_split.value = next(k for k, v in SPLIT_DIRS.items() if v == "reference_images")
        ex.controls.disc21_index.value = 2
        ex.controls.mode.value = "disc21"
    ex.refresh()
    assert np.array_equal(rgb(ex.source), rgb(fit_size(imgs[2], SIZE)))


def test_bad_source_settings_show_an_error_instead_of_raising(ex, tmp_path):
    ex.controls.disc21_root.value = str(tmp_path / "missing")
    ex.controls.mode.value = "disc21"
    assert "missing" in ex.status.value
    ex.controls.mode.value = "upload"
    assert "upload" in ex.status.value
    ex.controls.mode.value = "procedural"
    assert ex.status.value == ""


# ---------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from icdlib.models import build_descriptor, build_matcher
    from icdlib.checkpoints import save_checkpoint

    d = tmp_path_factory.mktemp("ckpt")
    small = dict(img_size=32, patch_size=8, embed_dim=24, num_heads=2)
    desc = save_checkpoint(d / "desc.pt", build_descriptor("vit_tiny_cpu", seed=0, depth=1, desc_dim=8, **small))
    match = save_checkpoint(d / "match.pt", build_matcher("vit_tiny_cpu", seed=0, encoder_depth=1,
                                                          fusion_depth=1, **small))
    return str(desc), str(match)


def test_loaded_descriptor_shows_affinity_and_cosine_of_the_pair(ex, checkpoints):
    from icdlib.checkpoints import load_model
    from icdlib.models import preprocess

    ex.query_chain.set_specs([{"op": "hflip"}])
    ex.controls.descriptor.value = checkpoints[0]
    ex.load_button.click()
    model, _ = load_model(checkpoints[0])
    x = preprocess([ex.query, ex.source], 32)
    with torch.no_grad():
        desc, tokens = model.forward_with_tokens(x)
    ex.select_patch(7)  # 64 px / 16 -> 4x4 grid; patch 7 = (col 3, row 1), centre (56, 24)
    out = ex.model_scores()
    assert out["patch"] == 1 * 4 + 3  # model grid at 32 px, 8 px patches: centre (28, 12)
    assert out["cosine"] == pytest.approx(float(desc[0] @ desc[1]), abs=1e-5)
    assert np.allclose(out["affinity"], patch_affinity(tokens[0], tokens[1], 7).numpy(), atol=1e-5)
    # ground truth: the same chain replayed with a resize to the model input, independently
    resize = {"op": "resize", "width": 32, "height": 32, "resample": "bilinear"}
    _, qt = edits.apply(ex.source, [{"op": "hflip"}, resize])
    _, rt = edits.apply(ex.source, [resize])
    assert np.allclose(out["target"], overlap(qt, rt, 8).numpy()[7])
    assert out["target"][4] == pytest.approx(1.0)  # hflip: (col 3, row 1) -> (col 0, row 1)
    assert "descriptor cosine" in ex.scores.value
    assert np.nanmax(np.asarray(ex.affinity_fig.data[1].z, float)) == pytest.approx(out["affinity"].max())


def test_loaded_matcher_scores_the_pair_with_its_sigmoid(ex, checkpoints):
    from icdlib.checkpoints import load_model
    from icdlib.models import preprocess

    ex.controls.matcher.value = checkpoints[1]
    ex.load_button.click()
    model, _ = load_model(checkpoints[1])
    x = preprocess([ex.query, ex.source], 32)
    with torch.no_grad():
        want = float(torch.sigmoid(model(x[:1], x[1:]))[0])
    out = ex.model_scores()
    assert out["matcher"] == pytest.approx(want, abs=1e-5)
    assert out["tokens_from"] == "matcher" and "matcher score" in ex.scores.value


def test_checkpoint_in_the_wrong_field_is_reported(ex, checkpoints):
    ex.controls.descriptor.value = checkpoints[1]
    ex.load_button.click()
    assert "matcher checkpoint, not a descriptor" in ex.status.value
    assert ex.models == {}
