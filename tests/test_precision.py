"""bf16 autocast of the evaluation forwards (eval.amp): where it applies, and that it only rounds."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from icdlib.eval.rescore import rescore
from icdlib.eval.retrieval import embed
from icdlib.models import build_descriptor, build_matcher
from icdlib.models import precision
from icdlib.models.precision import autocast, bf16_enabled
from icdlib.pipeline.stage import ReportConfig

BF16 = bf16_enabled("cpu")  # this kind of CPU runs bf16 autocast (icdlib.models.precision)


class DtypeProbe(torch.nn.Module):
    """Records the dtype its linear layer computes in."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.seen = None

    def forward(self, x):
        y = self.lin(x)
        self.seen = y.dtype
        return y


def test_autocast_applies_only_where_enabled_and_supported():
    probe = DtypeProbe()
    with autocast("cpu", False):
        probe(torch.ones(2, 4))
    assert probe.seen == torch.float32
    with autocast("cpu", True):
        probe(torch.ones(2, 4))
    assert probe.seen == (torch.bfloat16 if BF16 else torch.float32)
    assert bf16_enabled("cuda") and not bf16_enabled("cuda", cuda=False)
    assert not bf16_enabled("cpu", cpu=False)
    assert bf16_enabled("cpu") == BF16



@pytest.fixture
def fresh_choice():
    """Clears the cached choice around a test that fakes the hardware, so the fake neither
    leaks out nor meets a choice cached before it."""
    precision.cpu_precision.cache_clear()
    yield
    precision.cpu_precision.cache_clear()


@pytest.mark.parametrize("units, amx, vendor, expected", [
    (False, False, "AuthenticAMD", False),  # no bf16 units: float32
    (True, False, "GenuineIntel", False),  # Intel AVX512-BF16 without AMX: float32, whatever a timing would say
    (True, True, "GenuineIntel", True),  # AMX tiles: bf16
    (True, False, "AuthenticAMD", True),  # AMD with AVX512-BF16 (Zen 4): bf16
    (True, False, "", False),  # a vendor that cannot be read: float32
])
def test_cpu_autocast_follows_the_hardware_not_a_timing(monkeypatch, fresh_choice, units, amx, vendor, expected):
    def probe(*a, **k):
        raise AssertionError("the choice timed a product")
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: units)
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(precision, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(precision, "probe_cpu_matmul", probe)
    assert bf16_enabled("cpu") is expected
    assert not bf16_enabled("cpu", cpu=False)
    assert bf16_enabled("cuda") and not bf16_enabled("cuda", cuda=False)
    assert precision.describe("cpu").startswith("bf16 autocast" if expected else "float32")
    probe_module = DtypeProbe()
    with autocast("cpu", True):
        probe_module(torch.ones(2, 4))
    assert probe_module.seen == (torch.bfloat16 if expected else torch.float32)


def test_the_choice_is_the_same_in_every_process():
    """A fresh interpreter (as each stage of a run is) makes this process's choice."""
    import subprocess
    import sys
    code = "from icdlib.models.precision import cpu_precision; print(cpu_precision()['bf16'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(BF16)


def test_probe_times_both_precisions():
    seconds = precision.probe_cpu_matmul((64, 32, 48), rounds=2, reps=1)
    assert set(seconds) == {"float32", "bf16"}
    assert all(0 < s < 10 for s in seconds.values())


def _images(tmp_path, n=6, size=48):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"I{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_bf16_descriptors_round_the_fp32_ones(tmp_path):
    paths = _images(tmp_path)
    model = build_descriptor("vit_tiny_cpu", seed=0)
    size = model.config.img_size
    f32 = embed(model, paths, size=size, batch_size=4)
    f16 = embed(model, paths, size=size, batch_size=4, amp=True)
    assert f16.dtype == np.float32 and f16.shape == f32.shape
    cos = (f32 * f16).sum(1) / np.linalg.norm(f32, axis=1) / np.linalg.norm(f16, axis=1)
    assert cos.min() > 0.99, cos
    if BF16:  # the flag reached the forward: the features are rounded, not the same numbers
        assert not np.array_equal(f32, f16)


def test_bf16_matcher_scores_round_the_fp32_ones(tmp_path):
    paths = _images(tmp_path, n=3)
    ids = {p.stem: p for p in paths}
    pairs = pd.DataFrame({"query_id": ["I0", "I0", "I1"], "reference_id": ["I1", "I2", "I2"], "score": 0.0})
    model = build_matcher("vit_tiny_cpu", seed=0)
    size = model.config.img_size
    s32 = rescore(model, pairs, ids, ids, size=size)["score"].to_numpy()
    s16 = rescore(model, pairs, ids, ids, size=size, amp=True)["score"].to_numpy()
    np.testing.assert_allclose(s16, s32, atol=0.02)
    if BF16:
        assert not np.array_equal(s16, s32)


def test_report_lce_arms_names_the_bad_value():
    assert ReportConfig(lce_arms=["matcher_bce", "matcher_copynce"]).lce_arms == ("matcher_bce", "matcher_copynce")
    assert ReportConfig(lce_arms=[]).lce_arms == ()
    with pytest.raises(ValueError, match="report.lce_arms.*'matcher_x'"):
        ReportConfig(lce_arms=["matcher_x"])
    with pytest.raises(ValueError, match="report.lce_arms"):
        ReportConfig(lce_arms="matcher_bce")
