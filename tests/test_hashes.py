import numpy as np
import pytest
from PIL import Image

from icdlib.eval.hashes import (
    hamming_distances,
    hamming_topk,
    hash_files,
    hash_images,
    hash_predictions,
    missing_reason,
    pack_bits,
    pdq_bits,
    phash_bits,
)


# PDQ's package compiles from source; where it could not be built, its tests skip (test_install.py
# checks the error that users then get instead)
needs_pdq = pytest.mark.skipif(missing_reason("pdq") is not None, reason=str(missing_reason("pdq")))


def _smooth_image(seed, size=96):
    """A smooth random colour field (blurred noise), so perceptual hashes are stable."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


@pytest.mark.parametrize("b", [64, 70, 256])
def test_packed_hamming_matches_bit_by_bit_count(b):
    rng = np.random.default_rng(b)
    q = rng.random((5, b)) < 0.5
    r = rng.random((7, b)) < 0.5
    d = hamming_distances(pack_bits(q), pack_bits(r))
    brute = np.array([[sum(int(x != y) for x, y in zip(qi, rj)) for rj in r] for qi in q])
    np.testing.assert_array_equal(d, brute)


def test_hand_packed_hamming_distance():
    q = np.zeros((1, 64), dtype=bool)
    r = np.zeros((2, 64), dtype=bool)
    r[0, [0, 5, 63]] = True  # 3 differing bits
    d = hamming_distances(pack_bits(q), pack_bits(r))
    np.testing.assert_array_equal(d, [[3, 0]])


def test_topk_matches_argsort_and_chunking_does_not_change_it():
    rng = np.random.default_rng(0)
    q = pack_bits(rng.random((9, 256)) < 0.5)
    r = pack_bits(rng.random((40, 256)) < 0.5)
    full = hamming_distances(q, r)
    want = np.lexsort((np.broadcast_to(np.arange(40), full.shape), full), axis=1)[:, :4]
    for chunk in (64 << 20, 1):  # one chunk vs one query per chunk
        d, i = hamming_topk(q, r, 4, chunk_bytes=chunk)
        np.testing.assert_array_equal(i, want)
        np.testing.assert_array_equal(d, np.take_along_axis(full, want, axis=1))


def test_topk_clips_k_to_reference_count():
    q = pack_bits(np.zeros((2, 64), dtype=bool))
    r = pack_bits(np.eye(3, 64, dtype=bool))
    d, i = hamming_topk(q, r, 10)
    assert d.shape == (2, 3)
    np.testing.assert_array_equal(d, np.ones((2, 3)))
    with pytest.raises(ValueError, match="k must be >= 1"):
        hamming_topk(q, r, 0)


@needs_pdq
def test_hash_lengths():
    im = _smooth_image(0)
    assert pdq_bits(im).shape == (256,)
    assert phash_bits(im).shape == (64,)
    with pytest.raises(ValueError, match="unknown method 'md5'"):
        hash_images([im], "md5")


@pytest.mark.parametrize("method", [pytest.param("pdq", marks=needs_pdq), "phash"])
def test_resized_copy_is_closer_than_unrelated_image(method):
    a, b = _smooth_image(1), _smooth_image(2)
    copy = a.resize((70, 70), Image.BILINEAR)
    h = hash_images([a, b, copy], method)
    d = hamming_distances(h[2:3], h[:2])[0]
    assert d[0] < d[1]


@needs_pdq
def test_hash_predictions_finds_the_copied_reference(tmp_path):
    refs = []
    for i in range(4):
        p = tmp_path / f"R{i}.png"
        _smooth_image(10 + i).save(p)
        refs.append((f"R{i}", p))
    qp = tmp_path / "Q0.jpg"
    _smooth_image(12).resize((80, 80)).save(qp, quality=80)
    df = hash_predictions([("Q0", qp)], refs, method="pdq", k=2)
    assert list(df.columns) == ["query_id", "reference_id", "score"]
    assert len(df) == 2
    assert df["reference_id"].iloc[0] == "R2"
    assert df["score"].iloc[0] > df["score"].iloc[1]
    assert 0.0 <= df["score"].min() and df["score"].max() <= 1.0


def test_worker_processes_hash_files_like_the_main_process(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"R{i}.png"
        _smooth_image(20 + i).save(p)
        paths.append(p)
    direct = hash_images([Image.open(p).convert("RGB") for p in paths], "phash")
    np.testing.assert_array_equal(hash_files(paths, "phash", num_workers=2), direct)
    np.testing.assert_array_equal(hash_files(paths, "phash"), direct)
