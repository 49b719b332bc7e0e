"""Official CopyNCE release files load as icdlib models with the official outputs."""

import pytest
import torch
from official_format import descriptor_forward, descriptor_state, matcher_forward, matcher_state

from icdlib.checkpoints import SOURCE, load_model, load_release
from icdlib.models import MatcherConfig

ATOL = 1e-4  # float32 parity asked of the released models


def _images(n, side, seed):
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _save(path, state, epoch=40):
    torch.save({"model": state, "epoch": epoch}, path)
    return path


@pytest.mark.parametrize("width,depth,side", [
    pytest.param(384, 12, 14, id="vit_s_224", marks=pytest.mark.slow), pytest.param(128, 2, 21, id="small_336")])
def test_release_descriptor_gives_the_official_features_and_tokens(tmp_path, width, depth, side):
    state = descriptor_state(width=width, depth=depth, side=side, dim=512 if width == 384 else 48)
    model, meta = load_model(_save(tmp_path / "descriptor.pth.tar", state))
    heads = width // 64
    cfg = meta["config"]
    assert (meta["kind"], meta["source"], meta["epoch"]) == ("descriptor", SOURCE, 40)
    assert (cfg["img_size"], cfg["embed_dim"], cfg["depth"], cfg["num_heads"]) == (side * 16, width, depth, heads)
    desc_dim = state["heads.linear_head.fc1.weight"].shape[0]
    assert (cfg["desc_dim"], cfg["ln_eps"], cfg["final_norm"], cfg["pooling"]) == (desc_dim, 1e-4, False, "cls")
    x = _images(2, side * 16, 1)
    with torch.no_grad():
        features, tokens = model.forward_with_tokens(x)
    ref_features, ref_tokens = descriptor_forward(x, state, heads)
    torch.testing.assert_close(features, ref_features, atol=ATOL, rtol=0)
    torch.testing.assert_close(tokens, ref_tokens, atol=ATOL, rtol=0)
    assert torch.allclose(features.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("width,encoder,fusion,side", [
    pytest.param(384, 8, 4, 21, id="vit_s_336", marks=pytest.mark.slow), pytest.param(128, 2, 1, 14, id="small_224")])
def test_release_matcher_gives_the_official_logits_and_fused_tokens(tmp_path, width, encoder, fusion, side):
    state = matcher_state(width=width, encoder=encoder, fusion=fusion, side=side)
    model, meta = load_model(_save(tmp_path / "matcher.pth.tar", state))
    cfg = meta["config"]
    assert meta["kind"] == "matcher"
    assert ((cfg["img_size"], cfg["encoder_depth"], cfg["fusion_depth"], cfg["ln_eps"])
            == (side * 16, encoder, fusion, 1e-4))
    q, r = _images(1, side * 16, 2), _images(1, side * 16, 3)
    with torch.no_grad():
        logits, q_tokens, r_tokens = model.forward_with_tokens(q, r)
    ref = matcher_forward(q, r, state, width // 64)
    for ours, theirs in zip((logits, q_tokens, r_tokens), ref):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_container_variants_load_the_same_weights(tmp_path):
    state = descriptor_state()
    x = _images(2, 32, 4)
    expected = descriptor_forward(x, state, 1)[0]
    variants = {
        "state_dict": {"state_dict": state},
        "bare": dict(state),
        "module": {"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
    }
    for name, payload in variants.items():
        torch.save(payload, tmp_path / f"{name}.pth")
        model, meta = load_model(tmp_path / f"{name}.pth")
        torch.testing.assert_close(model(x), expected, atol=ATOL, rtol=0)
    assert meta["epoch"] == 3


def test_num_heads_can_be_set_and_changes_the_attention(tmp_path):
    state = descriptor_state(width=128, depth=1)
    path = _save(tmp_path / "d.pth.tar", state)
    x = _images(2, 32, 5)
    default, meta = load_model(path)
    assert meta["config"]["num_heads"] == 2
    four, meta = load_model(path, num_heads=4)
    assert meta["config"]["num_heads"] == 4
    torch.testing.assert_close(four(x), descriptor_forward(x, state, 4)[0], atol=ATOL, rtol=0)
    assert not torch.allclose(four(x), default(x), atol=1e-3)


def test_unmapped_and_missing_keys_are_listed(tmp_path):
    extra = descriptor_state()
    extra["encoder.norm.weight"] = torch.ones(64)  # the release has no final encoder norm
    with pytest.raises(ValueError, match=r"unmapped keys: encoder\.norm\.weight"):
        load_model(_save(tmp_path / "extra.pth.tar", extra))
    short = matcher_state()
    del short["fusion.blocks.0.mlp.fc2.bias"], short["heads.cls_head.norm.weight"]
    with pytest.raises(ValueError,
                       match=r"missing keys: fusion\.blocks\.0\.mlp\.fc2\.bias, heads\.cls_head\.norm\.weight"):
        load_model(_save(tmp_path / "short.pth.tar", short))
    gap = descriptor_state(depth=3)
    for k in [k for k in gap if k.startswith("encoder.blocks.1.")]:
        del gap[k]
    with pytest.raises(ValueError,
                       match=r"gap\.pth\.tar: block indices under 'encoder\.blocks\.' are not 0\.\.n-1: \[0, 2\]"):
        load_model(_save(tmp_path / "gap.pth.tar", gap))
    with pytest.raises(ValueError, match="width 96 is not a multiple of 64; give num_heads"):
        load_model(_save(tmp_path / "w96.pth.tar", descriptor_state(width=96)))


class _Payload:
    ran = False

    def __reduce__(self):
        return (_mark, ())


def _mark():
    _Payload.ran = True
    return "ran"


def test_release_reader_never_unpickles_objects(tmp_path):
    state = descriptor_state()
    torch.save({"model": state, "epoch": 1, "extra": _Payload()}, tmp_path / "evil.pth.tar")
    with pytest.raises(ValueError, match="evil.pth.tar is not an official CopyNCE"):
        load_release(tmp_path / "evil.pth.tar")
    assert not _Payload.ran


def test_matcher_layer_norm_eps_defaults_to_the_released_1e_4():
    assert MatcherConfig().ln_eps == 1e-4


def test_evaluate_cli_runs_on_release_files(tmp_path, capsys):
    from test_evaluate import _benchmark

    from icdlib.eval.cli import main

    data = _benchmark(tmp_path / "disc")
    d = _save(tmp_path / "descriptor.pth.tar", descriptor_state(side=2))
    m = _save(tmp_path / "matcher.pth.tar", matcher_state(side=2))
    out = tmp_path / "out"
    assert main(["--data", str(data), "--descriptor", str(d), "--matcher", str(m), "--out", str(out)]) == 0
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("query_id,reference_id,score") and len(rows) > 1
    assert (out / "metrics.json").is_file()
