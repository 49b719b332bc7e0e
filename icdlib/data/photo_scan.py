"""Reading a folder of photos: which files decode, their digests, and near-duplicates.

:func:`scan_photos` walks a folder recursively, keeps the files whose suffix is in
:data:`PHOTO_SUFFIXES` (JPEG, PNG, WebP; other files are counted as ``ignored``), decodes
each one and sorts it into one of three outcomes:

* **usable**: decodes, both sides >= ``min_side`` pixels;
* **skipped**, with a reason from :data:`SKIP_REASONS` and the decoder's message;
* **duplicate**: its perceptual hash is within ``max_distance`` bits of a usable photo
  earlier in sorted path order (that photo is kept, this one dropped). Near-duplicate
  sources would turn correct matches into false "misses": a query made from one copy
  matches the other, which the ground truth does not list.

Paths are POSIX paths relative to the folder; files are handled in sorted path order, so
the result depends only on the folder's content, never on listing order or location.

Decoding (:func:`decode_photo`): EXIF orientation is applied (the photo as viewers show
it), transparency is laid on white, 16-bit and float modes are scaled to 8 bits
(:func:`icdlib.data.disc21.to_rgb8`), and the image is shrunk (Lanczos) so its longest side
is at most ``max_side`` pixels; smaller photos are never enlarged.

Hashes (:func:`perceptual_hash`), 64 bits each: pHash (``imagehash.phash``, 8 x 8 DCT
signs, the pHash of :mod:`icdlib.eval.hashes`) when the ``imagehash`` package is
installed, else a difference hash computed here with numpy: the greyscale image box-filtered to 9 x 8 pixels,
bit ``(r, c)`` set where pixel ``(r, c + 1)`` is brighter than ``(r, c)``. Both hash the
decoded (shrunk) image.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from icdlib.data.disc21 import to_rgb8
from icdlib.digest import file_sha256

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# skip reason -> what it means (the keys are the manifest's and the report's words)
SKIP_REASONS = {
    "empty file": "the file has zero bytes",
    "unreadable": "the file cannot be opened (permissions, a dangling link)",
    "not an image": "no image decoder recognises the bytes",
    "corrupt": "recognised but fails to decode (truncated or damaged data)",
    "too large": "more pixels than Pillow's decompression-bomb limit",
    "too small": "a side shorter than min_side pixels",
}
HASH_BITS = 64


class PhotoError(ValueError):
    """A photo that cannot be used; ``reason`` is a key of :data:`SKIP_REASONS`."""

    def __init__(self, path: Path, reason: str, detail: str):
        super().__init__(f"{path}: {reason} ({detail})")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class PhotoFile:
    """One usable photo: ``path`` relative to the folder (POSIX), ``sha256`` of the file's
    bytes, ``size`` (w, h) as decoded before shrinking, ``hash`` the (64,) bool perceptual hash."""

    path: str
    sha256: str
    size: tuple[int, int]
    hash: np.ndarray = field(repr=False, compare=False)


@dataclass
class PhotoScan:
    """What :func:`scan_photos` found; every list is in sorted path order.

    Attributes:
        usable: photos to build from (duplicates removed).
        skipped: ``{"path", "sha256" (None if unreadable), "reason", "detail"}`` per file
            that cannot be used.
        duplicates: ``{"path", "sha256", "duplicate_of", "distance"}`` per near-duplicate
            dropped (``distance``: differing hash bits).
        ignored: number of files whose suffix is not in :data:`PHOTO_SUFFIXES`.
        hash_method: ``"phash"`` or ``"dhash"``.
        max_distance: the near-duplicate threshold used, in bits.
    """

    usable: list[PhotoFile]
    skipped: list[dict]
    duplicates: list[dict]
    ignored: int
    hash_method: str
    max_distance: int

    def skip_counts(self) -> dict[str, int]:
        """``{reason: n}`` over the skipped files, in :data:`SKIP_REASONS` order (zeros left out)."""
        counts = {r: 0 for r in SKIP_REASONS}
        for s in self.skipped:
            counts[s["reason"]] += 1
        return {r: n for r, n in counts.items() if n}

    def report(self) -> dict:
        """The JSON-ready summary the benchmark manifest records."""
        return {
            "usable": len(self.usable),
            "ignored_other_suffixes": self.ignored,
            "skipped": {"counts": self.skip_counts(), "files": self.skipped},
            "duplicates": {"count": len(self.duplicates), "hash": self.hash_method,
                           "max_distance_bits": self.max_distance, "files": self.duplicates},
        }


def list_photo_files(folder: Path) -> tuple[list[str], int]:
    """``(relative POSIX paths with a photo suffix, sorted; number of other files)``.

    Folders are walked without following linked folders (no cycles); a linked file counts.
    """
    found, other = [], 0
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        rel_top = Path(top).relative_to(folder)
        for name in files:
            if os.path.splitext(name)[1].lower() in PHOTO_SUFFIXES:
                found.append((rel_top / name).as_posix())
            else:
                other += 1
    return sorted(found), other


def _flatten(img: Image.Image) -> Image.Image:
    """8-bit RGB; transparent pixels laid on white (so a cut-out reads as it is shown)."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return to_rgb8(img)


def decode_photo(path: str | Path, max_side: int, min_side: int = 1) -> tuple[Image.Image, tuple[int, int]]:
    """Decode a photo as described in the module docstring.

    Returns ``(RGB image whose longest side is <= max_side, (w, h) before shrinking)``.
    Raises :class:`PhotoError` naming the file and the reason.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise PhotoError(path, "empty file", "0 bytes")
        with Image.open(path) as im:
            if im.format == "JPEG":  # decode at the smallest 1/2^k scale still >= max_side a side
                im.draft("RGB", (max_side, max_side))
            im.load()
            img = ImageOps.exif_transpose(im)
            img = _flatten(img)
    except PhotoError:
        raise
    except Image.DecompressionBombError as e:
        raise PhotoError(path, "too large", str(e)) from None
    except UnidentifiedImageError as e:
        raise PhotoError(path, "not an image", str(e).replace(f"{str(path)!r}", "file")) from None
    except (PermissionError, FileNotFoundError, IsADirectoryError) as e:
        raise PhotoError(path, "unreadable", e.strerror or str(e)) from None
    except Exception as e:  # noqa: BLE001  any other decoder or EXIF failure: the file is damaged
        raise PhotoError(path, "corrupt", str(e) or type(e).__name__) from None
    full = img.size
    if min(full) < min_side:
        raise PhotoError(path, "too small", f"{full[0]}x{full[1]} pixels, min_side {min_side}")
    w, h = full
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return img, full


def hash_method() -> str:
    """``"phash"`` when ``imagehash`` is installed, else ``"dhash"`` (module docstring)."""
    return "phash" if importlib.util.find_spec("imagehash") is not None else "dhash"


def dhash_bits(image: Image.Image) -> np.ndarray:
    """Difference hash of an image: (64,) bool (module docstring)."""
    small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    return (small[:, 1:] > small[:, :-1]).reshape(-1)


def perceptual_hash(image: Image.Image, method: str) -> np.ndarray:
    """(64,) bool hash of ``image`` by ``method`` (``"phash"`` or ``"dhash"``)."""
    if method == "phash":
        import imagehash

        return np.asarray(imagehash.phash(image.convert("RGB")).hash, dtype=bool).reshape(-1)
    if method == "dhash":
        return dhash_bits(image)
    raise ValueError(f"perceptual_hash: unknown method {method!r}; choose phash or dhash")


def scan_photos(folder: str | Path, max_side: int = 512, min_side: int = 32, max_distance: int = 4,
                method: str | None = None, progress: bool = False) -> PhotoScan:
    """Scan ``folder`` as the module docstring describes.

    Args:
        folder: the photo folder (read recursively).
        max_side: photos are hashed as they will be used: shrunk to this longest side.
        min_side: shorter photos are skipped (``"too small"``).
        max_distance: a photo whose hash differs from an earlier kept one's in at most
            this many of the 64 bits is a near-duplicate (0: identical hashes only).
        method: ``"phash"`` or ``"dhash"``; None: :func:`hash_method`.
        progress: show a tqdm bar.
    Raises:
        FileNotFoundError: ``folder`` is missing or not a folder (the message names it).
        ValueError: no file under ``folder`` has a photo suffix.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "not found"
        raise FileNotFoundError(f"photo folder {what}: {folder}")
    if not 0 <= int(max_distance) < HASH_BITS:
        raise ValueError(f"scan_photos: max_distance must be in [0, {HASH_BITS}), got {max_distance}")
    paths, other = list_photo_files(folder)
    if not paths:
        raise ValueError(f"photo folder {folder} holds no {'/'.join(s[1:] for s in PHOTO_SUFFIXES)} files "
                         f"({other} other files)")
    method = method or hash_method()
    from tqdm import tqdm

    usable, skipped, duplicates = [], [], []
    kept_bits = np.zeros((len(paths), HASH_BITS), dtype=bool)  # rows [:len(usable)] are filled
    for rel in tqdm(paths, desc=f"scan {folder.name}", disable=not progress, mininterval=1.0):
        try:
            img, full = decode_photo(folder / rel, max_side, min_side)
        except PhotoError as e:
            digest = None if e.reason == "unreadable" else file_sha256(folder / rel)
            skipped.append({"path": rel, "sha256": digest, "reason": e.reason,
                            "detail": e.detail.replace(str(folder), "<photos>")})
            continue
        digest, bits = file_sha256(folder / rel), perceptual_hash(img, method)
        if usable:
            dist = (kept_bits[: len(usable)] != bits).sum(axis=1)
            j = int(np.argmin(dist))
            if dist[j] <= max_distance:
                duplicates.append({"path": rel, "sha256": digest, "duplicate_of": usable[j].path,
                                   "distance": int(dist[j])})
                continue
        kept_bits[len(usable)] = bits
        usable.append(PhotoFile(rel, digest, (int(full[0]), int(full[1])), bits))
    return PhotoScan(usable, skipped, duplicates, other, method, int(max_distance))
