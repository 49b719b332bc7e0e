"""Image warps and PixTrace traces agree, checked on coordinate-encoded images.

Each chain is applied to two sources, decoded independently of the trace:

* ``coord`` - red = 2 x (column), green = 2 y (row), blue = 0,
* its colour complement - red = 255 - 2 x, green = 255 - 2 y, blue = 255.

Foreign content (donors, fills, overlays) is identical in both, so per output pixel
``(complement.B - coord.B) / 255 = w`` is the source's blend weight and
``coord - complement = w (4 (x, y) - 255)`` gives its source position even under a
translucent overlay (the factor 2 halves the uint8 rounding error). A pixel truly
traces to the source when ``w > 1 - occlusion_threshold``. Decoded positions and
validity are compared with ``trace.to_dense()`` / ``trace.valid_mask()`` away from a
2 px band at validity borders, where interpolation mixes source and foreign pixels.
"""

import numpy as np
import pytest
from PIL import Image

from icdlib.edits import EditConfig, OPS, apply, sample_chain

W, H = 112, 80  # non-square, and 2 x, 2 y fit in one uint8 channel
THR = EditConfig().occlusion_threshold


def coord_sources():
    ys, xs = np.mgrid[0:H, 0:W]
    coord = np.stack([2 * xs, 2 * ys, np.zeros_like(xs)], -1).astype(np.uint8)
    return [Image.fromarray(a, "RGB") for a in (coord, 255 - coord)]


def border_band(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels within ``radius`` (chessboard distance) of a change of ``mask``."""
    h, w = mask.shape
    pad = np.pad(mask, radius, mode="edge")
    lo, hi = mask.copy(), mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            win = pad[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
            lo &= win
            hi |= win
    return lo != hi


def decode(specs):
    """Truth decoded from the two renders, and the trace of the ``coord`` render."""
    outs, traces = [], []
    for src in coord_sources():
        img, tr = apply(src, specs)
        outs.append(np.asarray(img, np.float64))
        traces.append(tr)
    coord, comp = outs
    w = (comp[..., 2] - coord[..., 2]) / 255.0
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = ((coord[..., :2] - comp[..., :2]) / w[..., None] + 255.0) / 4.0 + 0.5  # index -> centre
    return w, xy, traces[0]


def check_exact(specs, min_share=0.99, min_iou=0.99):
    w, xy, trace = decode(specs)
    true_valid = w > 1.0 - THR
    valid = trace.valid_mask()
    dense = trace.to_dense()
    assert valid.shape == true_valid.shape == dense.shape[:2]
    assert np.array_equal(valid, ~np.isnan(dense[..., 0]))
    keep = ~(border_band(true_valid) | border_band(valid))
    inter = (true_valid & valid & keep).sum()
    union = ((true_valid | valid) & keep).sum()
    if union == 0:
        return
    iou = inter / union
    assert iou >= min_iou, f"{specs}: validity IoU {iou:.4f}"
    both = true_valid & valid & keep
    err = np.abs(xy[both] - dense[both]).max(-1)
    share = (err <= 1.0).mean()
    assert share >= min_share, f"{specs}: only {share:.4f} of valid pixels within 1 px (max {err.max():.2f})"


def test_trace_decode_identity_chain_is_exact():
    check_exact([], min_share=1.0, min_iou=1.0)


OP_CASES = {
    "crop": {"op": "crop", "left": 0.1, "top": 0.25, "width": 0.6, "height": 0.5},
    "resize": {"op": "resize", "width": 77, "height": 131},
    "scale": {"op": "scale", "factor": 0.63},
    "aspect": {"op": "aspect", "ratio": 1.7},
    "random_resized_crop": {"op": "random_resized_crop", "area": 0.4, "ratio": 1.3, "x": 0.3, "y": 0.8},
    "hflip": {"op": "hflip"},
    "vflip": {"op": "vflip"},
    "rotate": {"op": "rotate", "degrees": 33.0, "expand": False},
    "rotate_expand": {"op": "rotate", "degrees": -121.0, "expand": True},
    "affine": {"op": "affine", "degrees": 12.0, "scale": 0.8, "shear_x": 15.0, "translate_x": 0.05,
               "translate_y": -0.1},
    "perspective": {"op": "perspective", "offsets": [0.1, 0.05, -0.12, 0.0, -0.05, -0.1, 0.08, -0.02]},
    "pad": {"op": "pad", "left": 0.1, "top": 0.3, "right": 0.0, "bottom": 0.2, "color": [9, 9, 9]},
    "pad_square": {"op": "pad_square", "position": 0.3},
    "paste_onto": {"op": "paste_onto", "canvas_w": 1.8, "canvas_h": 1.5, "area": 0.4, "x": 0.3, "y": 0.7,
                   "opacity": 0.8, "seed": 5},
    "paste_onto_faint": {"op": "paste_onto", "canvas_w": 1.5, "canvas_h": 1.5, "area": 0.4, "x": 0.5,
                         "y": 0.5, "opacity": 0.3, "seed": 5},
    "paste_over": {"op": "paste_over", "area": 0.3, "ratio": 1.5, "x": 0.2, "y": 0.6, "opacity": 0.7, "seed": 2},
    "paste_over_opaque": {"op": "paste_over", "area": 0.3, "ratio": 1.5, "x": 0.2, "y": 0.6, "opacity": 1.0,
                          "seed": 2},
    "paste_object": {"op": "paste_object", "shape": "ellipse", "box_x": 0.1, "box_y": 0.1, "box_w": 0.7,
                     "box_h": 0.8, "degrees": 20.0, "scale": 0.8, "x": 0.5, "y": 0.45,
                     "canvas_w": 1.4, "canvas_h": 1.2, "opacity": 0.9, "seed": 3},
    "paste_object_polygon": {"op": "paste_object", "shape": "polygon", "box_x": 0.2, "box_y": 0.0,
                             "box_w": 0.7, "box_h": 0.9, "degrees": -15.0, "scale": 1.2, "x": 0.5,
                             "y": 0.5, "seed": 11},
    "collage": {"op": "collage", "rows": 2, "cols": 3, "index": 4, "tile_scale": 0.6, "gap": 0.05, "seed": 1},
    "frame": {"op": "frame", "style": "meme", "top": 0.2, "bottom": 0.15, "border": 0.05,
              "text_top": "when you", "text_bottom": "so true"},
    "frame_screenshot": {"op": "frame", "style": "screenshot", "top": 0.15, "bottom": 0.1,
                         "text_top": "photo.jpg", "text_bottom": ""},
    "text": {"op": "text", "text": "hello world", "x": 0.05, "y": 0.3, "size": 0.3, "color": [250, 20, 20],
             "opacity": 0.9},
    "sticker": {"op": "sticker", "kind": "face", "x": 0.4, "y": 0.5, "size": 0.5, "degrees": 20.0},
    "stripes": {"op": "stripes", "count": 6, "thickness": 0.3, "degrees": 30.0, "color": [0, 255, 0],
                "opacity": 0.8},
    "overlay_image": {"op": "overlay_image", "area": 0.3, "x": 0.7, "y": 0.2, "opacity": 0.6, "seed": 4},
    "erase": {"op": "erase", "area": 0.2, "ratio": 2.2, "x": 0.35, "y": 0.9, "color": [200, 10, 90]},
}


def test_every_traced_op_has_an_exactness_case():
    traced = {n for n, op in OPS.items() if op.family != "photometric"}
    covered = {spec["op"] for spec in OP_CASES.values()}
    assert traced == covered


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_single_op_image_matches_trace(case):
    check_exact([OP_CASES[case]])


@pytest.mark.parametrize("resample", ["nearest", "bicubic"])
@pytest.mark.parametrize("case", ["rotate", "affine", "perspective", "paste_object", "scale"])
def test_other_resampling_matches_trace(case, resample):
    check_exact([dict(OP_CASES[case], resample=resample)])


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
def test_warp_samples_at_output_pixel_centres(resample):
    """A 0.3 px shift of a linear ramp reads the ramp exactly 0.3 px further on."""
    from icdlib.edits.warps import translate, warp

    ramp = np.tile((np.arange(16) * 10).astype(np.uint8)[None, :, None], (4, 1, 3))
    out = np.asarray(warp(Image.fromarray(ramp, "RGB"), translate(-0.3, 0.0), (8, 4), resample))
    # output centre c + 0.5 reads input point c + 0.8, between input centres c + 0.5
    # and c + 1.5: value (c + 0.3) * 10 (Pillow's bicubic kernel is off by < 1 level = 0.1 px)
    err = np.abs(out[2, 1:, 0].astype(int) - (np.arange(1, 8) * 10 + 3))
    assert err.max() <= (0 if resample == "bilinear" else 1)
    nearest = np.asarray(warp(Image.fromarray(ramp, "RGB"), translate(-0.75, 0.0), (8, 4), "nearest"))
    assert np.array_equal(nearest[2, :, 0], (np.arange(8) + 1) * 10)  # c + 0.5 + 0.75 -> pixel c + 1


@pytest.mark.parametrize("seed", range(12))
def test_sampled_chain_image_matches_trace(seed):
    chain = sample_chain(seed, families=["geometric", "composite", "overlay"])
    assert 1 <= len(chain) <= 5
    check_exact(chain)


def test_occlusion_of_opaque_overlay_is_untraceable_and_faint_one_is_not():
    base = {"op": "paste_over", "area": 0.25, "ratio": 1.0, "x": 0.5, "y": 0.5, "seed": 0}
    _, opaque = apply(coord_sources()[0], [dict(base, opacity=0.9)])
    _, faint = apply(coord_sources()[0], [dict(base, opacity=0.2)])
    assert 0.2 < 1 - opaque.valid_mask().mean() < 0.3  # a quarter of the image is hidden
    assert faint.valid_mask().all()


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.family == "photometric"))
def test_photometric_op_keeps_size_and_identity_trace(name):
    from icdlib.edits import SAMPLERS

    spec = SAMPLERS[name](np.random.default_rng(0), EditConfig())[0]
    src = coord_sources()[0]
    out, trace = apply(src, [spec])
    assert out.size == src.size and trace.size == src.size and trace.steps == ()
    assert np.allclose(trace.forward.matrix, np.eye(3))
    dense = trace.to_dense()
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    assert np.array_equal(dense[..., 0], xs.astype(np.float32))
    assert np.array_equal(dense[..., 1], ys.astype(np.float32))


def test_exactness_report_rows_and_summary_follow_the_measured_chains():
    from icdlib.edits.exactness import REPORT_COLUMNS, Exactness, report

    checks = [Exactness(("crop", "rotate"), 1.0, 0.98, 0.75), Exactness((), 0.5, 1.0, 1.0),
              Exactness(("pad",), 0.75, 0.9, 0.8)]
    rows, summary = report(checks)
    assert [tuple(r) for r in rows] == [REPORT_COLUMNS] * 3
    assert [r["chain"] for r in rows] == ["crop > rotate", "", "pad"]
    assert [(r["within_1px"], r["validity_iou"], r["traceable_share"]) for r in rows] == [
        (1.0, 0.98, 0.75), (0.5, 1.0, 1.0), (0.75, 0.9, 0.8)]
    assert summary == {"chains": 3, "min_within_1px": 0.5, "mean_within_1px": 0.75, "min_validity_iou": 0.9}


def test_exactness_report_of_padded_chains_gives_the_padding_geometry():
    """Padding by a quarter of the width (and half the height) leaves 112 x 80 of 140 x 80
    (140 x 120) pixels traceable: 0.8 (8960 / 16800), every one of them exact."""
    from icdlib.edits.exactness import measure, report

    pad = {"op": "pad", "left": 0.25, "top": 0.0, "right": 0.0, "bottom": 0.0, "color": [9, 9, 9]}
    rows, summary = report([measure([]), measure([pad]), measure([dict(pad, top=0.5)])])
    assert [r["chain"] for r in rows] == ["", "pad", "pad"]
    assert [r["traceable_share"] for r in rows] == pytest.approx([1.0, 0.8, 8960 / 16800])
    assert summary == {"chains": 3, "min_within_1px": 1.0, "mean_within_1px": 1.0, "min_validity_iou": 1.0}


def test_exactness_report_of_no_chain_is_refused():
    from icdlib.edits.exactness import report, survey

    with pytest.raises(ValueError, match="no measured chain"):
        report([])
    with pytest.raises(ValueError, match="n_chains must be >= 1, got 0"):
        survey(0, seed=0)


def test_pixtrace_stage_writes_the_exactness_csv_and_json(tmp_path):
    import json

    import pandas as pd
    import yaml

    from icdlib.edits.exactness import measure
    from icdlib.pipeline.tracing import exactness_report

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 5, "paths": {"reports": "out"}}))
    table = exactness_report(params, n_chains=2)
    csv = pd.read_csv(tmp_path / "out" / "pixtrace" / "exactness.csv", keep_default_na=False)
    summary = json.loads((tmp_path / "out" / "pixtrace" / "exactness.json").read_text())
    assert list(csv.columns) == ["chain", "within_1px", "validity_iou", "traceable_share"]
    assert list(summary) == ["chains", "min_within_1px", "mean_within_1px", "min_validity_iou", "seed"]
    # the chains of seeds 5 and 6, each measured on its own
    expected = [measure(sample_chain(s, families=["geometric", "composite", "overlay"])) for s in (5, 6)]
    assert list(csv.chain) == list(table.chain) == [" > ".join(e.ops) for e in expected]
    assert csv.traceable_share.tolist() == pytest.approx([e.valid_share for e in expected], abs=1e-5)
    assert summary["chains"] == 2 and summary["seed"] == 5
    assert summary["min_within_1px"] == min(e.within_1px for e in expected)
    assert summary["min_validity_iou"] == min(e.iou for e in expected)
