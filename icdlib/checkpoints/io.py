"""Model checkpoints: atomic save, rebuild-and-load, and DINO-format backbone import.

Two file formats, both read without unpickling anything but tensors and plain data
(:func:`icdlib.checkpoints.files.read_file`):

- ``NAME.safetensors`` + ``NAME.json``: the weights as safetensors, whose header metadata
  holds ``{"format": FORMAT, "meta": <meta as JSON>}``; the JSON sidecar holds the same
  ``{"format", "meta"}`` for people and other tools. ``meta`` must be JSON data.
- any other name (``model.pt``, ``checkpoint.pt``): ``torch.save`` of
  ``{"format": FORMAT, "meta": meta, "state_dict": ...}`` where ``meta`` holds only
  tensors, dicts, lists, tuples, strings, numbers, booleans and None, so it loads with
  ``torch.load(weights_only=True)`` (a resume's optimiser and RNG states included).

``meta["kind"]`` is ``"descriptor"`` or ``"matcher"`` and ``meta["config"]`` the model
config as a plain dict (enough to rebuild); callers add what they like (step, optimizer
state, train config, seed).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from safetensors.torch import save as safetensors_bytes

from icdlib.checkpoints.files import CheckpointError, is_safetensors, read_file, read_json, safetensors_metadata
from icdlib.models import Descriptor, Matcher, build_descriptor, build_matcher, config_from_dict
from icdlib.params import to_dict

FORMAT = "icdlib-checkpoint-1"

# checkpoint keys that are not part of a backbone (projection/classifier heads)
_HEAD_PREFIXES = ("head.", "fc_norm.", "dino_head.")
_WRAPPERS = ("teacher", "student", "state_dict", "model")  # tried in this order
_PREFIXES = ("module.", "backbone.", "_orig_mod.")


def _unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DDP (``.module``) or ``torch.compile`` (``._orig_mod``)."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


_PLAIN = (str, int, float, bool, type(None))


def _check_plain(obj: Any, where: str, tensors: bool) -> None:
    """Refuse meta values a weights-only load (or JSON, ``tensors=False``) cannot carry."""
    if isinstance(obj, _PLAIN) or (tensors and torch.is_tensor(obj)):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"save_checkpoint: meta key {where}.{k!r} is a {type(k).__name__}")
            _check_plain(v, f"{where}.{k}", tensors)
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]", tensors)
        return
    raise ValueError(
        f"save_checkpoint: meta value {where} is a {type(obj).__name__}; only "
        + ("tensors, " if tensors else "") + "dicts, lists, strings, numbers, booleans and None are saved"
    )


def _file_mode() -> int:
    """The permissions an ordinary new file gets (0o666 less the process umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_atomic(path: Path, write) -> None:
    """``write(f)`` into a temporary file beside ``path``, fsync, chmod, ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())  # mkstemp makes 0600 files; checkpoints are shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sidecar(path: str | Path) -> Path:
    """The JSON config beside a ``.safetensors`` checkpoint (``model.safetensors`` -> ``model.json``)."""
    return Path(path).with_suffix(".json")


def save_checkpoint(
    path: str | Path, model: nn.Module, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically.

    ``path`` ending in ``.safetensors`` writes safetensors weights plus the JSON sidecar
    :func:`sidecar` (``meta`` must then be JSON data); any other name writes one
    ``torch.save`` file that loads with ``weights_only=True`` (``meta`` may hold tensors).
    Each file is written to a temporary file in the same directory, flushed to disk and
    moved over its name with ``os.replace``, so a crash never leaves a half-written
    checkpoint; files get the ordinary permissions of the umask. ``meta["kind"]`` and
    ``meta["config"]`` are filled from the model (a DDP or compiled wrapper is
    unwrapped); a conflicting ``kind`` or a value that cannot be saved as plain data
    raises ``ValueError``.

    Returns:
        the path written.
    """
    model = _unwrap_model(model)
    if not isinstance(model, (Descriptor, Matcher)):
        raise ValueError(
            f"save_checkpoint: model must be a Descriptor or Matcher, got {type(model).__name__}"
        )
    meta = dict(meta or {})
    if meta.get("kind", model.kind) != model.kind:
        raise ValueError(
            f"save_checkpoint: meta kind {meta['kind']!r} does not match model kind {model.kind!r}"
        )
    meta["kind"] = model.kind
    meta["config"] = to_dict(model.config)
    path = Path(path)
    if path.suffix == ".safetensors":
        _check_plain(meta, "meta", tensors=False)
        # clone: safetensors refuses tensors that share storage
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        doc = {"format": FORMAT, "meta": meta}
        blob = safetensors_bytes(state, metadata={"format": FORMAT, "meta": json.dumps(meta)})
        _write_atomic(path, lambda f: f.write(blob))
        text = json.dumps(doc, indent=2, sort_keys=True).encode()
        _write_atomic(sidecar(path), lambda f: f.write(text))
        return path
    _check_plain(meta, "meta", tensors=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _write_atomic(path, lambda f: torch.save({"format": FORMAT, "meta": meta, "state_dict": state}, f))
    return path


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> tuple[dict, dict[str, torch.Tensor]]:
    """``(meta, state_dict)`` of an icdlib checkpoint in either format, read safely.

    Raises:
        FileNotFoundError / CheckpointError (a ``ValueError``): naming ``path``.
    """
    path = Path(path)
    payload = read_file(path, what)
    if is_safetensors(path):
        header = safetensors_metadata(path, what)
        if header.get("format") == FORMAT and "meta" in header:
            try:
                meta = json.loads(header["meta"])
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{path}: {what} has a corrupt meta header ({e})") from None
        elif sidecar(path).is_file():
            doc = read_json(sidecar(path), f"config of {path.name}")
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise CheckpointError(f"{sidecar(path)}: not an icdlib checkpoint config (format {FORMAT})")
            meta = doc.get("meta")
        else:
            raise CheckpointError(
                f"{path}: {what} is a safetensors file without icdlib metadata and has no "
                f"{sidecar(path).name} beside it"
            )
        state = payload
    else:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointError(f"{path}: {what} is not an icdlib checkpoint (format {FORMAT})")
        meta, state = payload.get("meta"), payload.get("state_dict")
    if not isinstance(meta, dict) or not isinstance(state, dict):
        raise CheckpointError(f"{path}: {what} lacks its meta or state_dict")
    return meta, state


def load_model(path: str | Path, device: str | torch.device = "cpu",
               what: str = "checkpoint") -> tuple[nn.Module, dict]:
    """Rebuild the model saved by :func:`save_checkpoint` (either format) and load its weights.

    Nothing in the file is executed (weights-only torch load, or safetensors).

    Returns:
        ``(model in eval mode on device, meta dict)``.

    Raises:
        FileNotFoundError / ValueError: naming ``path`` (missing, empty, truncated,
        foreign or unsafe file, unknown kind, config or weights that do not fit).
    """
    path = Path(path)
    meta, state = read_checkpoint(path, what)
    kind = meta.get("kind")
    if kind not in ("descriptor", "matcher"):
        raise CheckpointError(
            f"{path}: {what} meta kind must be descriptor or matcher, got {kind!r}"
        )
    try:
        cfg = config_from_dict(kind, meta.get("config") or {})
        model = build_descriptor(cfg) if kind == "descriptor" else build_matcher(cfg)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: {what} has an invalid model config: {e}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: {what} weights do not fit the saved config: {e}") from None
    return model.to(device).eval(), meta


# ---------------------------------------------------------------------------- DINO import
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
    state = {}
    for key, value in obj.items():
        if not torch.is_tensor(value):
            continue
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        state[key] = value
    return state


def load_backbone_weights(model: nn.Module, path: str | Path | Mapping) -> BackboneLoad:
    """Load a DINO/timm-format ViT checkpoint into a model's trunk (``model.vit``).

    Also takes one of icdlib's own descriptor checkpoints (its ViT trunk; a final norm the
    descriptor lacks keeps its initial identity values): at CPU scale a trained descriptor
    stands in for DINO weights when initialising a matcher.

    Accepted layouts: a plain state dict with timm/DINO key names (``cls_token``,
    ``pos_embed``, ``patch_embed.proj.weight``, ``blocks.N...``, ``norm...``), optionally
    wrapped in ``teacher``/``student``/``state_dict``/``model`` (the teacher is preferred)
    with ``module.``/``backbone.`` prefixes. Projection/classifier heads (``head.``,
    ``fc_norm.``) are ignored, and so is ``norm.`` when the model has no final norm (the
    paper's descriptor). A position embedding for another grid is resampled with timm's
    ``resample_abs_pos_embed`` (bicubic). For a :class:`Matcher`, blocks ``0..E-1`` become
    the shared encoder and the rest the fusion blocks; its fusion token starts from the
    checkpoint's class token.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: missing or unexpected keys, or shape mismatches (all listed).
    """
    model = _unwrap_model(model)
    if not hasattr(model, "vit"):
        raise ValueError(f"load_backbone_weights: {type(model).__name__} has no ViT trunk")
    if isinstance(path, Mapping):
        where, raw = "<state dict>", path
    else:
        where = str(path)
        raw = read_file(path, "backbone checkpoint")
    own_descriptor = isinstance(raw, Mapping) and isinstance(raw.get("meta"), Mapping) \
        and raw["meta"].get("kind") == "descriptor"
    if not isinstance(path, Mapping) and is_safetensors(path):
        own_descriptor = False
        try:
            own_descriptor = read_checkpoint(path, "backbone checkpoint")[0].get("kind") == "descriptor"
        except CheckpointError:
            pass  # a foreign safetensors file (timm/DINO weights): no icdlib meta
    state = _backbone_state(raw, where)
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

    grids = None
    problems = []
    if "pos_embed" in state and "pos_embed" in target:
        old, new = state["pos_embed"], target["pos_embed"]
        if old.shape != new.shape and old.dim() == 3 and old.shape[-1] == new.shape[-1]:
            prefix = model.vit.num_prefix_tokens
            side = math.isqrt(old.shape[1] - prefix)
            if side * side != old.shape[1] - prefix:
                problems.append(
                    f"pos_embed: checkpoint has {old.shape[1] - prefix} patch positions, "
                    "not a square grid"
                )
            else:
                new_grid = tuple(model.vit.patch_embed.grid_size)
                state["pos_embed"] = resample_abs_pos_embed(
                    old, new_size=list(new_grid), old_size=[side, side], num_prefix_tokens=prefix
                )
                grids = ((side, side), new_grid)
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
        if isinstance(model, Matcher) and "cls_token" in state:
            model.fusion_token.copy_(state["cls_token"].reshape(model.fusion_token.shape))
    return BackboneLoad(len(state), tuple(ignored), grids)
