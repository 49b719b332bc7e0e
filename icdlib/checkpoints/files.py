"""Reading a checkpoint file without running anything it carries.

Every checkpoint icdlib reads goes through :func:`read_file`: torch files are opened with
``torch.load(..., weights_only=True)`` (tensors, dicts, lists, tuples, strings and numbers
only; a pickle that would build any other object is refused before it runs), and
``.safetensors`` files with the safetensors library (no pickle at all). Every failure is a
:class:`CheckpointError` (a ``ValueError``) or ``FileNotFoundError`` whose message starts
with the file's path.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

SAFETENSORS_SUFFIX = ".safetensors"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely; the message names the file."""


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` holds a safetensors file (by suffix, or by its header: an 8-byte
    little-endian length followed by a JSON object)."""
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        return True
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _check_path(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: {what} is empty (0 bytes)")


def read_file(path: str | Path, what: str = "checkpoint") -> Any:
    """The contents of a torch or safetensors checkpoint, read without executing code.

    Args:
        path: a ``torch.save`` file (zip or legacy pickle) or a ``.safetensors`` file.
        what: how messages name the file's role (``"--init checkpoint"``, ...).

    Returns:
        for a torch file, the saved object (tensors on CPU; containers are plain dicts,
        lists and tuples); for a safetensors file, ``{name: tensor}`` (CPU).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: empty, truncated or foreign file, or a pickle that holds objects
            other than tensors and plain data (refused, not run).
    """
    path = Path(path)
    _check_path(path, what)
    if is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error type for every bad header
            raise CheckpointError(f"{path}: {what} is not a readable safetensors file ({e})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # name the offending global only; torch's advice to allow-list it is not ours to give
        glob = re.search(r"GLOBAL ([\w.]+)", str(e))
        op = re.search(r"Unsupported operand (\w+)", str(e))
        detail = (f": it references {glob.group(1)}" if glob
                  else f": pickle instruction {op.group(1)} is not allowed" if op else "")
        raise CheckpointError(
            f"{path}: {what} refused: it holds Python objects other than tensors and plain data, "
            f"which icdlib never unpickles{detail}"
        ) from None
    except Exception as e:  # truncated zip, foreign bytes, bad pickle opcodes, ...
        raise CheckpointError(
            f"{path}: {what} is not a readable torch checkpoint (truncated or another format?): "
            f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
        ) from None


def safetensors_metadata(path: str | Path, what: str = "checkpoint") -> dict[str, str]:
    """The string-to-string metadata of a safetensors file's header ({} when none)."""
    path = Path(path)
    _check_path(path, what)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"{path}: {what} is not a readable safetensors file ({e})") from None


def read_json(path: str | Path, what: str = "config") -> Any:
    """A JSON file, with errors that name it."""
    path = Path(path)
    _check_path(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({e})") from None
