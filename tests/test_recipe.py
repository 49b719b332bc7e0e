"""Edit-chain recipes: the ``chains`` sampler stays as it was, seed for seed."""

from __future__ import annotations

import hashlib
import json

import pytest

from icdlib.edits import EditConfig, sample_chain


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
