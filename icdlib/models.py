"""ViT copy-detection models on timm's ``VisionTransformer``: descriptor and pairwise matcher.

Both models start from random initialisation (no hub downloads); a local DINO checkpoint
can be loaded with :func:`icdlib.checkpoints.load_backbone_weights`.

Image input: float ``[B, 3, S, S]`` ImageNet-normalised (see :func:`preprocess`), ``S`` the
config's ``img_size``. Patch tokens are ``[B, N, C]`` with ``N = (S // p) ** 2`` patches
numbered row-major (the numbering of :func:`icdlib.pixtrace.overlap`), the remainder of
``S / p`` dropped, as a ViT patch embedding does.

Presets (``PRESETS``): ``vit_tiny_cpu`` (width 192, depth 6, 3 heads, patch 16, 112 px,
the CPU profile), ``vit_small`` (ViT-S/16 at 224, the paper's) and ``vit_base`` (ViT-B/16).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from icdlib.params import build

__all__ = [
    "Preset",
    "PRESETS",
    "DescriptorConfig",
    "MatcherConfig",
    "Descriptor",
    "Matcher",
    "build_descriptor",
    "build_matcher",
    "build_model",
    "config_from_dict",
    "CONFIGS",
    "preprocess",
    "gem",
    "save_checkpoint",
    "load_model",
    "load_backbone_weights",
]


# ---------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """A named backbone shape; every ``None`` field of a model config falls back to it."""

    img_size: int  # input side, pixels
    patch_size: int  # patch side, pixels
    embed_dim: int  # token width C
    depth: int  # transformer blocks (descriptor); encoder + fusion blocks (matcher)
    num_heads: int
    desc_dim: int  # descriptor output dimension D
    encoder_depth: int  # matcher: blocks shared by query and reference before fusion


PRESETS: dict[str, Preset] = {
    # method.md s.8 CPU calibration: ~0.9 steps/s at 64 pairs on 2 cores, 7x7 patches
    "vit_tiny_cpu": Preset(112, 16, 192, 6, 3, 128, 4),
    # ViT-S/16 of the paper (DINO-initialised there): 12 blocks, 6 heads; matcher 8 + 4
    "vit_small": Preset(224, 16, 384, 12, 6, 512, 8),
    # ViT-B/16 variant of the descriptor
    "vit_base": Preset(224, 16, 768, 12, 12, 512, 8),
}


def _preset(name: str, where: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"{where}: unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def _fill(cfg: Any, preset: Preset, names: Sequence[str]) -> None:
    for name in names:
        if getattr(cfg, name) is None:
            object.__setattr__(cfg, name, getattr(preset, name))


def _check_backbone(cfg: Any, where: str) -> None:
    for name in ("img_size", "patch_size", "embed_dim", "num_heads"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    if cfg.img_size < cfg.patch_size:
        raise ValueError(
            f"{where}: img_size {cfg.img_size} is smaller than one patch of {cfg.patch_size}"
        )
    if cfg.embed_dim % cfg.num_heads:
        raise ValueError(
            f"{where}: embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}"
        )
    if cfg.mlp_ratio <= 0:
        raise ValueError(f"{where}: mlp_ratio must be > 0, got {cfg.mlp_ratio}")
    if not 0 < cfg.ln_eps < 1:
        raise ValueError(f"{where}: ln_eps must be in (0, 1), got {cfg.ln_eps}")


# ---------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class DescriptorConfig:
    """``params.yaml`` section ``descriptor``: a ViT global descriptor.

    ``None`` fields take the preset's value; the resolved config (no ``None`` left) is
    what checkpoints store.
    """

    preset: str = "vit_tiny_cpu"  # CPU profile (method.md s.8); "vit_small" is the paper's
    img_size: int | None = None  # input side in pixels (preset: 112 CPU, 224 paper)
    patch_size: int | None = None  # 16 in every preset (196 tokens at 224)
    embed_dim: int | None = None  # token width (192 CPU, 384 ViT-S, 768 ViT-B)
    depth: int | None = None  # blocks (6 CPU, 12 paper)
    num_heads: int | None = None  # attention heads (3 CPU, 6 ViT-S, 12 ViT-B)
    mlp_ratio: float = 4.0  # standard ViT MLP width, as DINO's
    desc_dim: int | None = None  # descriptor dims (128 CPU as s.8, 512 the released configs)
    pooling: str = "cls"  # "cls" as the paper; "gem" = GeM over patch tokens
    gem_p: float = 3.0  # GeM exponent (SSCD's value); used only with pooling "gem"
    token_block: int = -1  # block whose patch tokens feed CopyNCE; -1 = last (the paper)
    frozen_patch_embed: bool = True  # as the paper; a frozen projection also steadies ViT SSL
    ln_eps: float = 1e-4  # LayerNorm eps of the released descriptor configs
    final_norm: bool = False  # the paper's descriptor encoder has no final norm

    def __post_init__(self):
        where = "descriptor"
        p = _preset(self.preset, where)
        _fill(self, p, ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "desc_dim"))
        _check_backbone(self, where)
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"{where}: depth must be a positive int, got {self.depth!r}")
        if not isinstance(self.desc_dim, int) or self.desc_dim < 1:
            raise ValueError(f"{where}: desc_dim must be a positive int, got {self.desc_dim!r}")
        if self.pooling not in ("cls", "gem"):
            raise ValueError(f"{where}: pooling must be 'cls' or 'gem', got {self.pooling!r}")
        if self.gem_p <= 0:
            raise ValueError(f"{where}: gem_p must be > 0, got {self.gem_p}")
        if not -self.depth <= self.token_block < self.depth:
            raise ValueError(
                f"{where}: token_block {self.token_block} out of range for depth {self.depth}"
            )


@dataclass(frozen=True)
class MatcherConfig:
    """``params.yaml`` section ``matcher``: a pairwise copy matcher (shared encoder + fusion).

    ``None`` fields take the preset's value (``fusion_depth``: preset depth minus
    ``encoder_depth``).
    """

    preset: str = "vit_tiny_cpu"  # CPU profile; "vit_small" is the paper's
    img_size: int | None = None  # input side in pixels (the paper also runs 336)
    patch_size: int | None = None  # 16 in every preset
    embed_dim: int | None = None  # token width
    num_heads: int | None = None  # attention heads
    encoder_depth: int | None = None  # shared blocks (paper: DINO blocks 1-8; CPU: 4)
    fusion_depth: int | None = None  # joint blocks over both images (paper: 9-12; CPU: 2)
    mlp_ratio: float = 4.0  # standard ViT MLP width
    frozen_patch_embed: bool = False  # the paper trains the matcher's patch embedding
    ln_eps: float = 1e-6  # DINO's LayerNorm eps (no override reported for the matcher)

    def __post_init__(self):
        where = "matcher"
        p = _preset(self.preset, where)
        _fill(self, p, ("img_size", "patch_size", "embed_dim", "num_heads", "encoder_depth"))
        if self.fusion_depth is None:
            object.__setattr__(self, "fusion_depth", p.depth - self.encoder_depth)
        _check_backbone(self, where)
        if not isinstance(self.encoder_depth, int) or self.encoder_depth < 0:
            raise ValueError(
                f"{where}: encoder_depth must be an int >= 0, got {self.encoder_depth!r}"
            )
        if not isinstance(self.fusion_depth, int) or self.fusion_depth < 1:
            raise ValueError(
                f"{where}: fusion_depth must be an int >= 1, got {self.fusion_depth!r}"
            )

    @property
    def depth(self) -> int:
        """Total blocks (encoder + fusion), the depth of a DINO backbone it loads from."""
        return self.encoder_depth + self.fusion_depth


CONFIGS = {"descriptor": DescriptorConfig, "matcher": MatcherConfig}


def config_from_dict(kind: str, values: Mapping[str, Any]):
    """Rebuild a config from its ``dataclasses.asdict`` form (checkpoint meta)."""
    if kind not in CONFIGS:
        raise ValueError(f"model kind must be one of {sorted(CONFIGS)}, got {kind!r}")
    return build(CONFIGS[kind], dict(values), f"{kind} config")


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

    def forward_with_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass giving the descriptor and CopyNCE's patch tokens.

        Args:
            images: ``[B, 3, S, S]`` float, ImageNet-normalised.
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
        desc = F.normalize(self.bn(self.proj(pooled)), dim=1)  # (B, D)
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
        fusion_token: ``[1, 1, C]`` learnable fusion class token.
        token_norm: LayerNorm applied to fused patch tokens for CopyNCE ("fusion head").
        head: LayerNorm -> Linear(C, 1) on the fusion class token.
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
        vit, cfg = self.vit, self.config
        b = query.shape[0]
        x = _embed(vit, torch.cat([query, reference]), cfg.img_size, "Matcher")  # (2B, 1+N, C)
        for block in vit.blocks[: cfg.encoder_depth]:
            x = block(x)  # shared encoder, both sides in one batch
        length = x.shape[1]
        fused = torch.cat([self.fusion_token.expand(b, -1, -1), x[:b], x[b:]], 1)  # (B, 1+2L, C)
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
    _preset(name, "build_model")
    if kind == "descriptor":
        return build_descriptor(name, seed=seed, **overrides)
    if kind == "matcher":
        return build_matcher(name, seed=seed, **overrides)
    raise ValueError(f"build_model: kind must be 'descriptor' or 'matcher', got {kind!r}")


# ---------------------------------------------------------------------------- inputs
_MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_DEFAULT_STD, dtype=torch.float32).view(1, 3, 1, 1)


def preprocess(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """PIL images -> model input: RGB, bicubic resize to ``size x size``, ImageNet-normalised.

    Returns:
        ``[B, 3, size, size]`` float32 (channels R, G, B).
    """
    if isinstance(images, Image.Image):
        images = [images]
    if len(images) == 0:
        raise ValueError("preprocess: no images given")
    if int(size) < 1:
        raise ValueError(f"preprocess: size must be >= 1, got {size}")
    size = int(size)
    arrays = [
        np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32)
        for im in images
    ]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).div_(255.0)
    return ((x - _MEAN) / _STD).contiguous()


_CHECKPOINT_API = ("save_checkpoint", "load_model", "load_backbone_weights")


def __getattr__(name: str):
    """Checkpoint I/O lives in :mod:`icdlib.checkpoints`; re-exported here lazily."""
    if name in _CHECKPOINT_API:
        from icdlib import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
