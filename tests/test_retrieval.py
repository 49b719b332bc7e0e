import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from icdlib.eval.rescore import N_LCE_PASSES, rescore
from icdlib.eval.retrieval import (
    EvalConfig,
    descriptor_predictions,
    embed,
    load_features,
    merge_view_predictions,
    normalize_scores,
    predictions_frame,
    save_features,
    search,
)
from icdlib.eval.views import lce_passes, query_views, reference_views


class MeanColour(torch.nn.Module):
    """Fake descriptor: per-channel means over a 2x2 grid, L2-normalised -> [B, 12]."""

    def forward(self, x):
        f = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return torch.nn.functional.normalize(f, dim=1)


class ColourMatcher(torch.nn.Module):
    """Fake matcher: logit = 2 - 4 * mean |colour(q) - colour(r)| (channel means)."""

    def forward(self, q, r):
        return 2.0 - 4.0 * (q.mean(dim=(2, 3)) - r.mean(dim=(2, 3))).abs().mean(dim=1)


COLOURS = [(220, 30, 30), (30, 200, 40), (40, 40, 210), (230, 220, 30), (30, 210, 220)]


def _folder(tmp_path, name, colours, size=(40, 30)):
    d = tmp_path / name
    d.mkdir()
    items = []
    for i, c in enumerate(colours):
        im = Image.new("RGB", size, c)
        im.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), tuple(255 - v for v in c)), (0, 0))
        p = d / f"{name[0].upper()}{i:03d}.png"
        im.save(p)
        items.append((p.stem, p))
    return items


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_search_matches_brute_force_topk():
    rng = np.random.default_rng(0)
    q, r = _unit(rng, 7, 16), _unit(rng, 50, 16)
    s, i = search(q, r, 5)
    sims = q @ r.T
    want = np.argsort(-sims, axis=1)[:, :5]
    np.testing.assert_array_equal(i, want)
    np.testing.assert_allclose(s, np.take_along_axis(sims, want, axis=1), rtol=1e-5)


def test_ivf_search_visiting_every_list_is_exact():
    rng = np.random.default_rng(1)
    q, r = _unit(rng, 5, 8), _unit(rng, 400, 8)
    _, flat = search(q, r, 3)
    _, ivf = search(q, r, 3, index="IVF4,Flat", nprobe=4)
    np.testing.assert_array_equal(ivf, flat)


def test_search_rejects_bad_inputs():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="bad faiss index string 'Nope'"):
        search(_unit(rng, 2, 4), _unit(rng, 3, 4), 1, index="Nope")
    with pytest.raises(ValueError, match="must be \\[n, d\\] alike"):
        search(_unit(rng, 2, 4), _unit(rng, 3, 5), 1)
    s, i = search(_unit(rng, 2, 4), _unit(rng, 3, 4), 10)  # k clipped to 3 references
    assert s.shape == i.shape == (2, 3)


def test_normalisation_subtracts_mean_of_aux_ranks_one_to_four():
    # query (1, 0); auxiliary unit vectors with cosines 0.9, 0.8, 0.7, 0.6, 0.5, 0.1
    cos = np.array([0.5, 0.9, 0.1, 0.7, 0.8, 0.6])
    aux = np.stack([cos, np.sqrt(1 - cos**2)], axis=1).astype(np.float32)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    s = np.array([[0.95, 0.3]], dtype=np.float32)
    # ranks [1, 5): 0.8, 0.7, 0.6, 0.5 -> mean 0.65
    np.testing.assert_allclose(normalize_scores(s, q, aux), [[0.30, -0.35]], atol=1e-6)
    # alpha 0.5, ranks [0, 2): 0.9, 0.8 -> 0.5 * 0.85
    np.testing.assert_allclose(normalize_scores(s, q, aux, alpha=0.5, start=0, end=2), [[0.525, -0.125]], atol=1e-6)
    with pytest.raises(ValueError, match="need >= end=9"):
        normalize_scores(s, q, aux, end=9)


def test_predictions_frame_drops_missing_neighbours():
    df = predictions_frame(["a", "b"], ["x", "y", "z"], np.array([[0.9, 0.1], [0.5, -1.0]]),
                           np.array([[2, 0], [1, -1]]))
    assert df.values.tolist() == [["a", "z", 0.9], ["a", "x", 0.1], ["b", "y", 0.5]]


def test_view_merge_keeps_max_per_pair_and_top_k():
    df = pd.DataFrame({"query_id": ["a"] * 4 + ["b"], "reference_id": ["x", "y", "x", "z", "x"],
                       "score": [0.2, 0.5, 0.7, 0.1, 0.3]})
    out = merge_view_predictions(df, k=2)
    assert out.values.tolist() == [["a", "x", 0.7], ["a", "y", 0.5], ["b", "x", 0.3]]


def test_lce_view_counts_and_crop_geometry():
    # pixel value encodes its column (red) and row (green)
    arr = np.zeros((30, 60, 3), dtype=np.uint8)
    arr[..., 0] = np.arange(60)[None, :]
    arr[..., 1] = np.arange(30)[:, None]
    img = Image.fromarray(arr)
    qv, rv = query_views(img), reference_views(img)
    assert len(qv) == 26 and len(rv) == 10 and N_LCE_PASSES == 35
    assert [v.size for v in rv[1:6]] == [(20, 10)] * 5  # third-crops: 1/3 of (60, 30)
    # centre third-crop starts at (20, 10); the one at (1/2, 1/6) starts at (30, 5)
    assert np.asarray(rv[1])[0, 0, :2].tolist() == [20, 10]
    assert np.asarray(rv[3])[0, 0, :2].tolist() == [30, 5]
    assert [v.size for v in rv[6:10]] == [(30, 15)] * 4
    assert np.asarray(rv[9])[0, 0, :2].tolist() == [30, 15]  # bottom-right quadrant
    tiles = qv[10:19]
    assert np.asarray(tiles[5])[0, 0, :2].tolist() == [40, 10]  # row 1, column 2
    assert qv[-1].size[0] > 60  # 315 degrees, expanded canvas


def test_light_lce_views_are_the_quadrants_and_the_centre_third():
    arr = np.zeros((30, 60, 3), dtype=np.uint8)
    arr[..., 0] = np.arange(60)[None, :]
    arr[..., 1] = np.arange(30)[:, None]
    img = Image.fromarray(arr)
    qv, rv = query_views(img, "light"), reference_views(img, "light")
    assert len(qv) == 6 and len(rv) == 5 and lce_passes("light") == 10 and lce_passes() == 35
    assert qv[0] is img and rv[0] is img
    corners = [np.asarray(v)[0, 0, :2].tolist() for v in rv[1:]]
    assert corners == [[0, 0], [30, 0], [0, 15], [30, 15]] and {v.size for v in rv[1:]} == {(30, 15)}
    assert [np.asarray(v)[0, 0, :2].tolist() for v in qv[1:5]] == corners
    assert qv[5].size == (20, 10) and np.asarray(qv[5])[0, 0, :2].tolist() == [20, 10]  # centre third
    with pytest.raises(ValueError, match="'most'"):
        query_views(img, "most")
    with pytest.raises(ValueError, match="lce_views.*'most'"):
        EvalConfig(lce_views="most")


def test_light_lce_scores_the_max_over_its_ten_view_pairs(tmp_path):
    from icdlib.data import load_image
    from icdlib.models import preprocess

    refs = _folder(tmp_path, "ref", COLOURS[:2])
    q = Image.new("RGB", (64, 64), (128, 128, 128))
    q.paste(Image.new("RGB", (32, 32), COLOURS[1]), (32, 32))
    qp = tmp_path / "Q9.png"
    q.save(qp)
    pairs = pd.DataFrame({"query_id": ["Q9", "Q9"], "reference_id": ["R000", "R001"], "score": [0.0, 0.0]})
    m = ColourMatcher()
    got = rescore(m, pairs, {"Q9": qp}, dict(refs), size=32, batch_size=7, lce=True, lce_views="light")
    qimg = load_image(qp)
    want = []
    for rid in ["R000", "R001"]:
        rimg = load_image(dict(refs)[rid])
        # by hand: each light query view against the full reference, the full query against each quadrant
        view_pairs = ([(v, rimg) for v in query_views(qimg, "light")]
                      + [(qimg, v) for v in reference_views(rimg, "light")[1:]])
        assert len(view_pairs) == 10
        want.append(max(torch.sigmoid(m(preprocess([a], 32), preprocess([b], 32))).item() for a, b in view_pairs))
    np.testing.assert_allclose(got["score"], want, rtol=1e-5)
    assert got["score"].iloc[1] > got["score"].iloc[0]  # the bottom-right quadrant holds R001's colour


def test_embed_streams_files_in_batches_like_a_direct_forward(tmp_path):
    from icdlib.data import load_image
    from icdlib.models import preprocess

    items = _folder(tmp_path, "ref", COLOURS)
    model = MeanColour()
    f = embed(model, [p for _, p in items], size=32, batch_size=2)
    direct = model(preprocess([load_image(p) for _, p in items], 32)).numpy()
    assert f.shape == (5, 12) and f.dtype == np.float32
    np.testing.assert_allclose(f, direct, atol=1e-6)
    fv = embed(model, [p for _, p in items[:2]], size=32, batch_size=30, views=reference_views)
    assert fv.shape == (2, 10, 12)
    np.testing.assert_allclose(fv[:, 0], direct[:2], atol=1e-6)


def test_features_round_trip(tmp_path):
    f = np.arange(6, dtype=np.float32).reshape(3, 2)
    save_features(tmp_path / "feats" / "ref", ["R0", "R1", "R2"], f)
    ids, g = load_features(tmp_path / "feats" / "ref.npy")
    assert ids == ["R0", "R1", "R2"]
    np.testing.assert_array_equal(g, f)
    with pytest.raises(ValueError, match="2 ids but 3 feature rows"):
        save_features(tmp_path / "x", ["a", "b"], f)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_features(tmp_path / "nothing")


def test_descriptor_predictions_rank_the_copied_reference_first(tmp_path):
    refs = _folder(tmp_path, "ref", COLOURS)
    queries = _folder(tmp_path, "query", [COLOURS[3], COLOURS[1]], size=(50, 50))
    model = MeanColour()
    rf = embed(model, [p for _, p in refs], 32)
    qf = embed(model, [p for _, p in queries], 32)
    cfg = EvalConfig(k=2)
    df = descriptor_predictions([i for i, _ in queries], qf, [i for i, _ in refs], rf, cfg)
    top = df.groupby("query_id").head(1).set_index("query_id")["reference_id"].to_dict()
    assert top == {"Q000": "R003", "Q001": "R001"}
    assert len(df) == 4
    # multi-view queries: the full view is among the views, so the best score cannot drop
    qv = embed(model, [p for _, p in queries], 32, views=query_views)
    dv = descriptor_predictions([i for i, _ in queries], qv, [i for i, _ in refs], rf, cfg)
    assert dv.groupby("query_id")["score"].max().ge(df.groupby("query_id")["score"].max() - 1e-6).all()


def test_rescore_gives_sigmoid_of_matcher_logit_and_lce_finds_the_crop(tmp_path):
    from icdlib.data import load_image
    from icdlib.models import preprocess

    refs = _folder(tmp_path, "ref", COLOURS[:2])
    # query: reference R001's colour only in its top-left quadrant, grey elsewhere
    q = Image.new("RGB", (64, 64), (128, 128, 128))
    q.paste(Image.new("RGB", (32, 32), COLOURS[1]), (0, 0))
    qp = tmp_path / "Q9.png"
    q.save(qp)
    pairs = pd.DataFrame({"query_id": ["Q9", "Q9"], "reference_id": ["R000", "R001"], "score": [0.0, 0.0]})
    paths_q, paths_r = {"Q9": qp}, dict(refs)
    m = ColourMatcher()
    plain = rescore(m, pairs, paths_q, paths_r, size=32, batch_size=1)
    qt = preprocess([load_image(qp)], 32)
    want = [torch.sigmoid(m(qt, preprocess([load_image(paths_r[r])], 32))).item() for r in ["R000", "R001"]]
    np.testing.assert_allclose(plain["score"], want, rtol=1e-5)
    lce = rescore(m, pairs, paths_q, paths_r, size=32, batch_size=70, lce=True)
    assert (lce["score"].to_numpy() >= plain["score"].to_numpy() - 1e-6).all()
    # the quadrant view of the query holds R001's colour: LCE raises that pair clearly
    assert lce["score"].iloc[1] > plain["score"].iloc[1] + 0.05
    with pytest.raises(ValueError, match="reference id.*'R404'"):
        rescore(m, pairs.assign(reference_id=["R404", "R001"]), paths_q, paths_r, size=32)


def test_eval_config_rejects_bad_ranks():
    with pytest.raises(ValueError, match="norm_start < norm_end"):
        EvalConfig(norm_start=3, norm_end=3)
    with pytest.raises(ValueError, match="eval.k must be >= 1"):
        EvalConfig(k=0)
