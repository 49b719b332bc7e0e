"""The two ViT models on timm's ``VisionTransformer``: :class:`Descriptor` and :class:`Matcher`,
and the builders that make them from a config or a preset name.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from icdlib.models.config import DescriptorConfig, MatcherConfig, get_preset
from icdlib.params import build


# ---------------------------------------------------------------------------- backbone
def _vit(cfg: Any, depth: int, final_norm: bool) -> VisionTransformer:
    """A timm ViT with a class token, learned position embedding and no classifier head."""
    vit = VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        num_classes=0,
        global_pool="token",
        final_norm=final_norm,
        norm_layer=partial(nn.LayerNorm, eps=cfg.ln_eps),
    )
    if cfg.frozen_patch_embed:
        vit.patch_embed.requires_grad_(False)
    return vit


def _embed(vit: VisionTransformer, images: torch.Tensor, size: int, who: str) -> torch.Tensor:
    """Patch embedding + class token + position embedding: ``[B, 3, S, S] -> [B, 1 + N, C]``."""
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (size, size):
        raise ValueError(
            f"{who}: images must be [B, 3, {size}, {size}], got {tuple(images.shape)}"
        )
    x = vit.patch_embed(images)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    return vit.norm_pre(x)


def gem(tokens: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling over tokens: ``[B, N, C] -> [B, C]``.

    GeM needs non-negative inputs; transformer tokens are signed, so values are clamped at
    ``eps`` first (negative activations count as ``eps``).
    """
    return tokens.clamp(min=eps).pow(p).mean(1).pow(1.0 / p)


class Descriptor(nn.Module):
    """ViT global descriptor: pooled token -> Linear (no bias) -> BatchNorm1d -> L2.

    Attributes:
        config: the resolved :class:`DescriptorConfig`.
        vit: the timm ``VisionTransformer`` trunk (class token, no head).
        grid: ``(cols, rows)`` of patches.
    """

    kind = "descriptor"

    def __init__(self, config: DescriptorConfig):
        super().__init__()
        self.config = config
        self.vit = _vit(config, config.depth, config.final_norm)
        self.proj = nn.Linear(config.embed_dim, config.desc_dim, bias=False)
        self.bn = nn.BatchNorm1d(config.desc_dim)
        self.token_index = config.token_block % config.depth
        side = config.img_size // config.patch_size
        self.grid = (side, side)

    def forward_with_tokens(self, images: torch.Tensor, bn_groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass giving the descriptor and CopyNCE's patch tokens.

        Args:
            images: ``[B, 3, S, S]`` float, ImageNet-normalised.
            bn_groups: the head's BatchNorm normalises this many equal consecutive slices of
                the batch in separate calls (training: each slice's own statistics, and the
                running statistics are updated once per slice). Training passes 2 for
                ``[queries; references]``, as the released model calls its head once per side.
                In eval mode the grouping changes nothing.
        Returns:
            ``(desc [B, D] float, unit L2 norm; tokens [B, N, C] float)``: the patch tokens
            output by block ``token_block`` (after the final norm only when ``final_norm``
            is on and the block is the last).
        """
        vit, cfg = self.vit, self.config
        x = _embed(vit, images, cfg.img_size, "Descriptor")  # (B, 1 + N, C)
        tokens = None
        for i, block in enumerate(vit.blocks):
            x = block(x)
            if i == self.token_index:
                tokens = x
        x = vit.norm(x)
        if self.token_index == cfg.depth - 1:
            tokens = x
        prefix = vit.num_prefix_tokens
        pooled = x[:, 0] if cfg.pooling == "cls" else gem(x[:, prefix:], cfg.gem_p)  # (B, C)
        z = self.proj(pooled)  # (B, D)
        if bn_groups == 1:
            z = self.bn(z)
        else:
            if bn_groups < 1 or z.shape[0] % bn_groups:
                raise ValueError(f"Descriptor: batch {z.shape[0]} does not split into bn_groups={bn_groups} slices")
            z = torch.cat([self.bn(part) for part in z.chunk(bn_groups)])
        desc = F.normalize(z, dim=1)  # (B, D)
        return desc, tokens[:, prefix:]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` ImageNet-normalised images -> ``[B, D]`` unit-norm descriptors."""
        return self.forward_with_tokens(images)[0]


class Matcher(nn.Module):
    """Pairwise copy matcher: shared encoder, joint fusion blocks, one logit per pair.

    The first ``encoder_depth`` blocks run on query and reference separately (each with
    its own class token); the two token sets are concatenated behind a learnable fusion
    class token, ``fusion_depth`` blocks let them attend to each other, then LayerNorm.
    No segment embedding marks the sides, so the logit is symmetric in (q, r).

    Attributes:
        config: the resolved :class:`MatcherConfig`.
        vit: timm trunk holding all ``encoder_depth + fusion_depth`` blocks and the norm.
        fusion_token: ``[1, 1, C]`` learnable fusion class token, initialised at random
            (truncated normal, std 0.02) as in the released matcher, also when the trunk
            is loaded from DINO (:func:`icdlib.checkpoints.load_backbone_weights`).
        token_norm: LayerNorm applied to fused patch tokens for CopyNCE ("fusion head").
        head: LayerNorm -> Linear(C, 1) on the fusion class token; the Linear starts from a
            truncated normal (std 0.02) with zero bias, as released (``head_init``).
    """

    kind = "matcher"

    def __init__(self, config: MatcherConfig):
        super().__init__()
        self.config = config
        self.vit = _vit(config, config.depth, final_norm=True)
        c = config.embed_dim
        self.fusion_token = nn.Parameter(torch.zeros(1, 1, c))
        trunc_normal_(self.fusion_token, std=0.02)
        self.token_norm = nn.LayerNorm(c, eps=config.ln_eps)
        self.head = nn.Sequential(nn.LayerNorm(c, eps=config.ln_eps), nn.Linear(c, 1))
        if config.head_init == "trunc_normal":  # the released head: truncated normal (std 0.02), zero bias
            trunc_normal_(self.head[1].weight, std=0.02)
            nn.init.zeros_(self.head[1].bias)
        side = config.img_size // config.patch_size
        self.grid = (side, side)

    def forward_with_tokens(
        self, query: torch.Tensor, reference: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits and fused patch tokens of a batch of pairs.

        Args:
            query, reference: ``[B, 3, S, S]`` float, ImageNet-normalised.
        Returns:
            ``(logits [B], q_tokens [B, N, C], r_tokens [B, N, C])``; ``sigmoid(logits)``
            is the copy probability, the tokens are the fused patch tokens (after the
            fusion norm and ``token_norm``) for CopyNCE.
        """
        if query.shape != reference.shape:
            raise ValueError(
                f"Matcher: query {tuple(query.shape)} and reference "
                f"{tuple(reference.shape)} must have the same shape"
            )
        b = query.shape[0]
        x = self.encode(torch.cat([query, reference]))  # both sides in one batch
        return self._fuse(x[:b], x[b:])

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The shared encoder alone: ``[B, 3, S, S]`` -> ``[B, 1 + N, C]`` tokens. Each image's
        tokens depend on that image only, so an image met in several pairs can be encoded once
        (:func:`icdlib.eval.rescore.rescore_pixels`) and paired by :meth:`fuse`."""
        vit, cfg = self.vit, self.config
        x = _embed(vit, images, cfg.img_size, "Matcher")  # (B, 1+N, C)
        for block in vit.blocks[: cfg.encoder_depth]:
            x = block(x)
        return x

    @property
    def encoded_shape(self) -> tuple[int, int]:
        """``(1 + N, C)``: the shape of one image's :meth:`encode` output."""
        return self.vit.num_prefix_tokens + self.grid[0] * self.grid[1], self.config.embed_dim

    def fuse(self, query_tokens: torch.Tensor, reference_tokens: torch.Tensor) -> torch.Tensor:
        """``[B]`` copy logits of pairs of :meth:`encode` outputs (``forward`` = encode, then fuse)."""
        return self._fuse(query_tokens, reference_tokens)[0]

    def _fuse(self, xq: torch.Tensor, xr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        vit, cfg = self.vit, self.config
        length = xq.shape[1]
        fused = torch.cat([self.fusion_token.expand(xq.shape[0], -1, -1), xq, xr], 1)  # (B, 1+2L, C)
        for block in vit.blocks[cfg.encoder_depth :]:
            fused = block(fused)
        fused = vit.norm(fused)
        logits = self.head(fused[:, 0]).squeeze(1)  # (B,)
        prefix = vit.num_prefix_tokens
        q_tokens = self.token_norm(fused[:, 1 + prefix : 1 + length])  # (B, N, C)
        r_tokens = self.token_norm(fused[:, 1 + length + prefix :])  # (B, N, C)
        return logits, q_tokens, r_tokens

    def forward(self, query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` query and reference batches -> ``[B]`` copy logits."""
        return self.forward_with_tokens(query, reference)[0]


# ---------------------------------------------------------------------------- builders
def _resolve(cls, cfg, overrides: Mapping[str, Any], where: str):
    if cfg is None:
        cfg = {}
    if isinstance(cfg, str):
        cfg = {"preset": cfg}
    if isinstance(cfg, cls):
        return dataclasses.replace(cfg, **overrides) if overrides else cfg
    if isinstance(cfg, Mapping):
        return build(cls, {**cfg, **overrides}, where)
    raise ValueError(f"{where}: expected a preset name, a mapping or {cls.__name__}, got {cfg!r}")


def _init(cls, cfg, seed: int | None):
    """Construct under ``torch.manual_seed(seed)`` without touching the global RNG state."""
    if seed is None:
        return cls(cfg)  # initialised from the caller's (global) torch RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(cfg)


def build_descriptor(
    cfg: DescriptorConfig | Mapping | str | None = None, *, seed: int | None = None, **overrides
) -> Descriptor:
    """A randomly initialised :class:`Descriptor` from a config, a mapping or a preset name.

    ``seed`` makes the initial weights a function of the seed alone. Overrides replace
    fields of the config (on a resolved config, changing ``preset`` does not re-fill the
    other fields). Example: ``build_descriptor("vit_small", img_size=160, seed=0)``.
    """
    return _init(Descriptor, _resolve(DescriptorConfig, cfg, overrides, "descriptor"), seed)


def build_matcher(
    cfg: MatcherConfig | Mapping | str | None = None, *, seed: int | None = None, **overrides
) -> Matcher:
    """A randomly initialised :class:`Matcher` from a config, a mapping or a preset name."""
    return _init(Matcher, _resolve(MatcherConfig, cfg, overrides, "matcher"), seed)


def build_model(
    name: str, kind: str = "descriptor", *, seed: int | None = None, **overrides
) -> Descriptor | Matcher:
    """Build a registered preset by name, e.g. ``build_model("vit_tiny_cpu", seed=0)``."""
    get_preset(name, "build_model")
    if kind == "descriptor":
        return build_descriptor(name, seed=seed, **overrides)
    if kind == "matcher":
        return build_matcher(name, seed=seed, **overrides)
    raise ValueError(f"build_model: kind must be 'descriptor' or 'matcher', got {kind!r}")
