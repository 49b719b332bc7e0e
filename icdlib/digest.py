"""The sha256 of a file's bytes: the one fingerprint icdlib records of weights, packages and photos.

A record (a committed trunk's, a calibration's, a photo manifest's) names the bytes it was made
from by this digest; a reader recomputes it and refuses the file when the two differ.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20  # read in 1 MiB blocks: a file of any size in constant memory


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the bytes of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()
