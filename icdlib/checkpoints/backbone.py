"""Backbone import: DINO, timm and Hugging Face ViT weights (``.pth`` or ``.safetensors``).

:func:`read_weights` reads a weight file without running code from it (``torch.load`` with
``weights_only=True``, or safetensors); :func:`load_backbone_weights` maps a ViT's key names
onto a descriptor's or matcher's timm trunk (``model.vit``).

Key layouts accepted (all describe the same ViT: class token, learned absolute position
embedding, pre-norm blocks, final norm):

- DINO / timm: ``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.{norm1,
  attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*``, ``norm.*``. These are timm's
  ``VisionTransformer`` names, so a timm ``state_dict()`` or a timm hub
  ``model.safetensors`` file (e.g. ``vit_small_patch16_224.dino``) loads as is.
- Hugging Face ``transformers`` ``ViTModel`` (e.g. ``facebook/dino-vits16``):
  ``embeddings.*``, ``encoder.layer.N.*`` with separate query/key/value, ``layernorm.*``,
  optionally under ``vit.``; query, key and value are stacked into timm's ``qkv``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from icdlib.checkpoints.files import is_safetensors, read_file, read_json, safetensors_metadata

# checkpoint keys that are not part of a backbone (projection/classifier heads)
_HEAD_PREFIXES = ("head.", "fc_norm.", "dino_head.", "pooler.", "classifier.")
_WRAPPERS = ("teacher", "student", "state_dict", "model")  # tried in this order
_PREFIXES = ("module.", "backbone.", "_orig_mod.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DDP (``.module``) or ``torch.compile`` (``._orig_mod``)."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def read_weights(path: str | Path, who: str) -> Any:
    """The object stored in a weight file, read without executing code from it: a flat
    ``{name: tensor}`` dict for ``.safetensors``, else a weights-only ``torch.load``
    (:func:`icdlib.checkpoints.files.read_file`, whose errors name the file)."""
    return read_file(path, who)


def _sidecar_kind(path: Path) -> str | None:
    """The model kind an icdlib ``.safetensors`` checkpoint records (sidecar ``.json`` or
    header metadata), or ``None`` for a foreign file (timm/DINO weights)."""
    for source in (lambda: read_json(path.with_suffix(".json"), "checkpoint config"),
                   lambda: safetensors_metadata(path, "backbone checkpoint")):
        try:
            meta = source()
        except (FileNotFoundError, ValueError):
            continue
        if isinstance(meta, Mapping):
            meta = meta.get("meta", meta)
            if isinstance(meta, str):
                meta = json.loads(meta)
            if isinstance(meta, Mapping) and meta.get("kind"):
                return meta.get("kind")
    return None


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def _backbone_state(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """Unwrap ``teacher``/``student``/``state_dict``/``model`` and strip key prefixes."""
    while isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
        key = next((k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            raise ValueError(
                f"load_backbone_weights: {where}: no state dict found; top-level keys "
                f"{sorted(map(str, obj))[:10]}"
            )
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"load_backbone_weights: {where}: expected a state dict, got {type(obj)}")
    return {_strip(k, _PREFIXES): v for k, v in obj.items() if torch.is_tensor(v)}


# Hugging Face ViTModel names -> timm names (per block: "encoder.layer.N." -> "blocks.N.")
_HF_BLOCK = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")


def from_hf_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face ``ViTModel`` state dict to timm's ViT names.

    Query, key and value (``[C, C]`` weights, ``[C]`` biases each) are concatenated in
    that order into timm's ``attn.qkv`` (``[3C, C]``, ``[3C]``). Keys with no timm
    counterpart are kept unchanged, so the strict check reports them.
    """
    state = {k[len("vit."):] if k.startswith("vit.") else k: v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _HF_LAYER.match(key)
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
        elif m and m.group(2) in _HF_BLOCK:
            out[f"blocks.{m.group(1)}.{_HF_BLOCK[m.group(2)]}.{m.group(3)}"] = value
        elif m and m.group(2) in ("attention.attention.query", "attention.attention.key",
                                  "attention.attention.value"):
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2).rsplit(".", 1)[1]] = value
        else:
            out[key] = value
    for (block, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            for name, value in parts.items():  # incomplete: leave for the strict check
                out[f"encoder.layer.{block}.attention.attention.{name}.{kind}"] = value
            continue
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]]
        )
    return out


@dataclass(frozen=True)
class BackboneLoad:
    """What :func:`load_backbone_weights` did.

    Attributes:
        loaded: number of backbone tensors copied into the model.
        ignored: checkpoint keys skipped on purpose (projection heads, a final norm the
            model does not have).
        pos_embed_grid: ``(old, new)`` patch grids ``(rows, cols)`` when the position
            embedding was interpolated, else ``None``.
    """

    loaded: int
    ignored: tuple[str, ...]
    pos_embed_grid: tuple[tuple[int, int], tuple[int, int]] | None


def _resample_pos_embed(model: nn.Module, state: dict, target: dict, problems: list):
    """Resample a position embedding made for another grid (bicubic, timm's helper)."""
    old, new = state["pos_embed"], target["pos_embed"]
    if old.shape == new.shape or old.dim() != 3 or old.shape[-1] != new.shape[-1]:
        return None
    prefix = model.vit.num_prefix_tokens
    side = math.isqrt(old.shape[1] - prefix)
    if side * side != old.shape[1] - prefix:
        problems.append(
            f"pos_embed: checkpoint has {old.shape[1] - prefix} patch positions, not a square grid"
        )
        return None
    new_grid = tuple(model.vit.patch_embed.grid_size)
    state["pos_embed"] = resample_abs_pos_embed(
        old, new_size=list(new_grid), old_size=[side, side], num_prefix_tokens=prefix
    )
    return (side, side), new_grid


def load_backbone_weights(model: nn.Module, path: str | Path | Mapping) -> BackboneLoad:
    """Load a DINO, timm or Hugging Face ViT checkpoint into a model's trunk (``model.vit``).

    ``path`` is a ``.pth``/``.pt`` file (read with ``weights_only=True``), a
    ``.safetensors`` file, or a state dict. Also takes one of icdlib's own descriptor
    checkpoints (its ViT trunk; a final norm the descriptor lacks keeps its initial
    identity values): at CPU scale a trained descriptor stands in for DINO weights when
    initialising a matcher.

    Accepted layouts: see the module docstring; a state dict may be wrapped in
    ``teacher``/``student``/``state_dict``/``model`` (the teacher is preferred) with
    ``module.``/``backbone.`` prefixes. Projection/classifier heads (``head.``,
    ``fc_norm.``, ``pooler.``) are ignored, and so is ``norm.`` when the model has no final
    norm (the paper's descriptor). A position embedding for another grid is resampled with
    timm's ``resample_abs_pos_embed`` (bicubic). For a matcher, blocks ``0..E-1``
    become the shared encoder and the rest the fusion blocks; its fusion class token keeps
    its random initialisation (truncated normal, std 0.02), as the released matcher does
    (icdlib before this change copied the checkpoint's class token into it).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable file, missing or unexpected keys, or shape mismatches (all
            listed).
    """
    model = unwrap_model(model)
    if not hasattr(model, "vit"):
        raise ValueError(f"load_backbone_weights: {type(model).__name__} has no ViT trunk")
    if isinstance(path, Mapping):
        where, raw = "<state dict>", path
    else:
        where, raw = str(path), read_weights(path, "backbone checkpoint")
    own_descriptor = isinstance(raw, Mapping) and isinstance(raw.get("meta"), Mapping) \
        and raw["meta"].get("kind") == "descriptor"
    if not isinstance(path, Mapping) and is_safetensors(path):  # icdlib's own, with a JSON sidecar?
        own_descriptor = _sidecar_kind(Path(path)) == "descriptor"
    state = _backbone_state(raw, where)
    if any(k.startswith(("embeddings.", "vit.embeddings.")) for k in state):
        state = from_hf_names(state)
    target = model.vit.state_dict()
    if own_descriptor:
        # one of our descriptor checkpoints: its trunk is ``vit.*``; projection and BN are
        # the descriptor head. It has no final norm, so a trunk that has one keeps its own
        # (identity) initialisation.
        state = {k[len("vit."):]: v for k, v in state.items() if k.startswith("vit.")}
        for key in ("norm.weight", "norm.bias"):
            if key in target and key not in state:
                state[key] = target[key].clone()

    ignored = sorted(
        k
        for k in state
        if k.startswith(_HEAD_PREFIXES) or (k.startswith("norm.") and k not in target)
    )
    state = {k: v for k, v in state.items() if k not in set(ignored)}
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))

    problems: list[str] = []
    grids = None
    if "pos_embed" in state and "pos_embed" in target:
        grids = _resample_pos_embed(model, state, target, problems)
    for key in sorted(set(state) & set(target)):
        if state[key].shape != target[key].shape:
            problems.append(
                f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(target[key].shape)}"
            )
    if missing or unexpected or problems:
        lines = [f"load_backbone_weights: {where} does not fit {type(model).__name__}"]
        if missing:
            lines.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            lines.append(f"unexpected keys: {', '.join(unexpected)}")
        if problems:
            lines.append("shape mismatches: " + "; ".join(problems))
        raise ValueError("\n  ".join(lines))

    with torch.no_grad():
        model.vit.load_state_dict({k: v.to(target[k].dtype) for k, v in state.items()})
    return BackboneLoad(len(state), tuple(ignored), grids)
