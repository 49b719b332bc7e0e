"""Edit registry, apply, sampler: hand-computed cases, determinism, bad input."""

import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from icdlib.edits import SAMPLERS
from icdlib.edits import FAMILIES, OPS, EditConfig, apply, apply_array, complete, list_ops, sample_chain, validate
from icdlib.edits.engine import Context
from icdlib.params import section
from icdlib.pixtrace import pixel_centres


def ramp(w=10, h=6, seed=0):
    """A random RGB image (every pixel distinct enough to compare positions)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


# ------------------------------------------------------------------ hand-computed cases
def test_hflip_trace_sends_left_column_to_right():
    img = ramp(5, 3)
    out, tr = apply(img, [{"op": "hflip"}])
    a, b = np.asarray(img), np.asarray(out)
    assert np.array_equal(b[:, 4], a[:, 0])
    assert np.allclose(tr.from_source([[0.5, 1.5]]), [[4.5, 1.5]])
    assert np.allclose(tr.to_dense()[:, 4, 0], 0.5)


@pytest.mark.parametrize("spec, pillow", [
    ({"op": "invert"}, lambda im: ImageOps.invert(im)),
    *[({"op": "posterize", "bits": b}, lambda im, b=b: ImageOps.posterize(im, b)) for b in (1, 3, 8)],
    *[({"op": "solarize", "threshold": t}, lambda im, t=t: ImageOps.solarize(im, t)) for t in (0, 128, 255)],
])
def test_value_maps_give_pillows_imageops_pixels(spec, pillow):
    img = ramp(37, 23, seed=3)
    out, tr = apply(img, [spec])
    assert np.array_equal(np.asarray(out), np.asarray(pillow(img))) and tr.steps == ()


def test_crop_offsets_are_whole_pixels_of_the_fractions():
    img = ramp(100, 80)
    out, tr = apply(img, [{"op": "crop", "left": 0.1, "top": 0.25, "width": 0.5, "height": 0.5}])
    assert out.size == (50, 40) and tr.size == (50, 40)
    assert np.array_equal(np.asarray(out), np.asarray(img)[20:60, 10:60])
    assert np.allclose(tr.to_source([[0.5, 0.5], [49.5, 39.5]]), [[10.5, 20.5], [59.5, 59.5]])


def test_rotate_90_with_expand_maps_corners_like_pillow():
    img = ramp(4, 2)
    out, tr = apply(img, [{"op": "rotate", "degrees": 90, "expand": True, "resample": "nearest"}])
    assert out.size == (2, 4)
    # counter-clockwise: top-left goes to bottom-left, top-right to top-left
    assert np.allclose(tr.from_source([[0.5, 0.5], [3.5, 0.5], [3.5, 1.5]]), [[0.5, 3.5], [0.5, 0.5], [1.5, 0.5]])
    assert np.array_equal(np.asarray(out), np.asarray(img.rotate(90, expand=True)))


def test_rotate_without_expand_keeps_size_and_centre():
    img = ramp(30, 20)
    out, tr = apply(img, [{"op": "rotate", "degrees": 37, "expand": False}])
    assert out.size == (30, 20)
    assert np.allclose(tr.from_source([[15.0, 10.0]]), [[15.0, 10.0]])
    assert np.isnan(tr.to_dense()[0, 0]).all()  # a corner of the canvas is uncovered


def test_scale_and_pad_matrices():
    img = ramp(100, 80)
    out, tr = apply(img, [{"op": "scale", "factor": 0.5}, {"op": "pad", "left": 0.2, "top": 0.0,
                                                             "right": 0.0, "bottom": 0.5}])
    assert out.size == (60, 60)
    assert np.allclose(tr.from_source([[10.0, 20.0]]), [[15.0, 10.0]])
    assert tr.valid_mask().sum() == 50 * 40
    assert np.isnan(tr.to_source([[5.0, 5.0]])).all()


def test_pad_square_makes_a_square_around_the_image():
    out, tr = apply(ramp(40, 30), [{"op": "pad_square", "position": 0.5}])
    assert out.size == (40, 40)
    assert np.allclose(tr.from_source([[0.0, 0.0]]), [[0.0, 5.0]])


def test_collage_only_the_source_tile_traces():
    img = ramp(40, 30)
    out, tr = apply(img, [{"op": "collage", "rows": 2, "cols": 2, "index": 3, "tile_scale": 0.5,
                           "gap": 0.0, "seed": 0}])
    assert out.size == (40, 30)
    valid = tr.valid_mask()
    assert valid[15:, 20:].all() and not valid[:15].any() and not valid[:, :20].any()


def test_paste_onto_faint_copy_is_untraceable():
    spec = {"op": "paste_onto", "canvas_w": 2.0, "canvas_h": 2.0, "area": 0.25, "x": 0.0, "y": 0.0,
            "seed": 1}
    _, strong = apply(ramp(20, 10), [dict(spec, opacity=0.9)])
    _, faint = apply(ramp(20, 10), [dict(spec, opacity=0.3)])
    assert strong.valid_mask().sum() == 20 * 10 and faint.valid_mask().sum() == 0


def test_translucent_layers_compound_into_occlusion():
    cover = {"op": "paste_over", "area": 1.0, "ratio": 2.0, "x": 0.0, "y": 0.0, "opacity": 0.3, "seed": 0}
    _, once = apply(ramp(20, 10), [cover])
    _, twice = apply(ramp(20, 10), [cover, dict(cover, seed=1)])
    assert once.valid_mask().all()  # 0.7 of the source left
    assert not twice.valid_mask().any()  # 0.49 left: below 1 - threshold


def test_text_overlay_hides_glyph_pixels_only():
    img = Image.new("RGB", (80, 40), (0, 0, 0))
    out, tr = apply(img, [{"op": "text", "text": "WW", "x": 0.1, "y": 0.1, "size": 0.6,
                           "color": [255, 255, 255], "opacity": 1.0}])
    lit = np.asarray(out)[..., 0] >= 128
    assert 0 < lit.sum() < 0.5 * lit.size
    assert np.array_equal(~tr.valid_mask(), lit)


# ------------------------------------------------------------------ determinism and JSON
def test_apply_is_deterministic_for_the_same_specs():
    img = ramp(64, 48)
    for seed in range(5):
        chain = sample_chain(seed)
        a, ta = apply(img, chain)
        b, tb = apply(img, chain)
        assert a.tobytes() == b.tobytes()
        assert np.array_equal(ta.valid_mask(), tb.valid_mask())


def test_sampled_chain_survives_json_round_trip_and_replays():
    img = ramp(64, 48)
    for seed in range(8):
        chain = sample_chain(seed)
        back = json.loads(json.dumps(chain))
        assert back == chain
        assert back == [complete(s) for s in back]  # every parameter already explicit
        assert apply(img, back)[0].tobytes() == apply(img, chain)[0].tobytes()


def test_sample_chain_is_seeded():
    assert sample_chain(3) == sample_chain(3)
    assert len({json.dumps(sample_chain(s)) for s in range(20)}) == 20


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_chain_respects_families(family):
    for seed in range(15):
        chain = sample_chain(seed, families=[family])
        assert 1 <= len(chain) <= EditConfig().max_edits
        assert {OPS[s["op"]].family for s in chain} == {family}


def test_max_edits_bounds_chain_length():
    cfg = EditConfig(max_edits=2, p_geometric=1, p_composite=1, p_overlay=1, p_photometric=1)
    assert all(len(sample_chain(s, config=cfg)) == 2 for s in range(10))


def test_sampled_queries_keep_about_a_third_of_the_source():
    img = Image.new("RGB", (96, 72))
    shares = []
    for seed in range(60):
        _, tr = apply(img, sample_chain(seed))
        shares.append(tr.forward.valid(pixel_centres(tr.source_size)).mean())
    assert min(shares) >= 0.2 and np.median(shares) >= 0.6


def test_donors_callable_and_sequence_are_used():
    red = Image.new("RGB", (7, 5), (255, 0, 0))
    spec = {"op": "paste_onto", "canvas_w": 2.0, "canvas_h": 2.0, "area": 0.25, "x": 0.0, "y": 0.0,
            "opacity": 1.0, "seed": 3}
    for donors in (lambda seed: red, [red]):
        out, _ = apply(ramp(20, 10), [spec], donors=donors)
        assert out.size == (40, 20)  # the spec, not the donor's size, sets the geometry
        assert tuple(np.asarray(out)[19, 39]) == (255, 0, 0)
    procedural, _ = apply(ramp(20, 10), [spec])
    assert tuple(np.asarray(procedural)[19, 39]) != (255, 0, 0)
    with pytest.raises(ValueError, match="donors"):
        apply(ramp(20, 10), [spec], donors=lambda seed: "not an image")


# ------------------------------------------------------------------ registry
def test_registry_lists_all_families_and_samplers():
    assert set(list_ops()) == set(OPS)
    for fam in FAMILIES:
        assert list_ops(fam)
    assert set(SAMPLERS) == set(OPS) - {"resize"}  # absolute resize is for callers, not sampled


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_parameter_is_documented_and_defaults_validate(name):
    op = OPS[name]
    assert op.doc
    for p in op.params:
        assert p.doc, f"{name}.{p.name} has no doc"
    if name in SAMPLERS:
        spec = SAMPLERS[name](np.random.default_rng(1), EditConfig())[0]
        assert validate(spec)[0] is op
        minimal = {k: v for k, v in spec.items() if k == "op" or next(p for p in op.params if p.name == k).required}
        assert complete(minimal).keys() == complete(spec).keys()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "spec, words",
    [
        ({"op": "melt"}, ["melt"]),
        ({"op": "rotate"}, ["rotate", "degrees"]),
        ({"op": "rotate", "degrees": 10, "spin": 1}, ["rotate", "spin"]),
        ({"op": "rotate", "degrees": "ten"}, ["rotate", "degrees"]),
        ({"op": "crop", "left": 0.8, "top": 0.0, "width": 0.5, "height": 0.5}, ["crop", "left", "width"]),
        ({"op": "crop", "left": 0.0, "top": 0.0, "width": 1.5, "height": 0.5}, ["crop", "width"]),
        ({"op": "crop", "left": 0.0, "top": 0.0, "width": 0.001, "height": 0.5}, ["crop", "width"]),
        ({"op": "scale", "factor": 0.0}, ["scale", "factor"]),
        ({"op": "affine", "shear_x": 45.0, "shear_y": 45.0}, ["affine", "shear_x", "singular"]),
        ({"op": "perspective", "offsets": [0.6, 0, 0, 0, 0, 0, 0, 0]}, ["perspective", "offsets"]),
        ({"op": "perspective", "offsets": [0.1, 0.1]}, ["perspective", "offsets"]),
        ({"op": "collage", "rows": 2, "cols": 2, "index": 4, "seed": 0}, ["collage", "index"]),
        ({"op": "sticker", "kind": "cat", "x": 0.5, "y": 0.5, "size": 0.2}, ["sticker", "kind"]),
        ({"op": "text", "text": "hi", "x": 0.5, "y": 0.5, "size": 0.1, "opacity": 1.5}, ["text", "opacity"]),
        ({"op": "rotate", "degrees": 10, "expand": "yes"}, ["rotate", "expand"]),
    ],
)
def test_bad_spec_raises_naming_op_and_parameter(spec, words):
    with pytest.raises(ValueError) as err:
        apply(ramp(100, 80), [spec])
    for w in words:
        assert w in str(err.value)


def test_large_seeds_and_integral_floats_are_accepted():
    spec = {"op": "noise", "sigma": 5.0, "seed": 2**63 - 1}
    assert validate(spec)[1]["seed"] == 2**63 - 1
    assert validate({"op": "jpeg", "quality": 50.0})[1]["quality"] == 50
    with pytest.raises(ValueError, match="quality"):
        validate({"op": "jpeg", "quality": 50.5})


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="specs"):
        apply(ramp(), {"op": "hflip"})
    with pytest.raises(ValueError, match="image"):
        apply(np.zeros((4, 4, 3)), [])
    with pytest.raises(ValueError, match="families"):
        sample_chain(0, families=["warp"])


def test_edit_config_reads_its_params_section_and_rejects_bad_values():
    cfg = section({"edits": {"max_edits": 3, "crop_area": [0.4, 0.8]}}, "edits", EditConfig)
    assert cfg.max_edits == 3 and cfg.crop_area == (0.4, 0.8)
    with pytest.raises(ValueError, match="max_edit"):
        section({"edits": {"max_edit": 3}}, "edits", EditConfig)
    with pytest.raises(ValueError, match="p_overlay"):
        EditConfig(p_overlay=1.5)
    with pytest.raises(ValueError, match="crop_area"):
        EditConfig(crop_area=(0.9, 0.4))


# ------------------------------------------------------------------ high-bit-depth sources
def _deep(mode: str, raw: np.ndarray) -> Image.Image:
    """A PIL image of ``mode`` holding ``raw`` ([H, W]) exactly."""
    if mode == "I;16B":
        return Image.frombytes(mode, raw.shape[::-1], raw.astype(">u2").tobytes())
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    img = Image.fromarray(raw.astype(dtype))
    assert img.mode == mode
    return img


DEEP = {  # mode -> (raw values, their 8-bit grey computed here from the raw values)
    "I;16": (np.array([[60000, 0, 65535], [257, 1000, 30000]]), lambda a: a / 65535 * 255),
    "I;16B": (np.array([[60000, 0, 65535], [257, 1000, 30000]]), lambda a: a / 65535 * 255),
    "I": (np.array([[60000, 0, 65535], [257, 1000, 30000]]), lambda a: a / 65535 * 255),  # 16 bits decoded as I
    "F": (np.array([[0.8, 0.0, 1.0], [0.1, 0.25, 0.6]]), lambda a: a * 255),  # floats in 0..1
}


@pytest.mark.parametrize("mode", list(DEEP))
@pytest.mark.parametrize("specs", [[], [{"op": "hflip"}]])
def test_apply_scales_a_high_bit_depth_image_to_8_bits(mode, specs):
    """Regression: PIL's convert("RGB") clipped 60000 of 65535 to white (255), not 233."""
    raw, to8 = DEEP[mode]
    out, _ = apply(_deep(mode, raw), specs)
    stored = np.asarray(_deep(mode, raw), dtype=np.float64)  # the raw values as the mode holds them
    assert np.array_equal(stored, raw.astype(np.float32)) if mode == "F" else np.array_equal(stored, raw)
    grey = np.clip(np.rint(to8(stored)), 0, 255).astype(np.uint8)
    if specs:
        grey = grey[:, ::-1]
    assert out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.repeat(grey[..., None], 3, axis=2))
    if mode.startswith("I"):
        assert np.asarray(out)[0, -1 if specs else 0, 0] == 233  # 60000 / 65535 * 255 = 233.4
    assert np.array_equal(apply_array(_deep(mode, raw), specs)[0], np.asarray(out))
    donor = Context(donors=[_deep(mode, raw)]).donor_array(0, (3, 2))  # a caller's donor: same size, no resize
    assert np.array_equal(donor[..., 0], grey[:, ::-1] if specs else grey)


@pytest.mark.parametrize("mode", list(DEEP))
def test_in_memory_and_file_decoded_deep_images_give_the_same_pixels(mode, tmp_path):
    from icdlib.data import load_image

    img = _deep(mode, DEEP[mode][0])
    path = tmp_path / "deep.tif"
    img.save(path)
    assert np.array_equal(np.asarray(apply(img, [])[0]), np.asarray(load_image(path)))
