"""Images decoded once (icdlib.eval.pixels): bit-identical model input, descriptors and matcher
scores to streaming the files, within a byte budget; and the file lock that concurrent runs share."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from icdlib.eval.engine import Benchmark
from icdlib.eval.pixels import PixelCache, decode_pixels
from icdlib.eval.rescore import image_blocks, rescore, rescore_pixels
from icdlib.eval.retrieval import EvalConfig, embed, embed_pixels
from icdlib.locks import file_lock
from icdlib.models import DescriptorConfig, MatcherConfig, build_descriptor, build_matcher, preprocess
from icdlib.models.preprocess import from_pixels

SIZE = 32


def _images(folder: Path, n: int = 7) -> list[Path]:
    """Files of several formats, modes and shapes, none of them SIZE x SIZE."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        h, w = 40 + 7 * i, 57 - 3 * i
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        if i % 3 == 1:
            img = img.convert("L")
        elif i % 3 == 2:
            img = img.convert("RGBA")
        p = folder / (f"im{i}.jpg" if i % 2 == 0 and img.mode != "RGBA" else f"im{i}.png")
        img.save(p)
        paths.append(p)
    return paths


def _independent_normalisation(pixels):
    """The normalisation written out independently: float32 pixels / 255, ImageNet mean and std."""
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    return np.stack([((np.asarray(a, np.float32) / np.float32(255.0) - mean) / std).transpose(2, 0, 1) for a in pixels])


def test_preprocess_equals_an_independent_normalisation_of_its_resize(tmp_path):
    from icdlib.data import load_image
    from icdlib.models.preprocess import resized_pixels
    imgs = [load_image(p) for p in _images(tmp_path)]
    pixels = [resized_pixels(im, SIZE) for im in imgs]
    np.testing.assert_allclose(preprocess(imgs, SIZE).numpy(), _independent_normalisation(pixels), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(256, 256), (200, 300), (640, 480), (100, 80), (37, 23), (224, 500), (300, 100),
                                   (1, 1)])
def test_model_resize_is_pillows_bicubic_passes_within_two_grey_levels(shape):
    """Against Pillow's bicubic run as two 1-D resizes, horizontal then vertical: shrinking,
    enlarging, one side each way, tiny inputs; smooth and noisy content."""
    from icdlib.edits.raster import model_resize
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    smooth = Image.fromarray(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)).resize(shape[::-1], Image.BILINEAR)
    noisy = rng.integers(0, 256, (shape[0], shape[1], 3), dtype=np.uint8)
    for a in (np.asarray(smooth), noisy):
        im = Image.fromarray(a)
        want = np.asarray(im.resize((224, shape[0]), Image.BICUBIC).resize((224, 224), Image.BICUBIC)).astype(int)
        got = model_resize(a, 224)
        assert got.dtype == np.uint8 and got.shape == (224, 224, 3) and got.flags.c_contiguous
        diff = np.abs(got.astype(int) - want)
        assert diff.max() <= 2, shape
        assert (diff > 0).mean() < 0.02, (shape, (diff > 0).mean())


def test_model_resize_keeps_a_same_size_image_and_refuses_what_is_not_rgb_uint8():
    from icdlib.edits.raster import model_resize
    a = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    out = model_resize(a, 4)
    assert np.array_equal(out, a) and out is not a
    with pytest.raises(ValueError, match="uint8"):
        model_resize(a.astype(np.float32), 8)
    with pytest.raises(ValueError, match="uint8"):
        model_resize(a[..., 0], 8)


def test_decoded_pixels_normalise_to_exactly_what_preprocess_gives(tmp_path):
    from icdlib.data import load_image
    paths = _images(tmp_path)
    px = decode_pixels(paths, SIZE, num_workers=0)
    assert px.dtype == torch.uint8 and px.shape == (len(paths), SIZE, SIZE, 3)
    assert torch.equal(from_pixels(px), preprocess([load_image(p) for p in paths], SIZE))


def test_from_pixels_refuses_what_is_not_uint8_pixels():
    with pytest.raises(ValueError, match="uint8"):
        from_pixels(torch.zeros(2, SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="uint8"):
        from_pixels(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8))


def _descriptor():
    return build_descriptor(DescriptorConfig(img_size=SIZE, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                                             desc_dim=16), seed=0)


def _matcher():
    return build_matcher(MatcherConfig(img_size=SIZE, patch_size=16, embed_dim=32, num_heads=2, encoder_depth=1,
                                       fusion_depth=1), seed=0)


def test_embedding_decoded_pixels_gives_the_files_descriptors_bit_for_bit(tmp_path):
    paths = _images(tmp_path)
    model = _descriptor()
    streamed = embed(model, paths, SIZE, batch_size=3, num_workers=0)
    cached = embed_pixels(model, decode_pixels(paths, SIZE), batch_size=3)
    assert cached.dtype == np.float32 and np.array_equal(streamed, cached)


class _PairOnly(torch.nn.Module):
    """A matcher seen only through ``forward(q, r)`` (no ``encode`` / ``fuse``)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, q, r):
        return self.inner(q, r)


def test_rescoring_decoded_pixels_gives_the_files_scores(tmp_path):
    paths = _images(tmp_path)
    q, r = {f"Q{i}": p for i, p in enumerate(paths[:3])}, {f"R{i}": p for i, p in enumerate(paths[3:])}
    pairs = pd.DataFrame([(qi, ri, 0.0) for qi in q for ri in r], columns=["query_id", "reference_id", "score"])
    pairs = pairs.sample(frac=1.0, random_state=0).reset_index(drop=True)  # repeated ids, in no order
    model = _matcher()
    streamed = rescore(model, pairs, q, r, SIZE, batch_size=5)
    qx, rx = decode_pixels(list(q.values()), SIZE), decode_pixels(list(r.values()), SIZE)
    rows = {k: i for i, k in enumerate(q)}, {k: i for i, k in enumerate(r)}
    # a forward-only matcher sees the same batches as the streamed path: bit for bit
    plain = rescore_pixels(_PairOnly(model), pairs, rows[0], qx, rows[1], rx, batch_size=5)
    pd.testing.assert_frame_equal(streamed, plain, check_exact=True)
    # encode-once: each image of a block encoded once, then fused; blocks of 2 to all images, so
    # smaller than, equal to and larger than the batch; equal to the pairwise forward up to float rounding
    image_bytes = 4 * model.encoded_shape[0] * model.encoded_shape[1]
    assert model.encode(from_pixels(qx[:1])).shape[1:] == model.encoded_shape
    for images in (0, 3, 5, 7, 2048):
        cached = rescore_pixels(model, pairs, rows[0], qx, rows[1], rx, batch_size=5, block_bytes=images * image_bytes)
        pd.testing.assert_frame_equal(streamed[["query_id", "reference_id"]], cached[["query_id", "reference_id"]])
        np.testing.assert_allclose(cached["score"], streamed["score"], rtol=0, atol=1e-6)
    # independent of the code under test: each pair through the model's own forward, one at a time
    with torch.inference_mode():
        one = [torch.sigmoid(model(from_pixels(qx[rows[0][a] : rows[0][a] + 1]),
                                   from_pixels(rx[rows[1][b] : rows[1][b] + 1]))).item()
               for a, b in zip(pairs["query_id"], pairs["reference_id"])]
    np.testing.assert_allclose(cached["score"], one, rtol=0, atol=1e-6)
    encoded = []
    inner = model.encode
    model.encode = lambda x: encoded.append(len(x)) or inner(x)
    rescore_pixels(model, pairs, rows[0], qx, rows[1], rx, batch_size=5)
    assert sum(encoded) == len(q) + len(r) < 2 * len(pairs)  # each image once, not once per pair
    encoded.clear()  # a budget of 3 images: more encodes, none holding more than 3 images at once
    rescore_pixels(model, pairs, rows[0], qx, rows[1], rx, batch_size=5, block_bytes=3 * image_bytes)
    assert len(q) + len(r) < sum(encoded) and max(encoded) <= 3
    with pytest.raises(ValueError, match="'R9'"):
        rescore_pixels(model, pairs.assign(reference_id="R9"), {k: i for i, k in enumerate(q)}, qx,
                       {k: i for i, k in enumerate(r)}, rx)


def test_the_cache_keeps_sets_within_its_budget_and_decodes_each_once(tmp_path, monkeypatch):
    paths = _images(tmp_path)
    one = SIZE * SIZE * 3
    cache = PixelCache(max_mb=(len(paths) + 2) * one / 2**20)
    calls = []
    import icdlib.eval.pixels as P
    real = P.decode_pixels
    monkeypatch.setattr(P, "decode_pixels", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    first = cache.get(paths, SIZE)
    assert first is not None and cache.get(paths, SIZE) is first and len(calls) == 1  # decoded once
    assert cache.get(paths[:3], SIZE) is None  # 7 + 3 images pass the 9-image budget: streamed instead
    assert cache.get(paths[:2], SIZE) is not None and cache.used == (len(paths) + 2) * one
    assert PixelCache(0).get(paths, SIZE) is None
    with pytest.raises(ValueError, match="pixel_cache_mb"):
        PixelCache(-1)
    with pytest.raises(ValueError, match="pixel_cache_mb"):
        EvalConfig(pixel_cache_mb=-1)


def test_a_corrupt_file_in_a_decoded_set_is_named(tmp_path):
    paths = _images(tmp_path)
    paths[2].write_bytes(b"not an image")
    with pytest.raises(ValueError, match=paths[2].name):
        decode_pixels(paths, SIZE, num_workers=1)


def _benchmark(root: Path) -> None:
    """A DISC21-layout folder: 4 references, 3 queries (one copies R1), its ground truth."""
    imgs = _images(root / "src")
    (root / "reference_images").mkdir(parents=True)
    (root / "dev_queries").mkdir()
    for i in range(4):
        Image.open(imgs[i]).convert("RGB").save(root / "reference_images" / f"R{i:06d}.jpg")
    for i in range(3):
        Image.open(imgs[4 + i] if i else imgs[1]).convert("RGB").save(root / "dev_queries" / f"Q{i:05d}.jpg")
    (root / "dev_queries_groundtruth.csv").write_text(
        "query_id,reference_id\nQ00000,R000001\nQ00001,\nQ00002,\n")


@pytest.mark.parametrize("budget_mb", [0, 1, 1024])
def test_a_benchmark_scores_the_same_with_and_without_decoded_sets(tmp_path, budget_mb):
    root = tmp_path / "bench"
    _benchmark(root)
    base = EvalConfig(k=2, num_workers=0, batch_size=2, matcher_batch_size=3, amp=False, pixel_cache_mb=0)
    ref = Benchmark(root, "dev_queries", base)
    got = Benchmark(root, "dev_queries", EvalConfig(**{**base.__dict__, "pixel_cache_mb": budget_mb}))
    d, m = _descriptor(), _matcher()
    want = ref.descriptor(d, SIZE)["plain"]
    for _ in range(2):  # the second pass reads the kept pixels
        pd.testing.assert_frame_equal(got.descriptor(d, SIZE)["plain"], want, check_exact=True)
    pd.testing.assert_frame_equal(got.matcher(m, SIZE, want)["plain"], ref.matcher(m, SIZE, want)["plain"],
                                  check_exact=True)
    assert (got.pixels.used > 0) == (budget_mb >= 1)


def _hold(path: str, log: str) -> None:
    with file_lock(path):
        Path(log).write_text("a")
        time.sleep(1.0)
        with open(log, "a") as f:
            f.write("b")


def test_the_file_lock_makes_a_second_process_wait(tmp_path):
    lock, log = tmp_path / "x.lock", tmp_path / "log"
    p = multiprocessing.get_context("spawn").Process(target=_hold, args=(str(lock), str(log)))
    p.start()
    deadline = time.time() + 60
    while not log.exists() and time.time() < deadline:
        time.sleep(0.02)
    with file_lock(lock):
        with open(log, "a") as f:
            f.write("c")
    p.join()
    assert log.read_text() == "abc"


@pytest.mark.parametrize("limit", [2, 3, 4, 6, 100])
def test_image_blocks_are_the_longest_runs_within_the_image_budget(limit):
    rng = np.random.default_rng(limit)
    q, r = rng.integers(0, 7, 60), rng.integers(0, 9, 60)

    def images(a, b):  # distinct query rows plus distinct reference rows of pairs a..b-1
        return len(set(q[a:b].tolist())) + len(set(r[a:b].tolist()))

    blocks = image_blocks(q, r, limit)
    assert blocks[0][0] == 0 and blocks[-1][1] == len(q)
    assert all(b0[1] == b1[0] for b0, b1 in zip(blocks, blocks[1:]))  # consecutive, covering every pair once
    for a, b in blocks:
        assert b > a and images(a, b) <= limit
        assert b == len(q) or images(a, b + 1) > limit  # no pair could have joined it
    assert image_blocks(q[:0], r[:0], limit) == []
