"""paths.backbone: DINO, timm and Hugging Face ViT weights as .pth or .safetensors."""

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from icdlib.checkpoints import load_backbone_weights
from icdlib.models import build_descriptor, build_matcher


def timm_vit(num_classes=0, seed=0):
    """A timm ViT with timm's own key names (here with a classifier head when asked)."""
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                            num_classes=num_classes)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(0.05 * torch.randn_like(p))  # no zero biases / unit norms left
    return vit


def to_hf_names(state):
    """timm ViT names -> Hugging Face ``ViTModel`` names (query/key/value split)."""
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    names = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense", "norm2": "layernorm_after",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    for i in blocks:
        for kind in ("weight", "bias"):
            for timm_name, hf in names.items():
                out[f"encoder.layer.{i}.{hf}.{kind}"] = state[f"blocks.{i}.{timm_name}.{kind}"]
            q, k, v = state[f"blocks.{i}.attn.qkv.{kind}"].chunk(3)
            for name, t in zip(("query", "key", "value"), (q, k, v)):
                out[f"encoder.layer.{i}.attention.attention.{name}.{kind}"] = t.clone()
    return out


def _trunk_equal(model, vit):
    ours = model.vit.state_dict()
    for key, value in vit.state_dict().items():
        if key in ours:
            torch.testing.assert_close(ours[key], value, atol=0, rtol=0, msg=key)


def test_timm_state_dict_in_safetensors_loads_like_the_pth(tmp_path):
    vit = timm_vit(num_classes=10)  # timm names, with head.weight/head.bias and norm.*
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, tmp_path / "model.safetensors")
    torch.save(vit.state_dict(), tmp_path / "model.pth")
    x = torch.randn(2, 3, 32, 32)
    outputs = []
    for name in ("model.safetensors", "model.pth"):
        model = build_descriptor("vit_tiny_cpu", img_size=32, embed_dim=64, depth=2, num_heads=2, seed=1).eval()
        report = load_backbone_weights(model, tmp_path / name)
        assert {"head.weight", "head.bias", "norm.weight"} <= set(report.ignored)
        _trunk_equal(model, vit)
        outputs.append(model.forward_with_tokens(x)[1])
    torch.testing.assert_close(outputs[0], outputs[1], atol=0, rtol=0)


def test_hugging_face_dino_names_load_into_the_same_trunk(tmp_path):
    vit = timm_vit()
    hf = {f"vit.{k}": v for k, v in to_hf_names(vit.state_dict()).items()}
    hf["pooler.dense.weight"] = torch.zeros(64, 64)
    save_file({k: v.contiguous() for k, v in hf.items()}, tmp_path / "dino-vits.safetensors")
    model = build_matcher("vit_tiny_cpu", img_size=32, embed_dim=64, num_heads=2, encoder_depth=1, fusion_depth=1)
    load_backbone_weights(model, tmp_path / "dino-vits.safetensors")
    _trunk_equal(model, vit)  # qkv re-stacked, final norm included


def test_dino_weights_leave_the_fusion_token_random(tmp_path):
    vit = timm_vit()
    matcher = build_matcher("vit_tiny_cpu", img_size=32, embed_dim=64, num_heads=2,
                            encoder_depth=1, fusion_depth=1, seed=3)
    token = matcher.fusion_token.detach().clone()
    load_backbone_weights(matcher, vit.state_dict())
    torch.testing.assert_close(matcher.fusion_token.data, token, atol=0, rtol=0)
    assert not torch.allclose(token, vit.cls_token)
    assert 0.005 < token.std() < 0.05  # truncated normal, std 0.02


class _Payload:
    ran = False

    def __reduce__(self):
        return (_mark, ())


def _mark():
    _Payload.ran = True


def test_backbone_files_are_read_as_weights_only(tmp_path):
    torch.save({"model": timm_vit().state_dict(), "args": _Payload()}, tmp_path / "evil.pth")
    model = build_descriptor("vit_tiny_cpu", img_size=32, embed_dim=64, depth=2, num_heads=2)
    with pytest.raises(ValueError, match="evil.pth: backbone checkpoint refused"):
        load_backbone_weights(model, tmp_path / "evil.pth")
    assert not _Payload.ran
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="broken.safetensors: backbone checkpoint is not a readable safetensors file"):
        load_backbone_weights(model, tmp_path / "broken.safetensors")
