"""Reading a benchmark in the DISC21 (ISC 2021) folder layout.

Layout
------
::

    ROOT/training_images/T000000.jpg ...      split "training"
    ROOT/reference_images/R000000.jpg ...     split "reference"
    ROOT/dev_queries/Q00000.jpg ...           split "dev_queries"
    ROOT/final_queries/Q50000.jpg ...         split "final_queries"
    ROOT/query_images/Q00000.jpg ...          split "queries" (single-folder layout)
    ROOT/dev_ground_truth.csv (or public_ground_truth.csv)
    ROOT/final_ground_truth.csv
    ROOT/ground_truth.csv                     (for query_images/)

Ground-truth CSVs have the header ``query_id,reference_id``, one row per copy pair (a
query that copies several references has a row for each); an empty ``reference_id``
marks a distractor (a query that copies no reference). They are read by
:func:`icdlib.isc_csv.read_ground_truth`, the one ISC21 CSV reader. Image ids are
file stems (``Q00012``); lists are sorted by id.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from icdlib.data.validation import check_files, check_image  # noqa: F401  (check_image: re-exported)
from icdlib.edits.raster import to_rgb8  # also icdlib.data.to_rgb8
from icdlib.isc_csv import read_ground_truth

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# split name -> folder name under the root
SPLIT_DIRS = {
    "training": "training_images",
    "reference": "reference_images",
    "dev_queries": "dev_queries",
    "final_queries": "final_queries",
    "queries": "query_images",
}
QUERY_SPLITS = ("dev_queries", "final_queries", "queries")
SPLIT_ALIASES = {"references": "reference", "train": "training"}
# query split -> ground-truth files looked up at the root, first found wins
GT_FILES = {
    "dev_queries": ("dev_ground_truth.csv", "public_ground_truth.csv"),
    "final_queries": ("final_ground_truth.csv",),
    "queries": ("ground_truth.csv", "public_ground_truth.csv"),
}
GT_HEADER = ["query_id", "reference_id"]
# written first by ``data build`` and removed after its manifest: a folder holding it is partial
BUILDING = ".icdlib-build-in-progress"
MANIFEST = "manifest.json"


def load_image(path: str | Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image file fully into a ``PIL.Image`` in RGB.

    ``draft`` ``(w, h)``: the caller only needs that many pixels; a JPEG then decodes at
    the smallest 1/2, 1/4 or 1/8 scale that still has at least ``w x h`` pixels
    (Pillow's ``draft``, a cheaper decode); other formats decode in full.

    16-bit and float images are scaled to 8 bits (:func:`to_rgb8`). Raises
    ``FileNotFoundError`` if the file is missing and ``ValueError`` naming the file if it
    cannot be decoded (not an image, truncated, corrupt, a decompression bomb).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", (max(1, int(draft[0])), max(1, int(draft[1]))))
            img.load()
            return to_rgb8(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot decode image {path}: {e}") from e


@contextlib.contextmanager
def worker_errors():
    """Re-raise a ``ValueError``/``OSError`` from a DataLoader worker as its own message.

    A worker's exception comes back as ``"Caught ValueError in DataLoader worker process
    0. Original Traceback (most recent call last): ..."``; a user should read the original
    one line (``cannot decode image X: ...``), not the worker's traceback text.
    """
    try:
        yield
    except (ValueError, OSError) as e:
        msg = str(e)
        if "Original Traceback" not in msg:
            raise
        marker = f"{type(e).__name__}: "
        original = msg[msg.rindex(marker) + len(marker):] if marker in msg else msg.strip().splitlines()[-1]
        raise type(e)(original.strip()) from None


RAW_TOP = re.compile(r"(references|training)(_\d+)?$")  # archive folders of the download
RAW_NESTED = re.compile(r"(references|train|training|dev_queries|final_queries)$")  # under images/, ...


def raw_download_hint(root: Path) -> str | None:
    """A sentence for when ``root`` looks like the DISC21 download as unpacked (nested
    ``references_0/images/references/...`` folders) rather than the flat layout; else None.

    Flat-layout names (``dev_queries/`` at the top) are no evidence; archive folders
    (``references_0/``, ``training_3/``) or split folders one level down are.
    """
    try:
        top = [p for p in root.iterdir() if p.is_dir()]
        hits = [p for p in top if RAW_TOP.match(p.name)]
        hits += [q for p in top for q in p.iterdir() if q.is_dir() and RAW_NESTED.match(q.name)]
    except OSError:
        return None
    if not hits:
        return None
    shown = hits[0].relative_to(root).as_posix()
    return (f"{root} looks like the DISC21 download as unpacked (nested folders such as {shown}/); "
            f"lay it out flat first: run python -m icdlib.data prepare --raw {root} --out DIR, then read DIR")


class Disc21:
    """A benchmark folder in the DISC21 layout (see the module docstring).

    Args:
        root: the benchmark folder.
        ground_truth: optional path of one CSV to use for every query split instead of
            the files found at the root (its rows are matched to splits by query id).
        on_error: ``"raise"`` (default) stops at the first fault with an error naming the
            file; ``"skip"`` drops faulty rows and images and reports their count in a
            warning.
    """

    def __init__(self, root: str | Path, ground_truth: str | Path | None = None, on_error: str = "raise"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Disc21: benchmark folder not found: {self.root}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"Disc21: on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.gt_path = Path(ground_truth) if ground_truth is not None else None
        if self.gt_path is not None and not self.gt_path.is_file():
            raise FileNotFoundError(f"Disc21: ground-truth file not found: {self.gt_path}")
        present = [s for s, d in SPLIT_DIRS.items() if (self.root / d).is_dir()]
        if "reference" not in present and (hint := raw_download_hint(self.root)):
            raise FileNotFoundError(f"Disc21: {hint}")
        if "reference" not in present:
            raise FileNotFoundError(f"Disc21: missing folder {self.root / SPLIT_DIRS['reference']}")
        if not any(s in present for s in QUERY_SPLITS):
            dirs = ", ".join(SPLIT_DIRS[s] for s in QUERY_SPLITS)
            raise FileNotFoundError(f"Disc21: no query folder ({dirs}) under {self.root}")
        if (self.root / BUILDING).exists():
            raise ValueError(
                f"Disc21: {self.root} is a partial build ({BUILDING} is present: `data build` was "
                "interrupted or is still running); rebuild it"
            )
        self._present = present
        self._images: dict[str, list[tuple[str, Path]]] = {}
        self._bad: set[Path] = set()

    # ------------------------------------------------------------------ faults
    def _fault(self, message: str, exc: type[Exception] = ValueError) -> None:
        if self.on_error == "raise":
            raise exc(message)

    def _warn_skipped(self, what: str, n: int, first: str) -> None:
        if n:
            warnings.warn(f"Disc21({self.root}): skipped {n} {what}; first: {first}", stacklevel=3)

    # ------------------------------------------------------------------ listing
    def splits(self) -> list[str]:
        """Names of the splits present, in the order of :data:`SPLIT_DIRS`."""
        return list(self._present)

    def folder(self, split: str) -> Path:
        """The folder of ``split`` (``FileNotFoundError`` if absent)."""
        split = SPLIT_ALIASES.get(split, split)
        if split not in SPLIT_DIRS:
            raise ValueError(f"Disc21: unknown split {split!r}; known {list(SPLIT_DIRS)}")
        if split not in self._present:
            raise FileNotFoundError(f"Disc21: missing folder {self.root / SPLIT_DIRS[split]}")
        return self.root / SPLIT_DIRS[split]

    def images(self, split: str) -> list[tuple[str, Path]]:
        """``[(image_id, path)]`` of a split, sorted by id; empty split -> ``ValueError``.

        Images found faulty by :meth:`validate` in ``"skip"`` mode are left out.
        """
        split = SPLIT_ALIASES.get(split, split)
        if split not in self._images:
            folder = self.folder(split)
            found, broken = [], []
            with os.scandir(folder) as it:  # one stat per entry (links are followed), no more
                for e in it:
                    stem, suffix = os.path.splitext(e.name)
                    if suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    if e.is_file():
                        found.append((stem, e.name))
                    elif e.is_symlink() and not os.path.exists(e.path):
                        broken.append(Path(e.path))
            items = [(i, folder / name) for i, name in sorted(found)]
            broken.sort()
            for p in broken:  # a link whose raw file moved: say so rather than drop it unseen
                self._fault(f"Disc21: broken link {p} -> {os.readlink(p)} (rerun python -m icdlib.data prepare)",
                            FileNotFoundError)
            self._warn_skipped(f"broken links in {folder}", len(broken), str(broken[0]) if broken else "")
            ids = [i for i, _ in items]
            if len(set(ids)) != len(ids):
                dup = next(i for i in ids if ids.count(i) > 1)
                raise ValueError(f"Disc21: image id {dup} appears twice in {folder}")
            if not items:
                self._fault(f"Disc21: empty split {split}: no images in {folder}")
            self._images[split] = items
        if not self._bad:
            return list(self._images[split])
        return [(i, p) for i, p in self._images[split] if p not in self._bad]

    # ------------------------------------------------------------------ ground truth
    def gt_file(self, split: str) -> Path | None:
        """The ground-truth CSV used for a query split, or None when there is none."""
        if split not in QUERY_SPLITS:
            raise ValueError(f"Disc21: split {split!r} has no ground truth; query splits are {QUERY_SPLITS}")
        if self.gt_path is not None:
            return self.gt_path
        for name in GT_FILES[split]:
            if (self.root / name).is_file():
                return self.root / name
        return None

    def ground_truth(self, split: str) -> list[tuple[str, str | None]]:
        """``[(query_id, reference_id or None)]`` of a query split, sorted (a query that
        copies several references has a row for each).

        Every query id must name an image of the split and every reference id an image
        of ``reference`` (with an explicit ``ground_truth`` file, rows of other splits'
        queries are ignored). Raises ``FileNotFoundError`` if the split has no CSV.
        """
        path = self.gt_file(split)
        if path is None:
            names = " or ".join(GT_FILES[split])
            raise FileNotFoundError(f"Disc21: no ground truth for {split}: {names} not found in {self.root}")
        rows = read_ground_truth(path)
        queries = {i for i, _ in self.images(split)}
        refs = {i for i, _ in self.images("reference")}
        shared = self.gt_path is not None and sum(s in self._present for s in QUERY_SPLITS) > 1
        if shared:
            others = set()
            for s in QUERY_SPLITS:
                if s != split and s in self._present:
                    others |= {i for i, _ in self.images(s)}
        out, skipped = [], []
        for q, r in rows:
            if q not in queries:
                if shared and q in others:
                    continue
                skipped.append(q)
                self._fault(f"{path}: query id {q} has no image in {self.folder(split)}")
                continue
            if r is not None and r not in refs:
                skipped.append(r)
                self._fault(f"{path}: reference id {r} (query {q}) has no image in {self.folder('reference')}")
                continue
            out.append((q, r))
        self._warn_skipped(f"ground-truth rows of {path.name}", len(skipped), skipped[0] if skipped else "")
        uncovered = sorted(queries - {q for q, _ in out})
        if uncovered:
            warnings.warn(
                f"{path}: ground truth covers {len(queries) - len(uncovered)} of the {len(queries)} "
                f"queries in {self.folder(split)} (first without a row: {uncovered[0]}); the others "
                "count as false positives wherever they are predicted", stacklevel=2)
        return sorted(out)

    # ------------------------------------------------------------------ validation
    def validate(self, decode: bool = True, workers: int = 1, cache: str | Path | None = None) -> dict[str, int]:
        """Check every split (and decode every image if ``decode``); return counts.

        Returns ``{split: n_images}`` for each split present, plus
        ``{split + "_positives": n}`` (queries with a reference) and ``{split + "_gt": n}``
        (ground-truth rows) for each query split with a ground-truth file, and
        ``"skipped"``, the number of faulty images dropped in ``"skip"`` mode.
        Raises on the first fault in ``"raise"`` mode, naming the file or folder.

        Args:
            decode: decode every image (else only list them and read the ground truth).
            workers: processes decoding images (:func:`icdlib.data.validation.check_files`).
            cache: None (check every image), or a folder to hold ``.icdlib-validation.json``
                (or that file's path): images whose size and mtime match its record are
                not decoded again, so a rerun costs one ``stat`` per image.
        """
        counts: dict[str, int] = {}
        items = {split: self.images(split) for split in self.splits()}
        bad: list[Path] = []
        if decode:
            paths = [p for split in items for _, p in items[split]]
            faults = check_files(paths, workers=workers, cache=cache, stop_at_first=self.on_error == "raise",
                                 desc=f"check {len(paths)} images")
            if faults and self.on_error == "raise":
                raise ValueError(next(iter(faults.values())))
            bad = list(faults)
            self._bad.update(bad)
        for split in items:
            counts[split] = len(self.images(split))
            if not counts[split] and self.on_error == "skip":
                warnings.warn(f"Disc21({self.root}): split {split} is empty", stacklevel=2)
        self._warn_skipped("unreadable images", len(bad), str(bad[0]) if bad else "")
        for split in QUERY_SPLITS:
            if split in self._present and self.gt_file(split) is not None:
                gt = self.ground_truth(split)
                counts[f"{split}_gt"] = len(gt)
                counts[f"{split}_positives"] = len({q for q, r in gt if r is not None})  # a collage has 2+ rows
        counts["skipped"] = len(bad)
        self._check_manifest(counts)
        return counts

    def _check_manifest(self, counts: dict[str, int]) -> None:
        """An icdlib build (one with ``manifest.json``) must hold every image it lists."""
        path = self.root / MANIFEST
        if not path.is_file():
            return  # a DISC21 download has no manifest
        try:
            expected = json.loads(path.read_text()).get("counts", {})
        except (ValueError, AttributeError) as e:
            raise ValueError(f"{path}: unreadable manifest ({e}); rebuild the benchmark") from None
        wrong = [f"{s}: {counts.get(s, 0)} images, manifest {n}" for s, n in sorted(expected.items())
                 if s in SPLIT_DIRS and counts.get(s, 0) + (counts["skipped"] if self.on_error == "skip" else 0) < n]
        if wrong:
            raise ValueError(f"{self.root}: partial build, images missing ({'; '.join(wrong)}); rebuild it")
