import time

import numpy as np
import pytest
from PIL import Image

from icdlib.data import PROCEDURAL_KINDS, SourceConfig, render
from icdlib.data.sources import PhotoPool, pick_kind


@pytest.mark.parametrize("kind", PROCEDURAL_KINDS)
def test_same_seed_gives_same_pixels_and_other_seed_differs(kind):
    a = np.asarray(render(kind, 7, 64))
    b = np.asarray(render(kind, 7, 64))
    c = np.asarray(render(kind, 8, 64))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", PROCEDURAL_KINDS)
def test_render_returns_rgb_of_requested_width_and_height(kind):
    img = render(kind, 1, (96, 40))
    assert img.mode == "RGB" and img.size == (96, 40)
    assert np.asarray(img).std() > 1.0  # not a blank canvas


def test_generator_seed_is_consumed_like_its_int_seed():
    a = np.asarray(render("mixed", np.random.default_rng(5), 48))
    b = np.asarray(render("mixed", 5, 48))
    assert np.array_equal(a, b)


def _radial_power(img: np.ndarray) -> tuple[float, float]:
    g = img.astype(np.float64).mean(-1)
    p = np.abs(np.fft.fft2(g - g.mean())) ** 2
    f = np.sqrt(np.fft.fftfreq(g.shape[0])[:, None] ** 2 + np.fft.fftfreq(g.shape[1])[None] ** 2)
    low = p[(f > 0.01) & (f < 0.05)].mean()
    high = p[(f > 0.25) & (f < 0.5)].mean()
    return low, high


def test_spectral_noise_power_falls_with_frequency():
    for seed in range(5):
        low, high = _radial_power(np.asarray(render("spectral", seed, 128)))
        # 1/f^alpha amplitude with alpha >= 1: power drops by >= (0.03/0.35)^-2 ~ 100x
        assert low > 50 * high


def test_dead_leaves_has_flat_regions_and_sharp_edges():
    a = np.asarray(render("dead_leaves", 3, 128)).astype(int)
    dx = np.abs(np.diff(a, axis=1)).sum(-1)
    assert (dx == 0).mean() > 0.3  # flat fills
    assert (dx > 60).mean() > 0.01  # occlusion boundaries


def test_bad_kind_size_and_seed_raise_value_error_naming_them():
    with pytest.raises(ValueError, match="bogus"):
        render("bogus", 0, 64)
    with pytest.raises(ValueError, match="size"):
        render("spectral", 0, (64,))
    with pytest.raises(ValueError, match="seed"):
        render("spectral", -1, 64)
    with pytest.raises(ValueError, match="PhotoPool"):
        render("photo", 0, 64)


def test_photo_crop_comes_from_the_given_photo(tmp_path):
    Image.new("RGB", (200, 150), (10, 200, 30)).save(tmp_path / "green.png")
    pool = PhotoPool(tmp_path, use_skimage=False)
    img = render("photo", 4, (64, 48), photos=pool)
    assert img.size == (64, 48)
    assert np.abs(np.asarray(img).astype(int) - [10, 200, 30]).max() <= 1
    assert pool.names == ["green.png"]


def test_skimage_photo_crops_are_deterministic():
    pool = PhotoPool()
    a, ia = pool.crop(np.random.default_rng(2), (48, 48))
    b, ib = pool.crop(np.random.default_rng(2), (48, 48))
    assert ia == ib and np.array_equal(np.asarray(a), np.asarray(b))
    c, _ = pool.crop(np.random.default_rng(3), (48, 48), allowed=[1])
    assert c.size == (48, 48)


def test_photo_pool_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        PhotoPool(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=str(tmp_path)):
        PhotoPool(tmp_path)


def test_pick_kind_follows_weights_and_photo_share():
    rng = np.random.default_rng(0)
    only = SourceConfig(kinds=("gradient", "text"), weights=(1.0, 0.0))
    assert {pick_kind(rng, only) for _ in range(50)} == {"gradient"}
    photos = SourceConfig(photo_share=1.0)
    assert pick_kind(rng, photos) == "photo"
    mix = [pick_kind(rng, SourceConfig()) for _ in range(2000)]
    share = mix.count("dead_leaves") / len(mix)
    assert abs(share - 0.3) < 0.05


def test_source_config_rejects_bad_weights_and_kinds():
    with pytest.raises(ValueError, match="weights"):
        SourceConfig(kinds=("gradient",), weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="kinds"):
        SourceConfig(kinds=("photo",), weights=(1.0,))
    with pytest.raises(ValueError, match="photo_share"):
        SourceConfig(photo_share=1.5)


def test_render_is_fast_enough_for_twenty_thousand_sources():
    render("text", 0, 128)  # font cache
    t0 = time.perf_counter()
    n = 0
    for kind in PROCEDURAL_KINDS:
        for seed in range(10):
            render(kind, seed, 128)
            n += 1
    per_image = (time.perf_counter() - t0) / n
    assert per_image < 0.03  # ~4 ms measured; generous for a loaded machine
