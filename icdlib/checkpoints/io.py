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
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from safetensors.torch import save as safetensors_bytes

from icdlib.atomic import atomic_path, write_bytes
from icdlib.checkpoints.backbone import unwrap_model as _unwrap_model
from icdlib.checkpoints.files import CheckpointError, is_safetensors, read_file, read_json, safetensors_metadata
from icdlib.checkpoints.official import read_release, release_model
from icdlib.models import Descriptor, Matcher, build_descriptor, build_matcher, config_from_dict
from icdlib.params import to_dict

FORMAT = "icdlib-checkpoint-1"

# checkpoint keys that are not part of a backbone (projection/classifier heads)
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
    Each file is written atomically (:func:`icdlib.atomic.atomic_path`: a temporary file in
    the same directory, flushed to disk and moved over its name with ``os.replace``), so a
    crash never leaves a half-written checkpoint; files get the ordinary permissions of the umask. ``meta["kind"]`` and
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
        write_bytes(path, blob, fsync=True)
        text = json.dumps(doc, indent=2, sort_keys=True).encode()
        write_bytes(sidecar(path), text, fsync=True)
        return path
    _check_plain(meta, "meta", tensors=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path, fsync=True) as tmp, tmp.open("wb") as f:
        torch.save({"format": FORMAT, "meta": meta, "state_dict": state}, f)
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
               what: str = "checkpoint", *, num_heads: int | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model saved by :func:`save_checkpoint` (either format) and load its weights.

    Also reads the official CopyNCE release files (descriptor or matcher, any input size;
    :mod:`icdlib.checkpoints.official`), whose head count ``num_heads`` cannot be read from
    the weights (default: width / 64). ``num_heads`` is ignored for icdlib checkpoints.
    Nothing in the file is executed (weights-only torch load, or safetensors).

    Returns:
        ``(model in eval mode on device, meta dict)``.

    Raises:
        FileNotFoundError / ValueError: naming ``path`` (missing, empty, truncated,
        foreign or unsafe file, unknown kind, config or weights that do not fit).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} is not a file")
    release = None if is_safetensors(path) else read_release(path)
    if release is not None:
        return release_model(release, path, device, num_heads=num_heads)
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
