"""Contract tests of icdlib.models / icdlib.checkpoints over every registered preset (small)."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from icdlib.checkpoints import load_backbone_weights
from icdlib.models import (PRESETS, Descriptor, DescriptorConfig, Matcher, MatcherConfig, build_descriptor,
                           build_matcher, build_model, gem, preprocess)
from icdlib.checkpoints import load_model, save_checkpoint

torch.set_num_threads(1)


def small(kind: str, preset: str, **extra):
    """The preset's width and heads, but a 3x3 patch grid and one or two blocks."""
    patch = PRESETS[preset].patch_size
    if kind == "descriptor":
        return build_descriptor(preset, img_size=3 * patch, depth=2, seed=0, **extra)
    return build_matcher(preset, img_size=3 * patch, encoder_depth=1, fusion_depth=1, seed=0,
                         **extra)


def images(model, batch=2, seed=0):
    side = model.config.img_size
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def assert_finite_grads(model):
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name


# -------------------------------------------------------------------------- descriptor
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_descriptor_forward_backward_shapes_and_unit_norm(preset):
    model = small("descriptor", preset)
    cfg = model.config
    desc, tokens = model.forward_with_tokens(images(model, batch=3))
    assert desc.shape == (3, cfg.desc_dim)
    assert tokens.shape == (3, 9, cfg.embed_dim)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(3))
    assert torch.isfinite(tokens).all()
    (desc.sum() + tokens.square().mean()).backward()
    assert_finite_grads(model)
    assert all(not p.requires_grad for p in model.vit.patch_embed.parameters())  # frozen


def test_descriptor_tokens_come_from_the_chosen_block():
    model = build_descriptor("vit_tiny_cpu", img_size=32, depth=3, token_block=0).eval()
    x = images(model)
    _, tokens = model.forward_with_tokens(x)
    vit = model.vit
    manual = vit.blocks[0](vit._pos_embed(vit.patch_embed(x)))[:, 1:]
    torch.testing.assert_close(tokens, manual)


def test_last_block_tokens_are_final_normed_only_with_final_norm():
    for final_norm in (False, True):
        model = build_descriptor("vit_tiny_cpu", img_size=32, depth=2, final_norm=final_norm)
        vit = model.eval().vit
        x = images(model)
        _, tokens = model.forward_with_tokens(x)
        raw = vit.blocks(vit._pos_embed(vit.patch_embed(x)))
        expected = vit.norm(raw) if final_norm else raw
        assert isinstance(vit.norm, torch.nn.LayerNorm) == final_norm
        torch.testing.assert_close(tokens, expected[:, 1:])


def test_gem_is_the_power_mean_of_clamped_tokens():
    tokens = torch.tensor([[[1.0, -2.0], [2.0, 4.0]]])  # (1, 2 tokens, 2 channels)
    pooled = gem(tokens, p=3.0, eps=1e-6)
    assert pooled[0, 0].item() == pytest.approx(((1 + 8) / 2) ** (1 / 3))
    assert pooled[0, 1].item() == pytest.approx(((1e-18 + 64) / 2) ** (1 / 3))
    model = build_descriptor("vit_tiny_cpu", img_size=32, depth=1, pooling="gem")
    torch.testing.assert_close(model(images(model)).norm(dim=1), torch.ones(2))


def test_descriptor_rejects_wrong_image_size():
    model = build_descriptor("vit_tiny_cpu", img_size=32, depth=1)
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        model(torch.randn(2, 3, 48, 48))


# -------------------------------------------------------------------------- matcher
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_matcher_forward_backward_shapes(preset):
    model = small("matcher", preset)
    cfg = model.config
    q, r = images(model, seed=1), images(model, seed=2)
    logits, q_tokens, r_tokens = model.forward_with_tokens(q, r)
    assert logits.shape == (2,)
    assert q_tokens.shape == r_tokens.shape == (2, 9, cfg.embed_dim)
    assert torch.isfinite(logits).all()
    (logits.sum() + q_tokens.square().mean() + r_tokens.mean()).backward()
    assert_finite_grads(model)
    assert model.vit.patch_embed.proj.weight.grad is not None  # trained in the matcher


def test_matcher_is_symmetric_in_query_and_reference():
    model = build_matcher("vit_tiny_cpu", img_size=32, encoder_depth=1, fusion_depth=2).eval()
    q, r = images(model, seed=3), images(model, seed=4)
    logits, q_tokens, r_tokens = model.forward_with_tokens(q, r)
    swapped, q2, r2 = model.forward_with_tokens(r, q)
    torch.testing.assert_close(logits, swapped)
    torch.testing.assert_close(q_tokens, r2)
    torch.testing.assert_close(r_tokens, q2)
    same, qs, rs = model.forward_with_tokens(q, q)
    torch.testing.assert_close(qs, rs)  # identical inputs give identical token sets


def test_matcher_logit_depends_on_the_pairing():
    model = build_matcher("vit_tiny_cpu", img_size=32, encoder_depth=1, fusion_depth=1).eval()
    q, r = images(model, seed=5), images(model, seed=6)
    assert not torch.allclose(model(q, r), model(q, r.flip(0)))


# -------------------------------------------------------------------------- presets, configs
def test_every_preset_builds_by_name_with_its_shape():
    for name, preset in PRESETS.items():
        cfg = DescriptorConfig(preset=name)
        assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == (
            preset.embed_dim, preset.depth, preset.num_heads)
        mcfg = MatcherConfig(preset=name)
        assert mcfg.encoder_depth + mcfg.fusion_depth == preset.depth
    tiny = build_model("vit_tiny_cpu", depth=1)
    assert isinstance(tiny, Descriptor) and tiny.config.img_size == 112 and tiny.grid == (7, 7)
    assert isinstance(build_model("vit_tiny_cpu", kind="matcher", fusion_depth=1), Matcher)


def test_seed_fixes_initial_weights_without_touching_global_rng():
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    a = build_descriptor("vit_tiny_cpu", img_size=32, depth=1, seed=5)
    b = build_descriptor("vit_tiny_cpu", img_size=32, depth=1, seed=5)
    c = build_descriptor("vit_tiny_cpu", img_size=32, depth=1, seed=6)
    assert torch.rand(1).item() == expected_draw.item()
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(),
                                  c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.vit.blocks[0].attn.qkv.weight, c.vit.blocks[0].attn.qkv.weight)


def test_config_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="vit_huge"):
        build_model("vit_huge")
    with pytest.raises(ValueError, match="pooling"):
        DescriptorConfig(pooling="mean")
    with pytest.raises(ValueError, match="token_block"):
        DescriptorConfig(depth=2, token_block=2)
    with pytest.raises(ValueError, match="num_heads"):
        DescriptorConfig(embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="widht"):
        build_descriptor({"widht": 3})
    with pytest.raises(ValueError, match="fusion_depth"):
        MatcherConfig(encoder_depth=6)


# -------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("kind", ["descriptor", "matcher"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_save_load_round_trip_gives_identical_outputs(tmp_path, kind, preset):
    model = small(kind, preset)
    x, y = images(model, seed=7), images(model, seed=8)
    if kind == "descriptor":
        model.train()(x)  # move BatchNorm running statistics away from their init
    model.eval()
    path = save_checkpoint(tmp_path / "run" / "model.pt", model, {"step": 12, "seed": 3})
    loaded, meta = load_model(path)
    assert meta["kind"] == kind and meta["step"] == 12 and meta["seed"] == 3
    assert meta["config"]["img_size"] == model.config.img_size
    assert loaded.config == model.config and not loaded.training
    with torch.no_grad():
        if kind == "descriptor":
            torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        else:
            torch.testing.assert_close(loaded(x, y), model(x, y), rtol=0, atol=0)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temp left


def test_save_checkpoint_failure_keeps_previous_file(tmp_path, monkeypatch):
    model = build_descriptor("vit_tiny_cpu", img_size=32, depth=1)
    path = save_checkpoint(tmp_path / "model.pt", model, {"step": 1})
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, {"step": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_save_checkpoint_rejects_conflicting_kind(tmp_path):
    model = build_descriptor("vit_tiny_cpu", img_size=32, depth=1)
    with pytest.raises(ValueError, match="matcher"):
        save_checkpoint(tmp_path / "m.pt", model, {"kind": "matcher"})


def test_load_model_missing_or_foreign_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_model(missing)
    foreign = tmp_path / "foreign.pt"
    torch.save({"cls_token": torch.zeros(1, 1, 8)}, foreign)
    with pytest.raises(ValueError, match="foreign.pt.*not an icdlib checkpoint"):
        load_model(foreign)


# -------------------------------------------------------------------------- DINO import
def dino_checkpoint(trunk, extra_head=True):
    """A DINO-style training checkpoint: teacher/student dicts with module./backbone. keys."""
    backbone = {f"backbone.{k}": v.clone() for k, v in trunk.state_dict().items()}
    if extra_head:
        backbone["head.mlp.0.weight"] = torch.randn(8, trunk.embed_dim)
        backbone["head.last_layer.weight_g"] = torch.ones(16, 1)
    return {
        "teacher": backbone,
        "student": {f"module.{k}": v for k, v in backbone.items()},
        "epoch": 100,
    }


def test_dino_checkpoint_at_other_resolution_loads_with_interpolation(tmp_path):
    source = build_descriptor("vit_tiny_cpu", img_size=32, patch_size=8, depth=2, final_norm=True)
    with torch.no_grad():  # a spatially constant position embedding must stay constant
        source.vit.pos_embed[:, 1:] = torch.linspace(-1, 1, source.config.embed_dim)
    path = tmp_path / "dino.pth"
    torch.save(dino_checkpoint(source.vit), path)

    target = build_descriptor("vit_tiny_cpu", img_size=48, patch_size=8, depth=2)
    report = load_backbone_weights(target, path)
    assert report.pos_embed_grid == ((4, 4), (6, 6))
    assert "norm.weight" in report.ignored and "head.mlp.0.weight" in report.ignored
    pos = target.vit.pos_embed
    assert pos.shape == (1, 37, source.config.embed_dim)
    torch.testing.assert_close(pos[:, 0], source.vit.pos_embed[:, 0])  # class position kept
    torch.testing.assert_close(pos[0, 1:], source.vit.pos_embed[0, 1:2].expand(36, -1))
    for name in ("blocks.1.attn.qkv.weight", "patch_embed.proj.weight", "cls_token"):
        torch.testing.assert_close(target.vit.state_dict()[name], source.vit.state_dict()[name])
    assert all(not p.requires_grad for p in target.vit.patch_embed.parameters())
    assert torch.isfinite(target(images(target))).all()


def test_dino_checkpoint_splits_into_matcher_encoder_and_fusion(tmp_path):
    source = build_descriptor("vit_tiny_cpu", img_size=32, depth=3, final_norm=True)
    path = tmp_path / "dino.pth"
    torch.save({"state_dict": {k: v for k, v in source.vit.state_dict().items()}}, path)
    matcher = build_matcher("vit_tiny_cpu", img_size=32, encoder_depth=2, fusion_depth=1)
    fresh_token = matcher.fusion_token.detach().clone()
    report = load_backbone_weights(matcher, path)
    assert report.ignored == () and report.pos_embed_grid is None
    src = source.vit.state_dict()
    dst = matcher.vit.state_dict()
    for key in ("blocks.0.mlp.fc1.weight", "blocks.2.attn.proj.weight", "norm.weight"):
        torch.testing.assert_close(dst[key], src[key])
    # as the released matcher: the fusion token keeps its random init, not DINO's class token
    torch.testing.assert_close(matcher.fusion_token.data, fresh_token)


def test_wrong_shape_checkpoint_raises_naming_the_key(tmp_path):
    wide = build_descriptor("vit_tiny_cpu", img_size=32, depth=2, embed_dim=96, num_heads=3)
    path = tmp_path / "wide.pth"
    torch.save({"model": wide.vit.state_dict()}, path)
    target = build_descriptor("vit_tiny_cpu", img_size=32, depth=2)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv\.weight: checkpoint \(288, 96\)"):
        load_backbone_weights(target, path)


def test_checkpoint_with_extra_or_missing_blocks_lists_the_keys(tmp_path):
    deep = build_descriptor("vit_tiny_cpu", img_size=32, depth=3)
    with pytest.raises(ValueError, match=r"unexpected keys: blocks\.2\."):
        load_backbone_weights(build_descriptor("vit_tiny_cpu", img_size=32, depth=2),
                              deep.vit.state_dict())
    shallow = {k: v for k, v in deep.vit.state_dict().items() if not k.startswith("blocks.2.")}
    with pytest.raises(ValueError, match=r"missing keys: blocks\.2\."):
        load_backbone_weights(deep, shallow)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_backbone_weights(deep, tmp_path / "absent.pth")


# -------------------------------------------------------------------------- preprocess
def test_preprocess_resizes_and_imagenet_normalises():
    red = Image.new("RGB", (40, 20), (255, 0, 0))
    gray = Image.new("L", (8, 8), 128)
    x = preprocess([red, gray], 16)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    expected_red = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    for c, value in enumerate(expected_red):
        assert torch.allclose(x[0, c], torch.full((16, 16), value), atol=1e-5)
    assert math.isclose(x[1, 1, 5, 5].item(), (128 / 255 - 0.456) / 0.224, abs_tol=1e-5)
    with pytest.raises(ValueError, match="preprocess"):
        preprocess([], 16)


def test_own_descriptor_checkpoint_initialises_a_matcher_trunk(tmp_path):
    from icdlib.checkpoints import save_checkpoint

    source = build_descriptor("vit_tiny_cpu", img_size=32, depth=3, seed=1)  # no final norm
    path = tmp_path / "descriptor.pt"
    save_checkpoint(path, source, {"arm": "copynce"})
    matcher = build_matcher("vit_tiny_cpu", img_size=32, encoder_depth=2, fusion_depth=1, seed=2)
    fresh_norm = matcher.vit.state_dict()["norm.weight"].clone()
    fresh_token = matcher.fusion_token.detach().clone()
    load_backbone_weights(matcher, path)
    src, dst = source.vit.state_dict(), matcher.vit.state_dict()
    for key in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.2.mlp.fc2.bias", "pos_embed"):
        torch.testing.assert_close(dst[key], src[key])
    torch.testing.assert_close(dst["norm.weight"], fresh_norm)  # the descriptor has none: kept as initialised
    torch.testing.assert_close(matcher.fusion_token.data, fresh_token)  # random init kept
