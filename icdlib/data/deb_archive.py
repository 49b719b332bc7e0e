"""Reading files out of a Debian package (``.deb``) without installing it.

A ``.deb`` is an ``ar`` archive: ``debian-binary``, ``control.tar.*`` and ``data.tar.*``
(the files to install, compressed with xz, gzip, bzip2, zstd or not at all).
:func:`read_members` walks ``data.tar.*`` as a stream and hands back the regular files a
predicate selects, as bytes; nothing is written, and no path from the archive is used to
name a file on disk. zstd-compressed data is read through ``dpkg-deb --fsys-tarfile``
(Python's ``tarfile`` has no zstd before 3.14).

Member names are normalised to POSIX paths without the leading ``./`` (``usr/share/...``).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Callable, Iterator

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60  # name 16, mtime 12, uid 6, gid 6, mode 8, size 10, magic 2


class DebError(ValueError):
    """A file that is not a readable ``.deb`` (the message names it)."""


def ar_members(path: Path) -> Iterator[tuple[str, int, int]]:
    """``(name, data offset, size)`` of each member of the ``ar`` archive at ``path``."""
    with open(path, "rb") as f:
        if f.read(len(AR_MAGIC)) != AR_MAGIC:
            raise DebError(f"{path}: not a Debian package (no ar archive header)")
        pos = len(AR_MAGIC)
        while True:
            header = f.read(AR_HEADER)
            if not header:
                return
            if len(header) < AR_HEADER or header[58:60] != b"`\n":
                raise DebError(f"{path}: damaged ar member header at byte {pos}")
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            try:
                size = int(header[48:58].decode("ascii").strip())
            except ValueError:
                raise DebError(f"{path}: damaged ar member size at byte {pos}") from None
            yield name, pos + AR_HEADER, size
            pos += AR_HEADER + size + (size % 2)  # members are padded to an even length
            f.seek(pos)


def _data_member(path: Path) -> tuple[str, int, int]:
    names = []
    for name, offset, size in ar_members(path):
        names.append(name)
        if name.startswith("data.tar"):
            return name, offset, size
    raise DebError(f"{path}: no data.tar member (members: {', '.join(names) or 'none'})")


class _Window:
    """A read-only file object over bytes ``[offset, offset + size)`` of an open file."""

    def __init__(self, f, offset: int, size: int):
        self.f, self.left = f, size
        f.seek(offset)

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data


def read_members(path: str | Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """``(member path, bytes)`` for each regular file of the package's data whose normalised
    path satisfies ``want``, in archive order. Links and folders are never returned.

    Raises :class:`DebError` naming the file when it is not a readable package.
    """
    path = Path(path)
    name, offset, size = _data_member(path)
    if name.endswith(".zst"):
        yield from _via_dpkg(path, want)
        return
    if name not in ("data.tar", "data.tar.xz", "data.tar.gz", "data.tar.bz2"):
        raise DebError(f"{path}: unsupported data member {name}")
    with open(path, "rb") as f:
        try:
            with tarfile.open(fileobj=_Window(f, offset, size), mode="r|*") as tar:
                yield from _selected(tar, want)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DebError(f"{path}: damaged {name} ({e})") from None


def _selected(tar: tarfile.TarFile, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    for m in tar:
        name = m.name[2:] if m.name.startswith("./") else m.name.lstrip("/")
        if m.isfile() and want(name):
            yield name, tar.extractfile(m).read()


def _via_dpkg(path: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    exe = shutil.which("dpkg-deb")
    if exe is None:
        raise DebError(f"{path}: zstd-compressed data needs dpkg-deb, which is not on PATH")
    with subprocess.Popen([exe, "--fsys-tarfile", str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                yield from _selected(tar, want)
        except tarfile.TarError as e:
            raise DebError(f"{path}: dpkg-deb output is not a tar stream ({e})") from None
        finally:
            proc.stdout.close()
            err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise DebError(f"{path}: dpkg-deb --fsys-tarfile failed: {err}")
