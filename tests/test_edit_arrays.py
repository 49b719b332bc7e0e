"""Edits on arrays: ``apply_array``, ops registered with ``arrays=True`` next to PIL ones,
and the pixel shortcuts (tight text and sticker layers, table-driven flat blends) checked
against the whole-image constructions they replace."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from icdlib.edits import OPS, EditConfig, apply, apply_array, register, sample_chain, validate
from icdlib.edits import composites as C
from icdlib.edits.engine import Context
from icdlib.edits.overlays import _sticker_shape
from icdlib.edits.text import font
from icdlib.pixtrace import Step


def photo(w=96, h=72, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8), "RGB")


def ctx_for(a: np.ndarray) -> Context:
    ctx = Context()
    ctx.state["weight"], ctx.state["pending"] = np.ones(a.shape[:2], np.float32), []
    return ctx


@pytest.mark.parametrize("recipe", ["chains", "released"])
def test_apply_array_gives_applys_pixels_and_trace(recipe):
    cfg = EditConfig(recipe=recipe)
    src = photo()
    for seed in range(60):
        specs = sample_chain(seed, config=cfg)
        img, tr = apply(src, specs, config=cfg)
        for given in (src, np.asarray(src)):
            a, tr2 = apply_array(given, specs, config=cfg)
            assert a.dtype == np.uint8 and a.shape == (img.height, img.width, 3)
            assert np.array_equal(a, np.asarray(img)), (seed, specs)
            assert tr2.size == tr.size and [s.name for s in tr2.steps] == [s.name for s in tr.steps]
            assert np.array_equal(tr2.valid_mask(), tr.valid_mask())


def test_apply_array_returns_a_new_writable_array():
    a = np.asarray(photo()).copy()
    before = a.copy()
    for specs in ([], [{"op": "crop", "left": 0.1, "top": 0.1, "width": 0.5, "height": 0.5}], [{"op": "grayscale"}]):
        out, _ = apply_array(a, specs)
        assert out.flags.writeable and not np.shares_memory(out, a)
        out[...] = 0
        assert np.array_equal(a, before)


@pytest.mark.parametrize("bad, words", [
    (np.zeros((8, 8, 3), np.float32), "uint8 \\[H, W, 3\\]"),
    (np.zeros((8, 8), np.uint8), "uint8 \\[H, W, 3\\]"),
    (np.zeros((8, 8, 4), np.uint8), "uint8 \\[H, W, 3\\]"),
    ([[0, 0, 0]], "PIL image or an array"),
])
def test_apply_array_refuses_other_inputs(bad, words):
    with pytest.raises(ValueError, match=words):
        apply_array(bad, [{"op": "hflip"}])


def test_array_ops_get_a_read_only_array_and_pil_ops_a_pil_image():
    seen = {}

    @register("_test_pil_probe", "photometric")
    def pil_probe(img, p, ctx):
        seen["pil"] = type(img)
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).transpose(Image.Transpose.FLIP_LEFT_RIGHT), []

    @register("_test_array_probe", "photometric", arrays=True)
    def array_probe(img, p, ctx):
        seen["array"] = type(img)
        with pytest.raises(ValueError, match="read-only"):
            img[0, 0] = 0  # ops never draw on their input
        return img.copy(), []

    try:
        src = photo()
        chain = [{"op": "hflip"}, {"op": "_test_pil_probe"}, {"op": "_test_array_probe"}, {"op": "_test_pil_probe"}]
        img, _ = apply(src, chain)
        assert seen == {"pil": Image.Image, "array": np.ndarray}
        assert np.array_equal(np.asarray(img), np.asarray(src)[:, ::-1])
    finally:
        OPS.pop("_test_pil_probe", None)
        OPS.pop("_test_array_probe", None)


def test_an_op_returning_a_malformed_array_is_caught():
    @register("_test_bad_array", "photometric", arrays=True)
    def bad(img, p, ctx):
        return img.astype(np.float32), []

    try:
        with pytest.raises(AssertionError, match="_test_bad_array: returned a float32"):
            apply(photo(), [{"op": "_test_bad_array"}])
    finally:
        OPS.pop("_test_bad_array", None)


def _full_layer_blend(a: np.ndarray, layer: Image.Image, opacity: float) -> np.ndarray:
    """The whole-image construction: a full-size RGBA layer blended wherever its alpha is set."""
    rgba = np.asarray(layer, np.float32)
    return C.blend(a, rgba[..., :3], rgba[..., 3] / 255.0 * opacity)


def test_text_on_its_own_box_gives_the_full_layer_pixels():
    rng = np.random.default_rng(1)
    a = np.asarray(photo(80, 64))
    h, w = a.shape[:2]
    for i in range(150):  # edges included: text cut by every side
        p = validate({"op": "text", "text": ["Hg", "copy!", "W ide text", "j"][i % 4],
                      "x": float(rng.uniform(0, 1)), "y": float(rng.uniform(0, 1)),
                      "size": float(rng.uniform(0.02, 0.6)), "color": [int(v) for v in rng.integers(0, 256, 3)],
                      "opacity": float(rng.uniform(0.2, 1))})[1]
        out, _ = OPS["text"].fn(a, p, ctx_for(a))
        layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        ImageDraw.Draw(layer).text((p["x"] * w, p["y"] * h), p["text"], font=font(p["size"] * h),
                                   fill=tuple(p["color"]) + (255,))
        assert np.array_equal(out, _full_layer_blend(a, layer, p["opacity"])), p


def test_sticker_cut_to_the_image_gives_the_full_layer_pixels():
    rng = np.random.default_rng(2)
    a = np.asarray(photo(70, 90))
    h, w = a.shape[:2]
    for i in range(120):
        p = validate({"op": "sticker", "kind": ["circle", "face", "star", "heart"][i % 4],
                      "x": float(rng.uniform(0, 1)), "y": float(rng.uniform(0, 1)),
                      "size": float(rng.uniform(0.02, 1.0)), "degrees": float(rng.uniform(-360, 360) if i % 3 else 0),
                      "opacity": float(rng.uniform(0.2, 1))})[1]
        out, _ = OPS["sticker"].fn(a, p, ctx_for(a))
        st = _sticker_shape(p["kind"], max(2, int(round(p["size"] * min(w, h)))), p["color"])
        if p["degrees"]:
            st = st.rotate(p["degrees"], resample=Image.Resampling.BILINEAR, expand=True)
        layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        layer.paste(st, (int(round(p["x"] * w - st.width / 2)), int(round(p["y"] * h - st.height / 2))))
        assert np.array_equal(out, _full_layer_blend(a, layer, p["opacity"])), p


def test_flat_blend_by_table_equals_the_per_pixel_blend_and_the_formula():
    rng = np.random.default_rng(3)
    a = np.asarray(photo(64, 48))
    for _ in range(100):
        mask = rng.random(a.shape[:2]) < rng.uniform(0, 1)
        colour = [int(v) for v in rng.integers(0, 256, 3)]
        opacity = float(rng.choice([0.0, 1.0, rng.uniform(0, 1)]))
        got = C.blend_flat(a, colour, mask, opacity)
        assert np.array_equal(got, C.blend(a, colour, mask.astype(np.float32) * np.float32(opacity)))
        exact = np.where(mask[..., None], opacity * np.array(colour) + (1 - opacity) * a.astype(np.float64), a)
        assert np.abs(got - exact).max() <= 0.5 + 1e-4  # rounded to the nearest level


def test_frame_without_captions_stays_an_array_and_with_them_draws():
    a = np.asarray(photo())
    plain = validate({"op": "frame", "top": 0.1, "bottom": 0.1})[1]
    out, steps = OPS["frame"].fn(a, plain, ctx_for(a))
    assert isinstance(out, np.ndarray) and out.shape == a.shape and steps[0].name == "frame"
    assert (out[0] == 255).all()  # the bar colour
    meme = validate({"op": "frame", "top": 0.2, "bottom": 0.1, "text_top": "TOP"})[1]
    drawn, _ = OPS["frame"].fn(a, meme, ctx_for(a))
    assert isinstance(drawn, Image.Image) and (np.asarray(drawn)[: int(0.2 * a.shape[0])] < 128).any()


def test_step_sizes_of_array_ops_are_plain_ints():
    a = np.asarray(photo())
    for spec in ({"op": "scale", "factor": 0.5}, {"op": "pad", "left": 0.1, "top": 0, "right": 0.2, "bottom": 0.3},
                 {"op": "crop", "left": 0.2, "top": 0.1, "width": 0.5, "height": 0.5}):
        out, steps = OPS[spec["op"]].fn(a, validate(spec)[1], ctx_for(a))
        assert isinstance(steps[0], Step) and steps[0].out_size == (out.shape[1], out.shape[0])
        assert all(type(v) is int for v in steps[0].in_size + steps[0].out_size)


def test_huge_integers_are_refused_as_out_of_range_not_overflow():
    for spec in ({"op": "blur", "radius": 10**400}, {"op": "posterize", "bits": 10**400}):
        with pytest.raises(ValueError, match="out of range"):
            validate(spec)
