"""Atomic file writes: a file appears whole under its name, or not at all.

Every writer goes through :func:`atomic_path`: it writes a fresh temporary file in the
target's own folder (the same file system, so the final ``os.replace`` is atomic), which
replaces the target only once the write has returned. A write that raises leaves the
target as it was and no temporary file behind, so a reader (a resumed run, another
process, DVC) never sees half a file, and an interrupted write never destroys the last
good one.

The temporary file is named ``.<name>.<random>.tmp<suffix>``: hidden, unique to its writer
(two processes writing one target never share a temporary file; the last to finish
wins), and ending in the target's suffix (``np.save`` would append ``.npy`` to a name that
lacks it). It gets the permissions of an ordinary new file (:func:`new_file_mode`), not
the ``0600`` of ``mkstemp``.

Bytes, text and JSON: :func:`write_bytes`, :func:`write_text`, :func:`write_json`. Anything
that writes to a path (``torch.save``, ``safetensors.torch.save_file``, ``np.save``,
``DataFrame.to_csv``, ``shutil.copyfile``)::

    with atomic_path(path) as tmp:
        np.save(tmp, table)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def new_file_mode(folder: bool = False) -> int:
    """The permission bits an ordinary new file (``0o666``) or, with ``folder``, folder
    (``0o777``) gets under this process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block exits cleanly.

    The parent folder is made if missing. The temporary file exists (empty) when the block
    starts; the block may write it in place or replace it. On a clean exit it is flushed to
    disk first when ``fsync`` (checkpoints: a crash just after the rename never leaves an
    empty file under the name), given ordinary permissions and moved over ``path``. On any
    exception (``KeyboardInterrupt`` included) it is deleted, ``path`` is left untouched and
    the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """``data`` into ``path`` atomically (:func:`atomic_path`); the path written."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """``text`` into ``path`` as UTF-8, atomically (:func:`atomic_path`); the path written."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def write_json(path: str | Path, obj: Any, *, fsync: bool = False, **dumps: Any) -> Path:
    """``json.dumps(obj, **dumps)`` and a final newline into ``path``, atomically; the path written.

    The text is made before anything is written: an object that does not serialise
    raises ``TypeError`` and leaves ``path`` as it was.
    """
    return write_text(path, json.dumps(obj, **dumps) + "\n", fsync=fsync)
