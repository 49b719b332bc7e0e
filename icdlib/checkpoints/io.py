"""Model checkpoints: atomic save and rebuild-and-load (icdlib files and the official release).

Checkpoint file (``torch.save``): ``{"format": FORMAT, "meta": meta, "state_dict": ...}``.
``meta["kind"]`` is ``"descriptor"`` or ``"matcher"`` and ``meta["config"]`` the model
config as a plain dict (enough to rebuild); callers add what they like (step, optimizer
state, train config, seed).
"""

from __future__ import annotations

import os
import pickle
import struct
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from icdlib.checkpoints.backbone import unwrap_model as _unwrap_model
from icdlib.checkpoints.official import read_release, release_model
from icdlib.models import Descriptor, Matcher, build_descriptor, build_matcher, config_from_dict
from icdlib.params import to_dict

FORMAT = "icdlib-checkpoint-1"


def save_checkpoint(
    path: str | Path, model: nn.Module, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically.

    The file is written to a temporary file in the same directory, flushed to disk and
    moved over ``path`` with ``os.replace``, so a crash never leaves a half-written
    checkpoint. ``meta["kind"]`` and ``meta["config"]`` are filled from the model
    (a DDP or compiled wrapper is unwrapped); a conflicting ``kind`` raises ``ValueError``.

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
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "meta": meta, "state_dict": state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_model(
    path: str | Path, device: str | torch.device = "cpu", *, num_heads: int | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild the model saved by :func:`save_checkpoint` and load its weights.

    Also reads the official CopyNCE release files (descriptor or matcher, any input size;
    :mod:`icdlib.checkpoints.official`), whose head count ``num_heads`` cannot be read from
    the weights (default: width / 64). ``num_heads`` is ignored for icdlib checkpoints.

    The file is unpickled in full (meta may hold optimizer and RNG state), so load only
    checkpoints you trust.

    Returns:
        ``(model in eval mode on device, meta dict)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_model: checkpoint not found: {path}")
    release = read_release(path)
    if release is not None:
        return release_model(release, path, device, num_heads=num_heads)
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, struct.error) as e:
        raise ValueError(f"load_model: {path} is not a readable checkpoint: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"load_model: {path} is not an icdlib checkpoint (format {FORMAT})")
    meta = payload["meta"]
    kind = meta.get("kind")
    if kind not in ("descriptor", "matcher"):
        raise ValueError(
            f"load_model: {path}: meta kind must be descriptor or matcher, got {kind!r}"
        )
    cfg = config_from_dict(kind, meta["config"])
    model = build_descriptor(cfg) if kind == "descriptor" else build_matcher(cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"load_model: {path}: weights do not fit the saved config: {e}") from e
    return model.to(device).eval(), meta
