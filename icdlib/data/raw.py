"""Laying out the DISC21 download, as unpacked, in the flat folders :class:`Disc21` reads.

The official archives unpack into nested folders, one per archive::

    RAW/references_0/images/references/R000000.jpg ... RAW/references_19/...
    RAW/training_0/images/train/T000000.jpg ...        RAW/training_19/...
    RAW/dev_queries/Q00000.jpg (or RAW/images/dev_queries/..., RAW/dev_queries_0/...)
    RAW/final_queries/Q50000.jpg ...
    RAW/public_ground_truth.csv (or dev_ground_truth.csv), RAW/final_ground_truth.csv

:func:`prepare` walks ``RAW`` (any depth, any folder names) and links every image into
``OUT/training_images``, ``OUT/reference_images``, ``OUT/dev_queries`` or
``OUT/final_queries`` by its file stem: ``T...`` is training, ``R...`` a reference, and
``Q...`` a query, dev or final by the nearest folder above it whose name says ``dev``
(or ``public``) or ``final``. Ground-truth CSVs found anywhere are linked at ``OUT``'s root
under their own names. Links are relative, so moving RAW and OUT together keeps them
valid; nothing is copied. Two files with one id, or two ground-truth files for one split,
are refused naming both. A rerun only adds what is new and removes links whose file is
gone, so it is fast and never duplicates.

CLI::

    python -m icdlib.data prepare --raw /data/disc21_download --out /data/disc21
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from icdlib.data.disc21 import BUILDING, IMAGE_SUFFIXES, MANIFEST, SPLIT_DIRS

PREFIX_SPLIT = {"T": "training", "R": "reference"}
IMAGE_ID = re.compile(r"[TRQ]\d+$")
# ground-truth file name -> the query split it labels; linked under the same name
GT_NAMES = {"public_ground_truth.csv": "dev_queries", "dev_ground_truth.csv": "dev_queries",
            "final_ground_truth.csv": "final_queries"}
PREPARED_SPLITS = ("training", "reference", "dev_queries", "final_queries")


class PrepareError(ValueError):
    """A raw tree that cannot be laid out (the message names the file at fault)."""


def query_split(path: Path, raw: Path) -> str:
    """``dev_queries`` or ``final_queries`` for a ``Q`` image, from its folder names."""
    for part in reversed(path.parent.relative_to(raw).parts):
        name = part.lower()
        if "final" in name:
            return "final_queries"
        if "dev" in name or "public" in name:
            return "dev_queries"
    raise PrepareError(f"{path}: query image in no folder named dev/public or final; "
                       "cannot tell dev from final queries")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def scan(raw: str | Path, skip: Path | None = None) -> tuple[dict[str, dict[str, str]], dict[str, str], list[str]]:
    """Walk ``raw``: ``({split: {image_id: path}}, {gt name: path}, [ignored image files])``.

    Paths are strings (millions of ``Path`` objects would dominate a rerun's time).
    ``skip`` (the output folder, when it lies inside ``raw``) is not walked.
    """
    raw = Path(raw)
    found: dict[str, dict[str, str]] = {s: {} for s in PREPARED_SPLITS}
    owner: dict[str, str] = {}  # id -> split, across splits
    gts: dict[str, str] = {}
    ignored: list[str] = []
    seen = {os.path.realpath(skip)} if skip is not None else set()  # linked folders are followed, once
    seen.add(os.path.realpath(raw))
    for dirpath, dirnames, filenames in os.walk(raw, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in seen:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        qsplit = None
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name in GT_NAMES:
                split = GT_NAMES[name]
                other = next((p for n, p in gts.items() if GT_NAMES[n] == split), None)
                if other is None:
                    gts[name] = path
                elif not _same(other, path):
                    raise PrepareError(f"two ground-truth files for {split}: {other} and {path}; keep one")
                continue
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not IMAGE_ID.match(stem):
                ignored.append(path)
                continue
            split = PREFIX_SPLIT.get(stem[0])
            if split is None:
                split = qsplit = qsplit or query_split(Path(path), raw)
            if stem in owner:
                was_split = owner[stem]
                was = found[was_split][stem]
                if _same(was, path):
                    continue
                where = f"in {SPLIT_DIRS[split]}" if was_split == split else f"as {was_split} and {split}"
                raise PrepareError(f"image id {stem} appears twice ({where}): {was} and {path}; keep one")
            owner[stem] = split
            found[split][stem] = path
    return found, gts, ignored


def _relink(target: str, link: str, want: str, have: str) -> str:
    """``link`` exists as a link to ``have``, not ``want``: keep it if it reaches ``target``,
    redo it if broken (the raw tree moved), else refuse."""
    if _same(link, target):
        return "kept"
    if not os.path.exists(link):
        os.unlink(link)
        os.symlink(want, link)
        return "new"
    raise PrepareError(f"{link} already links to {have}, not {target}; remove it or choose another --out")


def _link_split(found: dict[str, str], folder: Path) -> tuple[int, int]:
    """Link every ``found`` file into ``folder``; ``(new links, stale links removed)``."""
    folder.mkdir(exist_ok=True)
    existing = {e.name: e for e in os.scandir(folder)}
    wanted = {os.path.basename(p) for p in found.values()}
    removed = 0
    for name, entry in existing.items():  # links of a previous run whose file is gone or renamed
        if name not in wanted and entry.is_symlink():
            os.unlink(entry.path)
            removed += 1
    rel: dict[str, str] = {}  # raw folder -> its path relative to ``folder``
    new = 0
    for path in found.values():
        d, name = os.path.split(path)
        if d not in rel:
            rel[d] = os.path.relpath(d, folder)
        want, link = os.path.join(rel[d], name), os.path.join(folder, name)
        entry = existing.get(name)
        if entry is None:
            os.symlink(want, link)
            new += 1
        elif not entry.is_symlink():
            raise PrepareError(f"{link} already exists and is not a link made by prepare; choose another --out")
        elif (have := os.readlink(link)) != want:
            new += _relink(path, link, want, have) == "new"
    return new, removed


def prepare(raw: str | Path, out: str | Path) -> dict:
    """Lay out the download at ``raw`` in the flat layout at ``out`` (module docstring).

    Returns ``{"splits": {split: {"images": n, "new": n, "removed": n}}, "ground_truth":
    [names linked], "ignored": [image files whose stem is no DISC21 id]}``; ``new`` counts
    links made by this run, ``removed`` links of an earlier run whose file is gone. Raises
    :class:`PrepareError` (a ``ValueError``) or ``FileNotFoundError`` naming the file.
    """
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise FileNotFoundError(f"prepare: raw folder not found: {raw}")
    if os.path.realpath(raw) == os.path.realpath(out):
        raise PrepareError(f"prepare: --out must differ from --raw ({raw})")
    for marker in (MANIFEST, BUILDING):
        if (out / marker).exists():
            raise PrepareError(f"prepare: {out} is an icdlib build ({out / marker} exists); choose another --out")
    found, gts, ignored = scan(raw, skip=out)
    if not found["reference"]:
        raise PrepareError(f"prepare: no reference images (R*.jpg) anywhere under {raw}")
    if not found["dev_queries"] and not found["final_queries"]:
        raise PrepareError(f"prepare: no query images (Q*.jpg) anywhere under {raw}")
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, dict[str, int]] = {}
    for split in PREPARED_SPLITS:
        if not found[split]:
            continue
        new, removed = _link_split(found[split], out / SPLIT_DIRS[split])
        splits[split] = {"images": len(found[split]), "new": new, "removed": removed}
    for name, path in sorted(gts.items()):
        link, want = out / name, os.path.relpath(path, out)
        if not os.path.lexists(link):
            os.symlink(want, link)
        elif not link.is_symlink():
            raise PrepareError(f"{link} already exists and is not a link made by prepare; choose another --out")
        elif (have := os.readlink(link)) != want:
            _relink(path, str(link), want, have)
    return {"splits": splits, "ground_truth": sorted(gts), "ignored": ignored}


def add_parser(sub) -> None:
    """The ``prepare`` subcommand of ``python -m icdlib.data``."""
    p = sub.add_parser("prepare", help="link the DISC21 download (nested folders) into the flat layout")
    p.add_argument("--raw", required=True, help="the folder the official archives were unpacked into")
    p.add_argument("--out", required=True, help="the flat benchmark folder to write (symlinks only)")


def run(args) -> None:
    """Run ``prepare`` and print what it did."""
    report = prepare(args.raw, args.out)
    for split, r in report["splits"].items():
        print(f"{split}: {r['images']} images ({r['new']} new links, {r['removed']} stale links removed)")
    print("ground truth: " + (", ".join(report["ground_truth"]) or "none found (queries are read without it)"))
    if report["ignored"]:
        print(f"ignored {len(report['ignored'])} image files whose name is no DISC21 id "
              f"(first: {report['ignored'][0]})")
    print(f"prepared {args.out}: check it with python -m icdlib.data check --root {args.out}")
