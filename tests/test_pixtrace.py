"""PixTrace: hand-built traces, exact inverse and transfer, patch overlaps.

Pixel convention: pixel (col c, row r) covers [c, c+1) x [r, r+1), centre (c+0.5, r+0.5);
sizes are (width, height). The overlap checks count pixel centres with a plain loop
that only uses ``Trace.to_source`` / ``Trace.from_source``, never the overlap code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icdlib.pixtrace import patch_overlap as ov
from icdlib.pixtrace import kernel as ovk
from icdlib.pixtrace import torch_counts as tc
from icdlib.pixtrace import trace as pt
from icdlib.pixtrace import Mapping, Step, Trace, overlap, overlap_batch, transfer


# ---------------------------------------------------------------- hand-built steps
def translate(tx, ty):
    return np.array([[1.0, 0, tx], [0, 1, ty], [0, 0, 1]])


def crop(size, x0, y0, w, h):
    return Step(translate(-x0, -y0), size, (w, h), name="crop")


def resize(size, out):
    return Step(np.diag([out[0] / size[0], out[1] / size[1], 1.0]), size, out, name="resize")


def hflip(size):
    return Step(np.array([[-1.0, 0, size[0]], [0, 1, 0], [0, 0, 1]]), size, size, name="hflip")


def vflip(size):
    return Step(np.array([[1.0, 0, 0], [0, -1, size[1]], [0, 0, 1]]), size, size, name="vflip")


def rotate(size, degrees):
    """Rotation about the canvas centre, same canvas (corners leave, padding enters)."""
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    cx, cy = size[0] / 2, size[1] / 2
    return Step(translate(cx, cy) @ rot @ translate(-cx, -cy), size, size, name="rotate")


def rot90(size):
    """Clockwise quarter turn: (x, y) -> (H - y, x) on a (H, W) canvas."""
    w, h = size
    return Step(np.array([[0.0, -1, h], [1, 0, 0], [0, 0, 1]]), size, (h, w), name="rot90")


def pad(size, p):
    return Step(translate(p, p), size, (size[0] + 2 * p, size[1] + 2 * p), name="pad")


def perspective(size, rng, strength=0.25):
    """Move the four corners by up to ``strength`` of the size; the homography that does it."""
    w, h = size
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    dst = src + rng.uniform(-strength, strength, (4, 2)) * [w, h]
    a = []
    for (x, y), (u, v) in zip(src, dst):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    m = np.linalg.svd(np.array(a))[2][-1].reshape(3, 3)
    return Step(m / m[2, 2], size, size, name="perspective")


def occlusion(size, rng):
    mask = np.ones((size[1], size[0]), dtype=bool)
    x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
    mask[y0 : y0 + rng.integers(3, size[1] // 2), x0 : x0 + rng.integers(3, size[0] // 2)] = False
    return Step.occlusion(size, mask)


def random_chain(rng, source, n_steps=4, masks=False):
    """A random chain of hand-built steps over ``source``; returns the list of Steps."""
    ops = ["crop", "resize", "hflip", "vflip", "rotate", "perspective", "pad", "rot90"]
    if masks:
        ops.append("occlusion")
    size, steps = source, []
    for op in rng.choice(ops, n_steps):
        w, h = size
        if op == "crop" and min(w, h) > 24:
            cw, ch = int(rng.integers(w // 2, w + 1)), int(rng.integers(h // 2, h + 1))
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            st = crop(size, x0, y0, cw, ch)
        elif op == "resize":
            st = resize(size, (int(rng.integers(32, 97)), int(rng.integers(32, 97))))
        elif op == "hflip":
            st = hflip(size)
        elif op == "vflip":
            st = vflip(size)
        elif op == "rotate":
            st = rotate(size, rng.uniform(-180, 180))
        elif op == "perspective":
            st = perspective(size, rng)
        elif op == "pad":
            st = pad(size, int(rng.integers(1, 9)))
        elif op == "rot90":
            st = rot90(size)
        elif op == "occlusion":
            st = occlusion(size, rng)
        else:
            continue
        steps.append(st)
        size = st.out_size
    return steps


def brute_overlap_counts(query: Trace, reference: Trace, patch: int) -> np.ndarray:
    """Integer counts [Nq, Nr + 1] by visiting every query pixel centre in a plain loop."""
    qc, qr = query.size[0] // patch, query.size[1] // patch
    rc, rr = reference.size[0] // patch, reference.size[1] // patch
    counts = np.zeros((qc * qr, rc * rr + 1), dtype=np.int64)
    for r in range(qr * patch):
        centres = np.stack([np.arange(qc * patch) + 0.5, np.full(qc * patch, r + 0.5)], -1)
        src = query.to_source(centres)  # float64 (to_dense is its float32 copy)
        ref = np.full_like(src, np.nan)
        ok = ~np.isnan(src).any(1)
        if ok.any():
            ref[ok] = reference.from_source(src[ok])
        for c in range(qc * patch):
            i = (r // patch) * qc + c // patch
            x, y = ref[c]
            j = rc * rr
            if not np.isnan(x):
                cx, cy = int(np.floor(x / patch)), int(np.floor(y / patch))
                if 0 <= cx < rc and 0 <= cy < rr:
                    j = cy * rc + cx
            counts[i, j] += 1
    return counts


def assert_counts_equal(ovl: torch.Tensor, counts: np.ndarray, patch: int):
    got = ovl.double().cpu().numpy() * patch * patch
    np.testing.assert_allclose(got, counts, atol=1e-3, rtol=0)


# ---------------------------------------------------------------- hand-built traces
def test_identity_trace_gives_pixel_centres():
    dense = Trace((5, 3)).to_dense()
    assert dense.dtype == np.float32 and dense.shape == (3, 5, 2)
    assert dense[2, 4].tolist() == [4.5, 2.5]
    assert dense[0, 0].tolist() == [0.5, 0.5]


def test_hflip_trace_sends_left_column_to_right():
    tr = Trace((6, 4), [hflip((6, 4))])
    dense = tr.to_dense()
    np.testing.assert_array_equal(dense[:, 0, 0], 5.5)
    np.testing.assert_array_equal(dense[:, 5, 0], 0.5)
    np.testing.assert_array_equal(dense[:, :, 1], np.arange(4)[:, None] + 0.5 + 0 * dense[:, :, 1])


def test_crop_trace_adds_the_crop_offset():
    tr = Trace((20, 10), [crop((20, 10), 7, 3, 5, 4)])
    assert tr.size == (5, 4)
    dense = tr.to_dense()
    assert dense[0, 0].tolist() == [7.5, 3.5]
    assert dense[3, 4].tolist() == [11.5, 6.5]


def test_resize_x2_halves_coordinates():
    dense = Trace((4, 3), [resize((4, 3), (8, 6))]).to_dense()
    assert dense[0, 0].tolist() == [0.25, 0.25]
    assert dense[5, 7].tolist() == [3.75, 2.75]
    # reduced-resolution table: a 4x3 grid over the 8x6 image samples every other pixel pair
    small = Trace((4, 3), [resize((4, 3), (8, 6))]).to_dense(size=(4, 3))
    assert small.shape == (3, 4, 2) and small[0, 0].tolist() == [0.5, 0.5]


def test_padding_border_is_nan_and_interior_traces():
    dense = Trace((4, 4), [pad((4, 4), 2)]).to_dense()
    assert dense.shape == (8, 8, 2)
    border = np.ones((8, 8), bool)
    border[2:6, 2:6] = False
    assert np.isnan(dense[border]).all()
    assert dense[2, 2].tolist() == [0.5, 0.5] and dense[5, 5].tolist() == [3.5, 3.5]
    assert Trace((4, 4), [pad((4, 4), 2)]).valid_mask().sum() == 16


def test_rot90_maps_top_left_to_top_right():
    tr = Trace((6, 4), [rot90((6, 4))])  # clockwise: (x, y) -> (4 - y, x), output 4 x 6
    assert tr.size == (4, 6)
    dense = tr.to_dense()
    # output pixel (c, r) comes from source (r + 0.5, 4 - (c + 0.5))
    for r in range(6):
        for c in range(4):
            assert dense[r, c].tolist() == [r + 0.5, 4 - (c + 0.5)]


def test_perspective_point_beyond_the_horizon_is_invalid():
    # x' = x / (1 - 0.02 x) + 200: source x > 50 has w < 0 ("behind the camera"); naive
    # division would still land source x = 99.5 on output x' = 100.5, inside the canvas.
    m = translate(200, 0) @ np.array([[1.0, 0, 0], [0, 1, 0], [-0.02, 0, 1]])
    tr = Trace((100, 10), [Step(m, (100, 10), (300, 10), name="perspective")])
    dense = tr.to_dense()
    assert np.isnan(dense[:, 100]).all()  # its naive preimage is source x = 99.5 or so
    assert np.isnan(tr.from_source(np.array([[99.5, 5.0]]))).all()
    # output (250.5, 5.5) <- source x = 50.5 / 2.01, y = 5.5 w (in front of the camera)
    x = 50.5 / 2.01
    np.testing.assert_allclose(dense[5, 250], [x, 5.5 * (1 - 0.02 * x)], rtol=1e-6)


def test_occlusion_mask_makes_pixels_untraceable():
    mask = np.ones((4, 6), bool)
    mask[1, 2] = False
    tr = Trace((6, 4), [Step.occlusion((6, 4), mask)])
    assert np.isnan(tr.to_dense()[1, 2]).all() and not np.isnan(tr.to_dense()[1, 3]).any()
    assert tr.valid_mask().sum() == 23


def test_to_dense_is_the_float32_copy_of_to_source():
    rng = np.random.default_rng(3)
    tr = Trace((70, 50), random_chain(rng, (70, 50), 5))
    exact = tr.to_source(pt.pixel_centres(tr.size))
    np.testing.assert_array_equal(tr.to_dense(), exact.astype(np.float32))


# ---------------------------------------------------------------- inverse and transfer
@pytest.mark.parametrize("seed", range(6))
def test_inverse_after_forward_is_identity(seed):
    rng = np.random.default_rng(seed)
    tr = Trace((80, 60), random_chain(rng, (80, 60), 5))
    pts = rng.uniform(0, 1, (400, 2)) * [80, 60]
    fwd = tr.from_source(pts)
    ok = ~np.isnan(fwd).any(1)
    assert ok.sum() > 0
    back = tr.to_source(fwd[ok])
    assert not np.isnan(back).any()
    np.testing.assert_allclose(back, pts[ok], atol=1e-6)  # analytic: far inside 0.5 px
    m = tr.forward.inverse().inverse()
    np.testing.assert_allclose(m.apply(pts[ok]), fwd[ok], atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_transfer_equals_pointwise_composition(seed):
    rng = np.random.default_rng(100 + seed)
    q = Trace((72, 64), random_chain(rng, (72, 64), 4, masks=True))
    r = Trace((72, 64), random_chain(rng, (72, 64), 3, masks=True))
    m = transfer(q, r)
    pts = rng.uniform(0, 1, (300, 2)) * q.size
    fast = m.apply(pts)
    for p, f in zip(pts, fast):
        s = q.to_source(p[None])[0]
        slow = np.full(2, np.nan) if np.isnan(s).any() else r.from_source(s[None])[0]
        if np.isnan(slow).any():
            assert np.isnan(f).all()
        else:
            np.testing.assert_allclose(f, slow, atol=1e-7)


def test_transfer_of_different_sources_raises():
    with pytest.raises(ValueError, match="source size"):
        transfer(Trace((10, 10)), Trace((12, 10)))


# ---------------------------------------------------------------- overlap
def test_identity_overlap_is_diagonal():
    tr = Trace((64, 48))
    o = overlap(tr, tr, 16)
    assert o.shape == (12, 13) and o.dtype == torch.float32
    expected = torch.cat([torch.eye(12), torch.zeros(12, 1)], 1)
    assert torch.equal(o, expected)


def test_flipped_query_gives_mirrored_patch_permutation():
    src = Trace((64, 32))
    flipped = Trace((64, 32), [hflip((64, 32))])
    o = overlap(flipped, src, 16)  # 4 x 2 grid
    for i in range(8):
        r, c = divmod(i, 4)
        j = r * 4 + (3 - c)
        assert o[i, j] == 1.0 and o[i].sum() == 1.0


def test_overlap_counts_crop_and_padding_by_hand():
    # query = source crop at x0 = 8 (half a patch), 32 x 16; reference = source 48 x 16
    q = Trace((48, 16), [crop((48, 16), 8, 0, 32, 16)])
    o = overlap(q, Trace((48, 16)), 16)
    assert torch.equal(o, torch.tensor([[0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0]]))
    # query = source padded by 4: each corner patch has 12 x 12 of its 16 x 16 pixels traced
    q = Trace((32, 32), [pad((32, 32), 4)])  # 40 x 40 -> 2 x 2 grid of the top-left 32 x 32
    o = overlap(q, Trace((32, 32)), 16)
    assert o[0, 0] == 144 / 256 and o[0, -1] == 112 / 256


@pytest.mark.parametrize("seed", range(8))
def test_overlap_matches_brute_force_count(seed):
    rng = np.random.default_rng(seed)
    source = (int(rng.integers(60, 100)), int(rng.integers(60, 100)))
    q = Trace(source, random_chain(rng, source, int(rng.integers(2, 6)), masks=seed % 2 == 1))
    r = Trace(source, random_chain(rng, source, int(rng.integers(0, 3)), masks=seed % 4 == 3))
    patch = [16, 8, 7, 12][seed % 4]
    if min(q.size + r.size) < patch:
        r = Trace(source)
    o = overlap(q, r, patch)
    torch.testing.assert_close(o.sum(1), torch.ones(len(o)))
    assert_counts_equal(o, brute_overlap_counts(q, r, patch), patch)


def test_overlap_exact_at_ties_on_patch_boundaries():
    # query = source shrunk by 2: query centre c + 0.5 lands on source x = 2c + 1, which
    # hits the boundaries of patch 7 exactly (x = 7, 21, ...): half-open [7k, 7k + 7).
    q = Trace((56, 42), [resize((56, 42), (28, 21))])
    r = Trace((56, 42))
    o = overlap(q, r, 7)
    assert_counts_equal(o, brute_overlap_counts(q, r, 7), 7)


@pytest.mark.parametrize("degrees", [90.0, 180.0, -90.0])
def test_overlap_exact_for_rotations_with_rounded_zero_slopes(degrees):
    # cos(90 deg) is 6e-17, not 0: rows run (almost) parallel to the reference grid and
    # pixel centres sit exactly on patch boundaries after the 2x shrink.
    src = (64, 64)
    q = Trace(src, [rotate(src, degrees), resize(src, (32, 32))])
    r = Trace(src, [pad(src, 8)])
    for patch in (8, 7):
        o = overlap(q, r, patch)
        assert_counts_equal(o, brute_overlap_counts(q, r, patch), patch)


def test_overlap_respects_half_open_canvas_edges():
    # query pixel centre c + 0.5 <- source x = 2c + 2: column 27 lands exactly on the
    # source's right edge x = W = 56, which is outside [0, W); the reference pads the
    # source by 7 so that point would still fall inside its patch grid.
    src = (56, 42)
    off_right = Step(np.array([[0.5, 0, -0.5], [0, 0.5, -0.5], [0, 0, 1]]), src, (28, 21))
    on_left = Step(np.array([[0.5, 0, 0.5], [0, 0.5, 0.5], [0, 0, 1]]), src, (28, 21))
    ref = Trace(src, [pad(src, 7)])
    o = overlap(Trace(src, [off_right]), ref, 7)
    # query patch (row 0, col 3): its column 27, 7 pixels, is untraceable
    assert round(float(o[3, -1]) * 49, 4) == 7
    assert_counts_equal(o, brute_overlap_counts(Trace(src, [off_right]), ref, 7), 7)
    o = overlap(Trace(src, [on_left]), ref, 7)  # column 0 <- source x = 0: inside
    assert o[0, -1] == 0
    assert_counts_equal(o, brute_overlap_counts(Trace(src, [on_left]), ref, 7), 7)


@pytest.mark.parametrize("seed", range(30))
def test_segment_path_equals_per_pixel_path(seed):
    rng = np.random.default_rng(1000 + seed)
    source = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
    masks = seed % 3 == 0
    m = transfer(
        Trace(source, random_chain(rng, source, int(rng.integers(1, 7)), masks=masks)),
        Trace(source, random_chain(rng, source, int(rng.integers(0, 4)), masks=masks)),
    )
    patch = int(rng.choice([4, 8, 16, 5]))
    qg, rg = pt.patch_grid(m.base_size, patch), pt.patch_grid(m.target_size, patch)
    mats, rows, strict = tc._stack([m], torch.device("cpu"))
    fast = ov.overlap_from_mappings([m], patch)[0]
    dense = tc.dense_counts(mats, rows, strict, patch, qg, rg, m.masks)[0]
    torch.testing.assert_close(fast, dense, atol=1e-6, rtol=0)


def _pairs(seed, n, masks):
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        q = random_chain(rng, (90, 80), 4, masks=masks and i % 3 == 1)
        q.append(resize(q[-1].out_size if q else (90, 80), (64, 48)))
        pairs.append((Trace((90, 80), q), Trace((90, 80), [resize((90, 80), (48, 64))])))
    return pairs


def test_batched_equals_per_pair():
    pairs = _pairs(7, 7, masks=True)
    batch = overlap_batch(pairs, 16, chunk=2)
    assert batch.shape == (7, 12, 13)
    for i, (q, r) in enumerate(pairs):
        assert torch.equal(batch[i], overlap(q, r, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_overlap_equals_cpu():
    pairs = _pairs(11, 9, masks=True)
    gpu = overlap_batch(pairs, 16, device="cuda")
    assert gpu.device.type == "cuda"
    assert torch.equal(gpu.cpu(), overlap_batch(pairs, 16))


# ---------------------------------------------------------------- bad input
def test_patch_below_one_raises():
    with pytest.raises(ValueError, match="patch"):
        overlap(Trace((32, 32)), Trace((32, 32)), 0)


def test_image_smaller_than_a_patch_raises():
    with pytest.raises(ValueError, match="smaller than one patch"):
        overlap(Trace((10, 40)), Trace((10, 40)), 16)


def test_singular_matrix_raises():
    with pytest.raises(ValueError, match="singular"):
        Step(np.diag([1.0, 0.0, 1.0]), (8, 8), (8, 8), name="squash")


def test_mismatched_sizes_raise():
    with pytest.raises(ValueError, match="does not match the previous output size"):
        Trace((8, 8), [resize((8, 8), (4, 4)), hflip((8, 8))])
    with pytest.raises(ValueError, match="mask shape"):
        Step.occlusion((8, 6), np.ones((8, 6), bool))
    a = (Trace((32, 32)), Trace((32, 32)))
    b = (Trace((32, 32), [resize((32, 32), (48, 32))]), Trace((32, 32)))
    with pytest.raises(ValueError, match="same sizes"):
        overlap_batch([a, b], 16)
    with pytest.raises(ValueError, match="no pairs"):
        overlap_batch([], 16)


def test_mapping_compose_checks_sizes():
    with pytest.raises(ValueError, match="cannot compose"):
        Mapping.identity((8, 8)).then(Mapping.identity((9, 8)))


# ---------------------------------------------------------------- compiled CPU path
def _torch_counts(m: Mapping, patch: int) -> np.ndarray:
    o = tc.overlap_torch([m], patch, torch.device("cpu"))[0].double().numpy()
    return np.rint(o * patch * patch).astype(np.int64)


def _kernel_counts(maps, patch: int, parallel: bool = False) -> np.ndarray:
    qg, rg = pt.patch_grid(maps[0].base_size, patch), pt.patch_grid(maps[0].target_size, patch)
    if not parallel:
        return ovk.count(maps, patch, qg, rg)
    out = np.empty((len(maps), qg[0] * qg[1], rg[0] * rg[1] + 1), np.float32)
    ovk._count_parallel(*ovk.pack(maps), patch, *qg, *rg, out)
    return np.rint(out.astype(np.float64) * patch * patch).astype(np.int64)


@pytest.mark.parametrize("seed", range(16))
def test_compiled_counts_equal_torch_path_and_brute_force(seed):
    rng = np.random.default_rng(5000 + seed)
    source = (int(rng.integers(50, 90)), int(rng.integers(50, 90)))
    q = Trace(source, random_chain(rng, source, int(rng.integers(2, 6)), masks=seed % 2 == 0))
    r = Trace(source, random_chain(rng, source, int(rng.integers(0, 4)), masks=seed % 4 == 0))
    patch = [16, 8, 7, 12, 5][seed % 5]
    if min(q.size + r.size) < patch:
        r = Trace(source)
    m = transfer(q, r)
    got = _kernel_counts([m], patch)[0]
    assert got.sum(1).tolist() == [patch * patch] * len(got)
    np.testing.assert_array_equal(got, brute_overlap_counts(q, r, patch))
    np.testing.assert_array_equal(got, _torch_counts(m, patch))


@pytest.mark.parametrize("degrees", [90.0, 180.0, -90.0])
def test_compiled_counts_exact_at_rotation_ties_and_perspective(degrees):
    src = (64, 48)
    q = Trace(src, [rotate(src, degrees), resize(src, (32, 24))])
    r = Trace(src, [perspective(src, np.random.default_rng(3)), pad(src, 8)])
    for patch in (8, 7, 16):
        got = _kernel_counts([transfer(q, r)], patch)[0]
        np.testing.assert_array_equal(got, brute_overlap_counts(q, r, patch))


@pytest.mark.parametrize("seed", range(6))
def test_compiled_counts_exact_for_axis_aligned_chains_with_occlusions(seed):
    # affine map + axis-aligned masks: the span shortcut (cells and mask columns settled
    # from a span's end pixels), including spans wholly inside a hidden block
    rng = np.random.default_rng(7000 + seed)
    src = (int(rng.integers(60, 90)), int(rng.integers(60, 90)))
    steps = [occlusion(src, rng), hflip(src), crop(src, 3, 5, src[0] - 9, src[1] - 7)]
    size = steps[-1].out_size
    steps += [resize(size, (int(rng.integers(40, 120)), int(rng.integers(40, 120))))]
    steps += [occlusion(steps[-1].out_size, rng), vflip(steps[-1].out_size)]
    q = Trace(src, steps)
    r = Trace(src, [pad(src, 5), occlusion((src[0] + 10, src[1] + 10), rng)])
    for patch in (8, 5):
        got = _kernel_counts([transfer(q, r)], patch)[0]
        np.testing.assert_array_equal(got, brute_overlap_counts(q, r, patch))


def test_compiled_masks_are_looked_up_through_projective_matrices():
    rng = np.random.default_rng(9)
    src = (72, 64)
    box = np.ones((64, 72), bool)
    box[10:40, 20:50] = False  # hidden in the source frame, then warped by perspective
    q = Trace(src, [Step.occlusion(src, box), perspective(src, rng), hflip(src)])
    r = Trace(src, [occlusion(src, rng), perspective(src, rng)])
    m = transfer(q, r)
    assert any(mm[2, 0] != 0 or mm[2, 1] != 0 for _, mm in m.masks)
    got = _kernel_counts([m], 8)[0]
    np.testing.assert_array_equal(got, brute_overlap_counts(q, r, 8))
    mats, rows, strict = tc._stack([m], torch.device("cpu"))
    qg, rg = pt.patch_grid(m.base_size, 8), pt.patch_grid(m.target_size, 8)
    dense = tc.dense_counts(mats, rows, strict, 8, qg, rg, m.masks)[0] * 64
    np.testing.assert_array_equal(got, dense.round().long().numpy())


def test_occluded_block_counts_as_traced_nowhere_by_hand():
    mask = np.ones((32, 32), bool)
    mask[0:4, 0:8] = False  # 32 pixels of patch 0, none elsewhere
    o = overlap(Trace((32, 32), [Step.occlusion((32, 32), mask)]), Trace((32, 32)), 16)
    assert o[0, 0] == 224 / 256 and o[0, -1] == 32 / 256
    assert torch.equal(o[1:, :4], torch.eye(4)[1:]) and (o[1:, -1] == 0).all()


def test_compiled_batched_and_parallel_equal_per_pair():
    pairs = _pairs(21, 9, masks=True) + _pairs(21, 3, masks=True)  # repeats share masks
    maps = [transfer(q, r) for q, r in pairs]
    serial = _kernel_counts(maps, 16)
    np.testing.assert_array_equal(_kernel_counts(maps, 16, parallel=True), serial)
    for i, m in enumerate(maps):
        np.testing.assert_array_equal(_kernel_counts([m], 16)[0], serial[i])
        np.testing.assert_array_equal(serial[i], _torch_counts(m, 16))
    out = overlap_batch(pairs, 16)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.from_numpy(serial).to(torch.float32) / 256.0)
