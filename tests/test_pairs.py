import dataclasses

import numpy as np
import pytest
import torch

from icdlib.data.pairs import IMAGENET_MEAN, IMAGENET_STD, invalid_overlap, make_loader, resize_traced, to_tensor
from icdlib.data import MatcherPairs, PairsConfig, TracedPairs, collate, pairs_config
from icdlib.pixtrace import Trace
from icdlib.data import render

CFG = PairsConfig(size=64, patch=16)  # 4x4 = 16 patches
N = 16


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    out = []
    for i, kind in enumerate(["dead_leaves", "spectral", "mixed", "text", "gradient", "dead_leaves"]):
        p = root / f"T{i:06d}.png"
        render(kind, 100 + i, (96, 80)).save(p)
        out.append(p)
    return out


def test_pair_shapes_dtypes_and_overlap_rows_sum_to_one(paths):
    ds = TracedPairs(paths, CFG, seed=0)
    for i in range(len(paths)):
        s = ds[i]
        assert s["query"].shape == (3, 64, 64) and s["query"].dtype == torch.float32
        assert s["reference"].shape == (3, 64, 64)
        assert s["overlap_qr"].shape == (N, N + 1) and s["overlap_rq"].shape == (N, N + 1)
        assert torch.allclose(s["overlap_qr"].sum(1), torch.ones(N), atol=1e-5)
        assert torch.allclose(s["overlap_rq"].sum(1), torch.ones(N), atol=1e-5)
        assert s["copynce"].dtype == torch.bool and int(s["index"]) == i
        assert float(s["traced"]) == pytest.approx(1 - float(s["overlap_qr"][:, -1].mean()), abs=1e-6)


def test_photometric_only_pair_has_diagonal_overlap(paths):
    ds = TracedPairs(paths, dataclasses.replace(CFG, families=("photometric",)), seed=1)
    s = ds[2]
    expected = torch.cat([torch.eye(N), torch.zeros(N, 1)], 1)
    assert torch.equal(s["overlap_qr"], expected) and torch.equal(s["overlap_rq"], expected)
    assert bool(s["copynce"])


def test_sample_is_a_pure_function_of_seed_epoch_and_index(paths):
    a = TracedPairs(paths, CFG, seed=4)
    b = TracedPairs(paths, CFG, seed=4)
    b[0], b[5]  # other samples drawn first change nothing
    x, y = a.sample(3, epoch=2), b[(3, 2)]
    for k in x:
        assert torch.equal(x[k], y[k]), k
    b.set_epoch(2)
    assert torch.equal(b[3]["query"], x["query"])
    others = [a.sample(3, epoch=e)["query"] for e in range(4)]
    assert any(not torch.equal(o, x["query"]) for o in others)


def test_reference_is_the_clean_image_resized(paths):
    from icdlib.data import load_image

    s = TracedPairs(paths, CFG, seed=0)[1]
    img, _ = resize_traced(load_image(paths[1]), Trace((96, 80)), 64)
    assert torch.equal(s["reference"], to_tensor(img))
    assert not bool(s["copy_vs_copy"])


def test_copy_vs_copy_edits_the_reference_too(paths):
    from icdlib.data import load_image

    ds = TracedPairs(paths, dataclasses.replace(CFG, copy_vs_copy=1.0, reference_families=("geometric",)), seed=0)
    clean = to_tensor(resize_traced(load_image(paths[0]), Trace((96, 80)), 64)[0])
    changed = 0
    for e in range(3):
        s = ds.sample(0, e)
        assert bool(s["copy_vs_copy"])
        assert torch.allclose(s["overlap_rq"].sum(1), torch.ones(N), atol=1e-5)
        changed += not torch.equal(s["reference"], clean)
    assert changed >= 1


def test_pairs_carry_traced_overlaps_whatever_the_target_control(paths):
    """The no-tracing controls are applied by the loss (weight-matched), not by the data."""
    geo = dataclasses.replace(CFG, families=("geometric",))
    traced = TracedPairs(paths, geo, seed=2)[0]
    uniform = TracedPairs(paths, dataclasses.replace(geo, targets="uniform"), seed=2)[0]
    assert torch.equal(traced["query"], uniform["query"])
    assert torch.equal(traced["overlap_qr"], uniform["overlap_qr"])


def test_resize_trace_sends_pixel_centres_to_scaled_centres():
    from PIL import Image

    img, tr = resize_traced(Image.new("RGB", (4, 2)), Trace((4, 2)), 8)
    assert img.size == (8, 8)
    # source centre of pixel (1, 0) -> (1.5, 0.5) * (8/4, 8/2) = (3, 2)
    assert np.allclose(tr.from_source(np.array([[1.5, 0.5]])), [[3.0, 2.0]])


def test_to_tensor_normalises_with_imagenet_statistics():
    from PIL import Image

    x = to_tensor(Image.new("RGB", (2, 2), (255, 0, 128)))
    expect = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], (0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1],
              (128 / 255 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]]
    assert torch.allclose(x[:, 1, 1], torch.tensor(expect), atol=1e-6)


def test_neighbours_add_a_second_pair_and_collate_flattens(paths):
    nb = np.array([[i, (i + 1) % 6, (i + 2) % 6] for i in range(6)])
    ds = TracedPairs(paths, dataclasses.replace(CFG, knn=1), seed=0, neighbours=nb)
    item = ds[4]
    assert isinstance(item, list) and len(item) == 2
    assert int(item[0]["index"]) == 4 and int(item[1]["index"]) == 5  # knn=1: the first non-self neighbour
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["query"].shape == (6, 3, 64, 64) and batch["overlap_qr"].shape == (6, N, N + 1)
    assert batch["index"].tolist() == [0, 1, 1, 2, 2, 3]
    with pytest.raises(ValueError, match="neighbours"):
        TracedPairs(paths, CFG, seed=0, neighbours=np.zeros((2, 3), dtype=int))


def test_collate_stacks_every_key(paths):
    ds = TracedPairs(paths, CFG, seed=0)
    batch = collate([ds[0], ds[1], ds[2]])
    assert set(batch) == set(ds[0])
    assert batch["copynce"].shape == (3,) and batch["copynce"].dtype == torch.bool
    assert torch.equal(batch["overlap_qr"][1], ds[1]["overlap_qr"])
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_matcher_negatives_have_all_mass_in_the_invalid_column(paths):
    neg = MatcherPairs(paths, dataclasses.replace(CFG, pos_rate=0.0), seed=0)
    for i in range(len(paths)):
        s = neg[i]
        assert float(s["label"]) == 0.0 and int(s["query_index"]) != i
        # the released reduction counts every pair (min_traced 0); a threshold leaves negatives out
        assert torch.equal(s["overlap_qr"], invalid_overlap(N)) and bool(s["copynce"])
    strict = MatcherPairs(paths, dataclasses.replace(CFG, pos_rate=0.0, min_traced=0.1), seed=0)
    assert not any(bool(strict[i]["copynce"]) for i in range(len(paths)))
    pos = MatcherPairs(paths, dataclasses.replace(CFG, pos_rate=1.0, families=("photometric",)), seed=0)[3]
    assert float(pos["label"]) == 1.0 and int(pos["query_index"]) == 3
    assert torch.equal(pos["overlap_qr"][:, :-1], torch.eye(N))


def test_matcher_negatives_come_from_neighbours_when_asked(paths):
    nb = np.array([[i, (i + 3) % 6] for i in range(6)])
    cfg = dataclasses.replace(CFG, pos_rate=0.0, neg_knn_p=1.0, neg_edit_p=0.0)
    ds = MatcherPairs(paths, cfg, seed=0, neighbours=nb)
    assert [int(ds[i]["query_index"]) for i in range(6)] == [3, 4, 5, 0, 1, 2]


def test_pos_rate_controls_the_share_of_positives(paths):
    ds = MatcherPairs(paths, dataclasses.replace(CFG, pos_rate=0.3, families=("photometric",)), seed=0)
    labels = [float(ds.sample(i % 6, e)["label"]) for e in range(10) for i in range(6)]
    assert 0.1 < np.mean(labels) < 0.5


def test_loader_batches_in_a_seeded_order(paths):
    ds = TracedPairs(paths, dataclasses.replace(CFG, families=("photometric",)), seed=0)
    order = [b["index"].tolist() for b in make_loader(ds, batch_size=2, workers=0, seed=9)]
    again = [b["index"].tolist() for b in make_loader(ds, batch_size=2, workers=0, seed=9)]
    assert order == again and len(order) == 3
    assert sorted(sum(order, [])) == list(range(6))


def test_bad_config_and_inputs_raise_value_error_naming_them(paths):
    with pytest.raises(ValueError, match="targets"):
        PairsConfig(targets="random")
    with pytest.raises(ValueError, match="copy_vs_copy"):
        PairsConfig(copy_vs_copy=2.0)
    with pytest.raises(ValueError, match="pairs"):
        pairs_config({"pairs": {"sise": 3}})
    assert pairs_config({"pairs": {"size": 224}}).size == 224
    with pytest.raises(ValueError, match="image_paths"):
        TracedPairs([], CFG, seed=0)
    with pytest.raises(ValueError, match="seed"):
        TracedPairs(paths, CFG, seed=-3)
    with pytest.raises(IndexError):
        TracedPairs(paths, CFG, seed=0)[99]


def test_copynce_flag_is_traced_share_at_least_min_traced(paths):
    ds = TracedPairs(paths, dataclasses.replace(CFG, families=("geometric", "composite"), min_traced=0.9), seed=5)
    items = [ds.sample(i, e) for e in range(3) for i in range(len(paths))]
    flags = [bool(s["copynce"]) for s in items]
    assert flags == [float(s["traced"]) >= 0.9 for s in items]
    assert not all(flags)


def test_loader_workers_give_the_same_batches_as_the_main_process(paths):
    ds = TracedPairs(paths, CFG, seed=3)
    ds.set_epoch(1)
    main = list(make_loader(ds, batch_size=3, workers=0, seed=1))
    forked = list(make_loader(ds, batch_size=3, workers=2, seed=1))
    assert len(main) == len(forked) == 2
    for a, b in zip(main, forked):
        for k in a:
            assert torch.equal(a[k], b[k]), k
