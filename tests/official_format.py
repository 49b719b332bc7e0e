"""Official CopyNCE release files built from the published facts, and a plain-torch forward.

Nothing here uses icdlib or timm: the state dicts carry the official key names and shapes
(``encoder.*``, ``heads.linear_head.*``; ``fusion.*``, ``heads.cls_head.*``,
``heads.fusion_head.*``) with random values, and :func:`descriptor_forward` /
:func:`matcher_forward` run a pre-norm ViT straight from those keys (LayerNorm eps 1e-4,
BatchNorm eps 1e-5 in eval mode), so icdlib's loader is checked against an independent
construction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-4


def _block(g: torch.Generator, prefix: str, c: int, hidden: int) -> dict[str, torch.Tensor]:
    def r(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    # weights ~ 1/sqrt(fan_in): attention logits of order 1, residual stream of order 1-10
    return {
        f"{prefix}norm1.weight": 1 + r(c), f"{prefix}norm1.bias": r(c),
        f"{prefix}attn.qkv.weight": r(3 * c, c, scale=c ** -0.5), f"{prefix}attn.qkv.bias": r(3 * c),
        f"{prefix}attn.proj.weight": r(c, c, scale=0.5 * c ** -0.5), f"{prefix}attn.proj.bias": r(c),
        f"{prefix}norm2.weight": 1 + r(c), f"{prefix}norm2.bias": r(c),
        f"{prefix}mlp.fc1.weight": r(hidden, c, scale=c ** -0.5), f"{prefix}mlp.fc1.bias": r(hidden),
        f"{prefix}mlp.fc2.weight": r(c, hidden, scale=0.5 * hidden ** -0.5), f"{prefix}mlp.fc2.bias": r(c),
    }


def _encoder(g, c, depth, patch, side) -> dict[str, torch.Tensor]:
    state = {
        "encoder.cls_token": torch.randn(1, 1, c, generator=g) * 0.5,
        "encoder.pos_embed": torch.randn(1, 1 + side * side, c, generator=g) * 0.5,
        "encoder.patch_embed.proj.weight": torch.randn(c, 3, patch, patch, generator=g) * 0.05,
        "encoder.patch_embed.proj.bias": torch.randn(c, generator=g) * 0.1,
    }
    for i in range(depth):
        state.update(_block(g, f"encoder.blocks.{i}.", c, 4 * c))
    return state


def _norm(g, prefix, c):
    return {f"{prefix}weight": 1 + 0.1 * torch.randn(c, generator=g),
            f"{prefix}bias": 0.1 * torch.randn(c, generator=g)}


def descriptor_state(width=64, depth=2, patch=16, side=2, dim=32, seed=0) -> dict[str, torch.Tensor]:
    """Official descriptor weights: encoder, fc1 (no bias), BatchNorm1d, infonce_log_scale."""
    g = torch.Generator().manual_seed(seed)
    state = _encoder(g, width, depth, patch, side)
    state["heads.linear_head.fc1.weight"] = torch.randn(dim, width, generator=g) * 0.1
    state["heads.linear_head.bn.weight"] = 1 + 0.1 * torch.randn(dim, generator=g)
    state["heads.linear_head.bn.bias"] = 0.1 * torch.randn(dim, generator=g)
    state["heads.linear_head.bn.running_mean"] = 0.1 * torch.randn(dim, generator=g)
    state["heads.linear_head.bn.running_var"] = 0.5 + torch.rand(dim, generator=g)
    state["heads.linear_head.bn.num_batches_tracked"] = torch.tensor(1000)
    state["infonce_log_scale"] = torch.tensor(3.2)
    return state


def matcher_state(width=64, encoder=2, fusion=1, patch=16, side=2, seed=0) -> dict[str, torch.Tensor]:
    """Official matcher weights: encoder blocks, fusion token/blocks/norm, the two heads."""
    g = torch.Generator().manual_seed(seed)
    state = _encoder(g, width, encoder, patch, side)
    state["fusion.cls_token"] = torch.randn(1, 1, width, generator=g) * 0.5
    for i in range(fusion):
        state.update(_block(g, f"fusion.blocks.{i}.", width, 4 * width))
    state.update(_norm(g, "fusion.norm.", width))
    state.update(_norm(g, "heads.cls_head.norm.", width))
    state["heads.cls_head.classifier.weight"] = torch.randn(1, width, generator=g) * 0.1
    state["heads.cls_head.classifier.bias"] = torch.randn(1, generator=g) * 0.1
    state.update(_norm(g, "heads.fusion_head.norm.", width))
    return state


# ---------------------------------------------------------------------------- plain forward
def _ln(x, s, prefix):
    return F.layer_norm(x, (x.shape[-1],), s[prefix + "weight"], s[prefix + "bias"], eps=EPS)


def _linear(x, s, prefix):
    return x @ s[prefix + "weight"].T + s[prefix + "bias"]


def _run_block(x, s, prefix, heads):
    b, n, c = x.shape
    h = _linear(_ln(x, s, prefix + "norm1."), s, prefix + "attn.qkv.")  # (B, N, 3C)
    q, k, v = h.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, c/H)
    attn = torch.softmax(q @ k.transpose(-2, -1) / (c // heads) ** 0.5, dim=-1)
    x = x + _linear((attn @ v).transpose(1, 2).reshape(b, n, c), s, prefix + "attn.proj.")
    h = F.gelu(_linear(_ln(x, s, prefix + "norm2."), s, prefix + "mlp.fc1."))
    return x + _linear(h, s, prefix + "mlp.fc2.")


def _blocks(s, prefix):
    return sorted({int(k[len(prefix):].split(".")[0]) for k in s if k.startswith(prefix)})


def _encode(images, s, heads):
    w = s["encoder.patch_embed.proj.weight"]
    x = F.conv2d(images, w, s["encoder.patch_embed.proj.bias"], stride=w.shape[-1])
    x = x.flatten(2).transpose(1, 2)  # (B, N, C), patches row-major
    x = torch.cat([s["encoder.cls_token"].expand(x.shape[0], -1, -1), x], 1) + s["encoder.pos_embed"]
    for i in _blocks(s, "encoder.blocks."):
        x = _run_block(x, s, f"encoder.blocks.{i}.", heads)
    return x  # (B, 1 + N, C), no final norm


@torch.no_grad()
def descriptor_forward(images, s, heads):
    """``(features [B, D] unit-norm, patch tokens [B, N, C])`` of official descriptor weights."""
    x = _encode(images, s, heads)
    f = x[:, 0] @ s["heads.linear_head.fc1.weight"].T
    p = "heads.linear_head.bn."
    f = (f - s[p + "running_mean"]) / torch.sqrt(s[p + "running_var"] + 1e-5) * s[p + "weight"] + s[p + "bias"]
    return F.normalize(f, dim=1), x[:, 1:]


@torch.no_grad()
def matcher_forward(query, reference, s, heads):
    """``(logits [B], query patch tokens [B, N, C], reference patch tokens [B, N, C])``."""
    q, r = _encode(query, s, heads), _encode(reference, s, heads)
    x = torch.cat([s["fusion.cls_token"].expand(q.shape[0], -1, -1), q, r], 1)
    for i in _blocks(s, "fusion.blocks."):
        x = _run_block(x, s, f"fusion.blocks.{i}.", heads)
    x = _ln(x, s, "fusion.norm.")
    logits = _linear(_ln(x[:, 0], s, "heads.cls_head.norm."), s, "heads.cls_head.classifier.")[:, 0]
    tokens = _ln(x, s, "heads.fusion_head.norm.")
    n = q.shape[1]  # 1 + N per side
    return logits, tokens[:, 2:1 + n], tokens[:, 2 + n:]
