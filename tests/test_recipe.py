"""Edit-chain recipes: the ``chains`` sampler stays as it was, seed for seed, and the
``released`` recipe follows the released per-role probabilities and strengths."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icdlib import edits
from icdlib.data import MatcherPairs, PairsConfig, TracedPairs, load_image
from icdlib.data.pairs import resize_image, to_tensor
from icdlib.edits import OPS, EditConfig, apply, complete, sample_chain
from icdlib.edits.exactness import measure
from icdlib.edits.recipe import released_chain
from icdlib.params import load_params, section


# ------------------------------------------------------------------ chains: pinned
def _rounded(value):
    """Floats cut to 9 significant digits, so a last-ulp libm difference cannot fail the pin."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _digest(chains: list) -> str:
    return hashlib.sha256(json.dumps(_rounded(chains), sort_keys=True).encode()).hexdigest()


# sha256 of the JSON of seeds 0..299, taken from the sampler before the released recipe existed
PINNED = {
    "default": ({}, "1a7ac87c0c36494c282f263bece8fb6edb6e415d2ddb376c7db51f9e3bda86e2"),
    "geo_photo": ({"families": ["geometric", "photometric"]},
                  "c2cc29974907b85dddaaafea96f5a63cc62e59585ee1c9d376fb90e4a5cab66f"),
    "overlay": ({"families": ["overlay"]}, "1a1dc3fb672623c970cab4988e8030f924a17ae3a1c9d6215e788f64fb80fedc"),
    "custom": ({"config": EditConfig(max_edits=3, min_keep=0.5, p_composite=0.9, crop_area=(0.5, 0.8))},
               "57dab1c1fb9015a4cd3c37ce537332d3f9c84af5ff73e13ce6cea1327be38f78"),
}


@pytest.mark.parametrize("case", sorted(PINNED))
def test_chains_sampler_gives_the_pinned_chains(case):
    kwargs, want = PINNED[case]
    assert _digest([sample_chain(s, **kwargs) for s in range(300)]) == want


def test_chains_sampler_pinned_examples():
    assert _rounded(sample_chain(7, families=["geometric", "photometric"])) == [
        {"op": "hflip"}, {"op": "sharpen", "amount": 1.51316326},
        {"op": "pad_square", "position": 0.797069429, "color": [210, 30, 119]}, {"op": "posterize", "bits": 4},
    ]
    assert _rounded(sample_chain(3)) == [
        {"op": "pad", "left": 0.0479216744, "top": 0.0, "right": 0.117368457, "bottom": 0.129188406,
         "color": [0, 0, 0]},
        {"op": "channel_shuffle", "order": "brg"},
    ]


def test_chains_sampler_ignores_the_role():
    for seed in range(20):
        assert sample_chain(seed, role="matcher") == sample_chain(seed)


# ------------------------------------------------------------------ released: statistics
RELEASED = EditConfig(recipe="released")
N_CHAINS = 2000
# The released numbers, written out again here (not read from icdlib.edits.recipe), as
# (descriptor, matcher).
P_CROP = {"descriptor": 0.3, "matcher": 0.5}
P_WARP = {"descriptor": 0.25, "matcher": 0.35}
P_PHOTOMETRIC = {
    "pixelize": (0.15, 0.25), "jpeg": (0.25, 0.35), "grayscale": (0.25, 0.25), "blur": (0.2, 0.25),
    "text": (0.25, 0.35), "sticker": (0.25, 0.35), "edge_enhance": (0.25, 0.3),
}
P_PAD = {"descriptor": 0.15, "matcher": 0.25}
P_ERASE = {"descriptor": 0.15, "matcher": 0.25}
CROP_AREA = {"descriptor": (0.25, 0.5), "matcher": (0.15, 0.5)}
ONTO_AREA = {"descriptor": (0.25, 0.5), "matcher": (0.15, 0.5)}
OVER_AREA = {"descriptor": (0.3, 0.7), "matcher": (0.5, 0.8)}
JITTER = {"descriptor": (0.5, 0.5, 0.5, 0.1), "matcher": (0.8, 0.8, 0.8, 0.2)}
EXTRA = {"noise", "invert", "solarize", "posterize", "sharpen", "channel_shuffle", "brightness_contrast", "sepia"}
ROLE_INDEX = {"descriptor": 0, "matcher": 1}


@pytest.fixture(scope="module")
def drawn() -> dict[str, list[list[dict]]]:
    return {role: [sample_chain(s, config=RELEASED, role=role) for s in range(N_CHAINS)]
            for role in ("descriptor", "matcher")}


def assert_rate(hits: int, n: int, p: float, what: str) -> None:
    """``hits`` of ``n`` draws agree with probability ``p`` within 4 binomial sigmas."""
    tol = 4 * math.sqrt(p * (1 - p) / n) + 1e-9
    assert abs(hits / n - p) <= tol, f"{what}: {hits}/{n} = {hits / n:.4f}, expected {p} +- {tol:.4f}"


def fired(chains: list[list[dict]], *ops: str) -> int:
    return sum(any(s["op"] in ops for s in c) for c in chains)


def specs_of(chains: list[list[dict]], op: str) -> list[dict]:
    return [s for c in chains for s in c if s["op"] == op]


ROLES = ("descriptor", "matcher")


@pytest.mark.parametrize("role", ROLES)
def test_released_crop_group_fires_at_its_rate_and_picks_uniformly(drawn, role):
    chains, p = drawn[role], P_CROP[role]
    assert_rate(fired(chains, "random_resized_crop", "paste_onto", "paste_over"), N_CHAINS, p, "crop group")
    assert_rate(fired(chains, "paste_onto"), N_CHAINS, p / 3, "paste onto a training image")
    assert_rate(fired(chains, "paste_over"), N_CHAINS, p / 3, "training image pasted over")
    # a plain crop (p / 3), or the crop before half of the pastes (2 p / 3 * 1 / 2)
    assert_rate(fired(chains, "random_resized_crop"), N_CHAINS, 2 * p / 3, "random resized crop")
    for c in chains:
        ops = [s["op"] for s in c]
        for paste in ("paste_onto", "paste_over"):
            if paste in ops and "random_resized_crop" in ops:
                assert ops.index("random_resized_crop") == ops.index(paste) - 1


@pytest.mark.parametrize("role", ROLES)
def test_released_crop_strengths_stay_in_the_recipe_ranges(drawn, role):
    chains = drawn[role]
    lo, hi = CROP_AREA[role]
    for s in specs_of(chains, "random_resized_crop"):
        assert lo <= s["area"] <= hi and 0.33 <= s["ratio"] <= 3.0
        assert s["area"] * s["ratio"] <= 1 and s["area"] / s["ratio"] <= 1  # fits a square image
    lo, hi = ONTO_AREA[role]
    for s in specs_of(chains, "paste_onto"):
        assert lo <= s["area"] <= hi and 0.5 <= s["opacity"] <= 1.0 and s["background"] == "donor"
        assert s["canvas_w"] == s["canvas_h"] == pytest.approx(1 / math.sqrt(s["area"]))
    lo, hi = OVER_AREA[role]
    overs = specs_of(chains, "paste_over")
    for s in overs:
        assert lo <= s["area"] <= hi and 0.0 <= s["opacity"] <= 0.5
    areas = [s["area"] for s in overs]
    assert min(areas) < lo + 0.05 * (hi - lo) and max(areas) > hi - 0.05 * (hi - lo)  # the range is used


@pytest.mark.parametrize("role", ROLES)
def test_released_geometric_group_rates_and_strengths(drawn, role):
    chains, p = drawn[role], P_WARP[role]
    assert_rate(fired(chains, "hflip"), N_CHAINS, 0.5, "hflip")
    assert_rate(fired(chains, "vflip"), N_CHAINS, 0.1, "vflip")
    assert_rate(fired(chains, "perspective"), N_CHAINS, p / 2, "perspective")
    assert_rate(fired(chains, "affine"), N_CHAINS, p / 2, "affine")
    assert fired(chains, "perspective", "affine") == sum(
        any(s["op"] in ("perspective", "affine") for s in c) and sum(s["op"] in ("perspective", "affine")
                                                                     for s in c) == 1 for c in chains)
    inward = (1, 1, -1, 1, -1, -1, 1, -1)
    for s in specs_of(chains, "perspective"):
        assert all(0 <= sign * o <= 0.25 for sign, o in zip(inward, s["offsets"]))
    affines = specs_of(chains, "affine")
    snapped = 0
    for s in affines:
        assert -45 <= s["shear_x"] <= 45 and s["shear_y"] == 0 and s["scale"] == 1
        assert s["translate_x"] == s["translate_y"] == 0 and 0 <= s["degrees"] < 360
        off = abs(s["degrees"] - 90 * round(s["degrees"] / 90))
        assert off == 0 or off > 22.5
        snapped += off == 0
    assert_rate(snapped, len(affines), 0.5, "affine angles snapped to a right angle")


@pytest.mark.parametrize("role", ROLES)
def test_released_photometric_group_rates_and_strengths(drawn, role):
    chains, k = drawn[role], ROLE_INDEX[role]
    assert all(sum(s["op"] == "color_jitter" for s in c) == 1 for c in chains)  # always, once
    for op, ps in P_PHOTOMETRIC.items():
        assert_rate(fired(chains, op), N_CHAINS, ps[k], op)
    jitters = specs_of(chains, "color_jitter")
    for i, key in enumerate(("brightness", "contrast", "saturation")):
        x = JITTER[role][i]
        vals = [s[key] for s in jitters]
        assert 1 - x <= min(vals) < 1 - 0.95 * x and 1 + 0.95 * x < max(vals) <= 1 + x, key
    hues = [s["hue"] for s in jitters]
    h = JITTER[role][3]
    assert -h <= min(hues) < -0.95 * h and 0.95 * h < max(hues) <= h
    assert {s["quality"] for s in specs_of(chains, "jpeg")} == {10, 20, 30, 50}


def test_released_photometric_order_is_shuffled(drawn):
    firsts = [next(s["op"] for s in c if s["op"] in ("color_jitter", "grayscale"))
              for c in drawn["descriptor"] if fired([c], "grayscale")]
    assert_rate(sum(op == "grayscale" for op in firsts), len(firsts), 0.5, "grayscale before the jitter")


def test_released_groups_come_in_a_random_order(drawn):
    pairs = [c for c in drawn["matcher"] if fired([c], "random_resized_crop", "paste_onto", "paste_over")]
    crop_first = sum(
        next(i for i, s in enumerate(c) if s["op"] in ("random_resized_crop", "paste_onto", "paste_over"))
        < next(i for i, s in enumerate(c) if s["op"] == "color_jitter") for c in pairs)
    assert_rate(crop_first, len(pairs), 0.5, "crop group before the photometric group")


@pytest.mark.parametrize("role", ROLES)
def test_released_extra_padding_and_erasing(drawn, role):
    chains = drawn[role]
    assert_rate(fired(chains, *EXTRA), N_CHAINS, 0.15, "extra group")
    assert all(sum(s["op"] in EXTRA for s in c) <= 1 for c in chains)
    assert {s["op"] for c in chains for s in c if s["op"] in EXTRA} == EXTRA
    assert_rate(fired(chains, "pad"), N_CHAINS, P_PAD[role], "padding")
    assert_rate(fired(chains, "erase"), N_CHAINS, P_ERASE[role], "random erasing")
    for c in chains:
        ops = [s["op"] for s in c]
        tail = [op for op in ops if op in ("pad", "erase")]
        assert ops[len(ops) - len(tail):] == tail and tail in ([], ["pad"], ["erase"], ["pad", "erase"])
    for s in specs_of(chains, "pad"):
        assert (s["left"], s["top"], s["right"], s["bottom"], s["color"]) == (0.2, 0.2, 0.2, 0.2, [0, 0, 0])
    for s in specs_of(chains, "erase"):
        assert 0.02 <= s["area"] <= 0.33 and 0.3 <= s["ratio"] <= 3.3 and s["color"] == [0, 0, 0]


# ------------------------------------------------------------------ released: replay and traces
def test_released_chain_is_seeded_complete_and_survives_json(drawn):
    img = ramp()
    for seed in range(10):
        chain = sample_chain(seed, config=RELEASED, role="matcher")
        assert chain == drawn["matcher"][seed]
        back = json.loads(json.dumps(chain))
        assert back == chain == [complete(s) for s in back]
        assert apply(img, back)[0].tobytes() == apply(img, chain)[0].tobytes()
    assert len({json.dumps(c) for c in drawn["descriptor"][:50]}) == 50


def ramp(w: int = 72, h: int = 56) -> Image.Image:
    ys, xs = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([xs * 3, ys * 4, (xs + ys) * 2], -1).astype(np.uint8), "RGB")


@pytest.mark.parametrize("role", ROLES)
def test_released_chains_apply_with_training_donors(role):
    img, donors = ramp(), [ramp(40, 30).rotate(90, expand=True), Image.new("RGB", (50, 70), (9, 200, 30))]
    for seed in range(30):
        chain = sample_chain(seed, config=RELEASED, role=role)
        out, trace = apply(img, chain, donors=donors)
        assert trace.source_size == img.size and trace.size == out.size


@pytest.mark.parametrize("role", ROLES)
def test_released_chain_traces_are_exact(role):
    for seed in range(30):
        chain = sample_chain(seed, families=("geometric", "composite", "overlay"), config=RELEASED, role=role)
        got = measure(chain)
        assert got.within_1px >= 0.99 and got.iou >= 0.99, (seed, chain, got)


# ------------------------------------------------------------------ families and validation
@pytest.mark.parametrize("families", [("geometric", "photometric"), ("overlay",), ("composite", "geometric")])
def test_released_families_drop_other_ops_without_changing_the_draws(drawn, families):
    for seed in range(100):
        want = [s for s in drawn["descriptor"][seed] if OPS[s["op"]].family in families]
        assert sample_chain(seed, families=families, config=RELEASED) == want


def test_bad_recipe_role_and_families_are_refused_by_name():
    with pytest.raises(ValueError, match=r"recipe='handmade'"):
        EditConfig(recipe="handmade")
    with pytest.raises(ValueError, match=r"edits.*recipe='handmade'"):
        section({"edits": {"recipe": "handmade"}}, "edits", EditConfig)
    for cfg in (None, RELEASED):
        with pytest.raises(ValueError, match=r"role='critic'"):
            sample_chain(0, config=cfg, role="critic")
        with pytest.raises(ValueError, match="families"):
            sample_chain(0, families=["warp"], config=cfg)
    with pytest.raises(ValueError, match=r"role='critic'"):
        released_chain(0, role="critic")


def test_params_yaml_lists_the_recipe_and_the_disc21_profile_picks_released():
    root = Path(__file__).resolve().parents[1]
    assert load_params(root / "params.yaml")["edits"]["recipe"] == "chains"
    assert load_params(root / "profiles" / "disc21.yaml")["edits"] == {"recipe": "released"}


# ------------------------------------------------------------------ pairs pass their role
@pytest.fixture
def roles_drawn(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = edits.sample_chain

    def spy(seed, families=None, config=None, *, role="descriptor"):
        seen.append(role)
        return real(seed, families, config, role=role)

    monkeypatch.setattr(edits, "sample_chain", spy)
    return seen


def test_pairs_draw_with_their_role(images, roles_drawn):
    cfg = PairsConfig(size=32, patch=16, copy_vs_copy=1.0, donors="procedural")
    TracedPairs(images[:4], cfg, seed=0, edit_config=RELEASED)[0]
    assert roles_drawn == ["descriptor", "descriptor"]  # query and copy-vs-copy reference
    roles_drawn.clear()
    matcher = dataclasses.replace(cfg, pos_rate=0.5, neg_edit_p=1.0)
    labels = {float(MatcherPairs(images[:4], matcher, seed=0, edit_config=RELEASED)[i]["label"]) for i in range(4)}
    assert labels == {0.0, 1.0} and set(roles_drawn) == {"matcher"}


def test_matcher_pairs_edit_with_the_matcher_numbers(images):
    cfg = PairsConfig(size=32, patch=16, pos_rate=1.0, donors="procedural")
    ds = MatcherPairs(images[:4], cfg, seed=3, edit_config=RELEASED)
    rng = np.random.default_rng([3, 0, 1])
    rng.random()  # the positive-or-negative draw
    want = sample_chain(int(rng.integers(2**63 - 1)), families=None, config=RELEASED, role="matcher")
    query, _ = apply(load_image(images[1]), want)
    assert torch.equal(ds[1]["query"], to_tensor(resize_image(query, 32)))
