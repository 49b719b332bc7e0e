"""The official CopyNCE release files: descriptor and matcher checkpoints, as icdlib models.

File format (facts of the release; method.md s.4): ``{"model": state_dict, "epoch": int}``
(``"state_dict"`` or a bare state dict are accepted too, and a ``module.`` prefix is
stripped). The training scalar ``infonce_log_scale`` is dropped.

- Descriptor: ``encoder.{cls_token, pos_embed, patch_embed.proj.*, blocks.N.*}`` (no final
  encoder norm), ``heads.linear_head.fc1.weight`` (Linear without bias, width -> D) and
  ``heads.linear_head.bn.*`` (BatchNorm1d); output L2-normalised. It becomes a
  :class:`icdlib.models.Descriptor` with class-token pooling and no final norm.
- Matcher: ``encoder.{cls_token, pos_embed, patch_embed.proj.*, blocks.0..E-1.*}``,
  ``fusion.cls_token``, ``fusion.blocks.0..F-1.*``, ``fusion.norm.*``,
  ``heads.cls_head.norm.*``, ``heads.cls_head.classifier.*``, ``heads.fusion_head.norm.*``;
  score ``sigmoid(logit)``. It becomes a :class:`icdlib.models.Matcher` whose trunk holds
  the ``E + F`` blocks.

Every LayerNorm of both models uses eps 1e-4. The config is read from the shapes (width
and patch from the patch embedding, input side from the position embedding, depths from
the block indices, descriptor size from ``fc1``); the head count is not in the weights and
defaults to width / 64 (6 for ViT-S, 12 for ViT-B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from icdlib.checkpoints.backbone import read_weights
from icdlib.models import PRESETS, DescriptorConfig, MatcherConfig, build_descriptor, build_matcher
from icdlib.params import to_dict

SOURCE = "copynce-release"  # meta["source"] of a model loaded from a release file
RELEASE_LN_EPS = 1e-4
_DROPPED = ("infonce_log_scale",)  # training-only scalars

# official name prefix -> icdlib name prefix (matcher fusion blocks are renumbered apart)
_DESCRIPTOR_NAMES = (
    ("encoder.", "vit."),
    ("heads.linear_head.fc1.", "proj."),
    ("heads.linear_head.bn.", "bn."),
)
_MATCHER_NAMES = (
    ("encoder.cls_token", "vit.cls_token"),
    ("encoder.pos_embed", "vit.pos_embed"),
    ("encoder.patch_embed.", "vit.patch_embed."),
    ("fusion.cls_token", "fusion_token"),
    ("fusion.norm.", "vit.norm."),
    ("heads.cls_head.norm.", "head.0."),
    ("heads.cls_head.classifier.", "head.1."),
    ("heads.fusion_head.norm.", "token_norm."),
)


@dataclass(frozen=True)
class Release:
    """A release file's weights under their official names.

    Attributes:
        kind: ``"descriptor"`` or ``"matcher"`` (from the keys).
        state: official key -> tensor, ``module.`` stripped, training scalars dropped.
        epoch: the file's ``epoch`` entry, if any.
    """

    kind: str
    state: dict[str, torch.Tensor]
    epoch: int | None


def release_kind(keys) -> str | None:
    """``"matcher"``, ``"descriptor"`` or ``None`` (not a release) from official key names."""
    keys = set(keys)
    if "fusion.cls_token" in keys or any(k.startswith("fusion.blocks.") for k in keys):
        return "matcher"
    if any(k.startswith("heads.linear_head.") for k in keys) and any(
        k.startswith("encoder.") for k in keys
    ):
        return "descriptor"
    return None


def release_from_object(obj: Any) -> Release | None:
    """The :class:`Release` in a loaded file object, or ``None`` when it is not one."""
    if not isinstance(obj, Mapping) or "format" in obj:
        return None
    epoch = obj.get("epoch")
    for wrapper in ("model", "state_dict"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    state = {
        (k[len("module."):] if k.startswith("module.") else k): v
        for k, v in obj.items()
        if isinstance(k, str) and torch.is_tensor(v)
    }
    kind = release_kind(state)
    if kind is None:
        return None
    state = {k: v for k, v in state.items() if k not in _DROPPED}
    return Release(kind, state, epoch if isinstance(epoch, int) else None)


def read_release(path: str | Path) -> Release | None:
    """The release in ``path`` (read with ``weights_only=True``), or ``None`` if it is not one.

    A file ``torch.load`` cannot read as weights only (e.g. an icdlib checkpoint whose meta
    holds other objects) is not a release either.
    """
    try:
        return release_from_object(read_weights(path, "load_model"))
    except ValueError:
        return None


def _depth(state: Mapping[str, torch.Tensor], prefix: str, where: str) -> int:
    """Number of blocks ``prefix0.., prefix1.., ...``; the indices must run 0..n-1."""
    found = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    if found != set(range(len(found))):
        raise ValueError(f"{where}: block indices under {prefix!r} are not 0..n-1: {sorted(found)}")
    return len(found)


def _require(state: Mapping[str, torch.Tensor], keys, where: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{where}: missing keys needed to read the config: {', '.join(missing)}")


def release_config(
    release: Release, num_heads: int | None = None, where: str = "release"
) -> DescriptorConfig | MatcherConfig:
    """The icdlib config of a release, read from its tensor shapes.

    ``num_heads`` (not stored in the weights) defaults to ``width // 64``.

    Raises:
        ValueError: a shape the config cannot be read from, named with ``where``.
    """
    s = release.state
    first_block = "encoder.blocks.0.mlp.fc1.weight"
    _require(s, ["encoder.patch_embed.proj.weight", "encoder.pos_embed", first_block], where)
    proj = s["encoder.patch_embed.proj.weight"]  # [C, 3, p, p]
    if proj.dim() != 4 or proj.shape[-1] != proj.shape[-2]:
        raise ValueError(f"{where}: encoder.patch_embed.proj.weight {tuple(proj.shape)} is not [C, 3, p, p]")
    width, patch = int(proj.shape[0]), int(proj.shape[-1])
    pos = s["encoder.pos_embed"]  # [1, 1 + side², C]
    side = math.isqrt(max(pos.shape[1] - 1, 0)) if pos.dim() == 3 else 0
    if pos.dim() != 3 or side < 1 or side * side != pos.shape[1] - 1:
        raise ValueError(
            f"{where}: encoder.pos_embed {tuple(pos.shape)} is not [1, 1 + side², C] (class + square grid)"
        )
    if num_heads is None:
        if width % 64:
            raise ValueError(f"{where}: width {width} is not a multiple of 64; give num_heads")
        num_heads = width // 64
    common = dict(
        preset=next((n for n, p in PRESETS.items() if p.embed_dim == width), "vit_small"),
        img_size=side * patch,
        patch_size=patch,
        embed_dim=width,
        num_heads=int(num_heads),
        mlp_ratio=s[first_block].shape[0] / width,
        ln_eps=RELEASE_LN_EPS,
    )
    try:
        if release.kind == "descriptor":
            _require(s, ["heads.linear_head.fc1.weight"], where)
            return DescriptorConfig(
                **common,
                depth=_depth(s, "encoder.blocks.", where),
                desc_dim=int(s["heads.linear_head.fc1.weight"].shape[0]),
                pooling="cls",
                token_block=-1,
                final_norm=False,
            )
        return MatcherConfig(
            **common,
            encoder_depth=_depth(s, "encoder.blocks.", where),
            fusion_depth=_depth(s, "fusion.blocks.", where),
            frozen_patch_embed=False,
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: cannot build a {release.kind} config: {e}") from None


def icdlib_name(kind: str, key: str, encoder_depth: int = 0) -> str | None:
    """icdlib's model key for an official key (``None``: no rule maps it).

    Matcher fusion block ``j`` becomes trunk block ``encoder_depth + j``.
    """
    rules = _DESCRIPTOR_NAMES if kind == "descriptor" else _MATCHER_NAMES
    new = next((dst + key[len(src):] for src, dst in rules if key.startswith(src)), None)
    if new is None and kind == "matcher" and key.startswith("encoder.blocks."):
        new = "vit." + key[len("encoder."):]
    if new is None and kind == "matcher" and key.startswith("fusion.blocks."):
        index, rest = key[len("fusion.blocks."):].split(".", 1)
        new = f"vit.blocks.{encoder_depth + int(index)}.{rest}"
    return new


def official_name(kind: str, key: str, encoder_depth: int = 0) -> str:
    """The official key an icdlib model key is read from (inverse of :func:`icdlib_name`)."""
    if kind == "matcher" and key.startswith("vit.blocks."):
        index, rest = key[len("vit.blocks."):].split(".", 1)
        i = int(index)
        return f"encoder.blocks.{i}.{rest}" if i < encoder_depth else f"fusion.blocks.{i - encoder_depth}.{rest}"
    rules = _DESCRIPTOR_NAMES if kind == "descriptor" else _MATCHER_NAMES
    return next((src + key[len(dst):] for src, dst in rules if key.startswith(dst)), key)


def release_model(
    release: Release, path: str | Path, device: str | torch.device = "cpu", *, num_heads: int | None = None
) -> tuple[nn.Module, dict]:
    """Build the icdlib model of a release and load its weights strictly.

    Returns:
        ``(model in eval mode on device, meta)`` with meta ``kind``, ``config`` (plain
        dict), ``source`` (:data:`SOURCE`), ``epoch`` and ``file`` (the file name).

    Raises:
        ValueError: the weights do not fit: every unmapped and every missing official key
            and every shape mismatch is listed.
    """
    where = f"load_model: {path}"
    cfg = release_config(release, num_heads, where)
    model = build_descriptor(cfg, seed=0) if release.kind == "descriptor" else build_matcher(cfg, seed=0)
    target = model.state_dict()
    state, origin, unmapped = {}, {}, []
    for key, value in release.state.items():
        new = icdlib_name(release.kind, key, getattr(cfg, "encoder_depth", 0))
        if new is None or new not in target:
            unmapped.append(key)
        else:
            state[new], origin[new] = value, key
    for key, value in target.items():  # BatchNorm's step counter has no effect in eval mode
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    depth = getattr(cfg, "encoder_depth", 0)
    missing = sorted(official_name(release.kind, k, depth) for k in set(target) - set(state))
    shapes = [
        f"{origin.get(k, k)}: file {tuple(state[k].shape)} vs model {k} {tuple(target[k].shape)}"
        for k in sorted(state)
        if state[k].shape != target[k].shape
    ]
    if unmapped or missing or shapes:
        lines = [f"{where}: official {release.kind} weights do not fit the inferred config"]
        if unmapped:
            lines.append("unmapped keys: " + ", ".join(sorted(unmapped)))
        if missing:
            lines.append("missing keys: " + ", ".join(missing))
        if shapes:
            lines.append("shape mismatches: " + "; ".join(shapes))
        raise ValueError("\n  ".join(lines))
    with torch.no_grad():
        model.load_state_dict({k: v.to(target[k].dtype) for k, v in state.items()}, strict=True)
    meta = {
        "kind": release.kind,
        "config": to_dict(cfg),
        "source": SOURCE,
        "epoch": release.epoch,
        "file": Path(path).name,
    }
    return model.to(device).eval(), meta


def load_release(
    path: str | Path, device: str | torch.device = "cpu", *, num_heads: int | None = None
) -> tuple[nn.Module, dict]:
    """``(model, meta)`` of an official release file; ``ValueError`` if it is not one."""
    release = read_release(path)
    if release is None:
        raise ValueError(
            f"load_release: {path} is not an official CopyNCE descriptor or matcher file "
            "(no encoder./heads.linear_head. or fusion. keys)"
        )
    return release_model(release, path, device, num_heads=num_heads)
