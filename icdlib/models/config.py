"""Model presets and configs: the ``descriptor`` and ``matcher`` sections of params.yaml.

A :class:`Preset` names a backbone shape; every ``None`` field of a config falls back
to its preset. :func:`config_from_dict` rebuilds a config from checkpoint meta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from icdlib.params import build


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


def get_preset(name: str, where: str) -> Preset:
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
        p = get_preset(self.preset, where)
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
    ln_eps: float = 1e-4  # every LayerNorm of the released matcher (was 1e-6, DINO's, before)
    head_init: str = "trunc_normal"  # head Linear: "trunc_normal" (std 0.02, zero bias; released) | "default"

    def __post_init__(self):
        where = "matcher"
        if self.head_init not in ("trunc_normal", "default"):
            raise ValueError(f"{where}: head_init must be 'trunc_normal' or 'default', got {self.head_init!r}")
        p = get_preset(self.preset, where)
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
