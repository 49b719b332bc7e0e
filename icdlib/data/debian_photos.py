"""Free photographs from Debian's archive: fetched, checked and unpacked without installing.

``python -m icdlib.data photos --out DIR [--cache DIR]`` runs :func:`fetch_photos`:

1. ``apt-get download NAME=VERSION`` for each package of :data:`PACKAGES` (pinned
   versions of Debian 12 "bookworm", architecture ``all``, so the bytes are the same on
   every machine), into a cache folder; a cached file with the pinned sha256 is reused.
2. The sha256 of each ``.deb`` is checked against the table; a mismatch is an error.
3. The package is read without installing it (:mod:`icdlib.data.deb_archive`): only its
   photographs (the table's ``images`` patterns) and ``usr/share/doc/NAME/copyright``.
4. Each photo's licence is looked up in that copyright file when it is machine-readable
   (:mod:`icdlib.data.dep5`; the source-tree path is the install path less the table's
   ``source_root``), else it is the table's licence. Only licences that allow
   redistributing edited copies (:data:`REDISTRIBUTABLE`) are kept; every other file is
   listed as excluded with its licence.

The output folder holds ``NAME/<source path>`` per photo, ``NAME/copyright`` per
package, ``photos.json`` (packages, versions, sha256s, licences, per-photo licence and
holders, excluded files) and ``licence_notes.txt`` (the same for people; pass it to
``build --photos DIR --licence-notes DIR/licence_notes.txt``).

Where ``apt-get`` is missing, the archive cannot be reached or the pinned versions are
not in the machine's apt lists, :func:`fetch_photos` returns :class:`NotRun` with the
reason instead of raising, so a pipeline can report "not run: <reason>".
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from icdlib.data import dep5
from icdlib.data.deb_archive import read_members
from icdlib.atomic import write_json
from icdlib.digest import file_sha256

# licences that allow redistributing modified copies (no NC, no ND)
REDISTRIBUTABLE = re.compile(r"public-domain|CC0(-1\.0)?|CC-BY(-SA)?-[1-4]\.0|L?GPL-[23](\.[01])?\+?|Expat|MIT",
                             re.IGNORECASE)
MANIFEST, NOTES = "photos.json", "licence_notes.txt"


@dataclass(frozen=True)
class DebPackage:
    """One pinned package: what to fetch, what to take from it, and why that is allowed."""

    name: str
    version: str
    sha256: str  # of the .deb, from the archive's Packages index (checked again after download)
    size: int  # bytes of the .deb
    images: tuple[str, ...]  # fnmatch patterns of install paths (``*`` crosses folders)
    source_root: str  # install-path prefix to drop to get the source-tree path the copyright file uses
    licence: str  # what the copyright file says of these images
    reason: str  # one line: why they may be redistributed, edited, in a benchmark


PACKAGES: tuple[DebPackage, ...] = (
    DebPackage(
        "endless-sky-data", "0.9.8-1.2", "e45835e05a11e84bb1a890a0ded390246a53b8318f21a25925aa70fa54f80c13",
        69735632, ("usr/share/games/endless-sky/images/land/*.jpg",), "usr/share/games/endless-sky/",
        "per file: public-domain (morgueFile, Unsplash, NASA, USGS) or CC-BY-SA-3.0/4.0",
        "landscape, city and spaceflight photographs the copyright file puts in the public domain or under "
        "CC-BY-SA (attribution kept in licence_notes.txt; edited copies stay CC-BY-SA)"),
    DebPackage(
        "tuxpaint-data", "1:0.9.28-sdl2-1", "f5d0de8f9a70d2efc1241d19f26168cb8bf279f1b77abd3631e7a1a55c40e5e5",
        7855540, ("usr/share/tuxpaint/templates/*.jpg",), "usr/share/tuxpaint/", "GPL-2+",
        "nature and object photographs shipped as Tux Paint templates; Files: * is GPL-2+, which allows "
        "modified copies with the licence"),
    DebPackage(
        "palapeli-data", "4:22.12.3-1", "69a15dce2ac25ed8708ac518cd0cee5f4eb0c70ed15da2fdb8899a19ac0ee058",
        2136268, ("usr/share/palapeli/collection/*.jpg",), "usr/share/palapeli/", "GPL-2+",
        "the jigsaw game's five puzzle photographs; Files: * is GPL-2+, which allows modified copies"),
)


@dataclass(frozen=True)
class Photo:
    """One fetched photo: ``path`` relative to the output folder, its ``package``, ``member``
    (install path in the package), ``sha256``, ``licence``, ``copyright`` holders and ``note``."""

    path: str
    package: str
    member: str
    sha256: str
    licence: str
    copyright: str
    note: str = ""  # why the licence is not simply the last matching paragraph's, if it is not


@dataclass(frozen=True)
class PhotoSet:
    """What :func:`fetch_photos` wrote: ``root`` folder, ``photos`` (sorted by path) and
    ``packages`` (one summary dict per package, as in ``photos.json``)."""

    root: Path
    photos: tuple[Photo, ...]
    packages: tuple[dict, ...]


@dataclass(frozen=True)
class NotRun:
    """The fetch could not run on this machine; ``reason`` says why, in one line."""

    reason: str


class _Unavailable(Exception):
    """apt could not deliver a package (carried out as :class:`NotRun`)."""


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/icdlib/debian-photos`` (``~/.cache/...`` when unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "icdlib" / "debian-photos"


def _apt_failure(spec: str, code: int, stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("W:")]
    last = lines[-1] if lines else f"exit status {code}"
    text = stderr.lower()
    if any(k in text for k in ("could not resolve", "temporary failure", "failed to fetch", "unable to connect",
                               "connection failed", "connection timed out", "network is unreachable")):
        return f"Debian's archive is unreachable from here (apt-get download {spec}: {last})"
    if any(k in text for k in ("unable to locate package", "was not found", "can't select", "has no installation")):
        return (f"apt cannot find {spec} in this machine's package lists ({last}); the versions are pinned to "
                "Debian 12 bookworm: run apt-get update with a bookworm source")
    return f"apt-get download {spec} failed with exit status {code}: {last}"


def download(pkg: DebPackage, cache: Path, apt: str = "apt-get") -> Path:
    """The pinned ``.deb`` of ``pkg`` in ``cache``: reused when a cached file has the pinned
    sha256, else fetched with ``apt-get download NAME=VERSION`` and checked.

    Raises ``_Unavailable`` when apt cannot deliver it and ``ValueError`` naming the file
    when its sha256 differs from the pinned one.
    """
    cache.mkdir(parents=True, exist_ok=True)
    for cached in sorted(cache.glob(f"{pkg.name}_*.deb")):
        if cached.stat().st_size == pkg.size and file_sha256(cached) == pkg.sha256:
            return cached
    exe = shutil.which(apt)
    if exe is None:
        raise _Unavailable(f"{apt} is not on PATH (a Debian or Ubuntu machine with apt is needed)")
    spec = f"{pkg.name}={pkg.version}"
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        try:
            done = subprocess.run([exe, "download", spec], cwd=tmp, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise _Unavailable(f"{apt} download {spec} could not run: {e}") from None
        if done.returncode != 0:
            raise _Unavailable(_apt_failure(spec, done.returncode, done.stderr))
        debs = sorted(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise _Unavailable(f"{apt} download {spec} left {len(debs)} .deb files, expected 1")
        got = file_sha256(debs[0])
        if got != pkg.sha256:
            raise ValueError(f"{debs[0].name}: sha256 {got} differs from the pinned {pkg.sha256} of {spec}; "
                             "the download is not the pinned package, refusing to use it")
        final = cache / debs[0].name
        os.replace(debs[0], final)
    return final


def strictness(licence: str) -> int:
    """0 public domain, 1 permissive (attribution), 2 share-alike or copyleft, 3 not redistributable."""
    if not REDISTRIBUTABLE.fullmatch(licence):
        return 3
    low = licence.lower()
    return 0 if low in ("public-domain", "cc0", "cc0-1.0") else 2 if "sa" in low.split("-") or "gpl" in low else 1


def licence_of(pkg: DebPackage, source: str, paragraphs: list[dep5.FilesParagraph] | None) -> tuple[str, str, str]:
    """``(licence short name, copyright holders, note)`` of one photo at source-tree path ``source``.

    The narrowest matching paragraphs apply (:func:`icdlib.data.dep5.specific_matches`);
    where several disagree (overlapping patterns, a packaging slip: in endless-sky-data
    ``images/land/mountain1*`` also matches ``mountain19-harro.jpg``), the strictest licence
    applies (:func:`strictness`), which never drops an attribution, and ``note`` says so.
    No paragraph: licence ``""``.
    """
    if paragraphs is None:
        return pkg.licence, "see the package's copyright file", ""
    found = dep5.specific_matches(paragraphs, source)
    if not found:
        return "", "", "no Files paragraph covers it"
    top = max(strictness(p.licence) for p in found)
    chosen = [p for p in found if strictness(p.licence) == top][-1]
    others = sorted({p.licence for p in found} - {chosen.licence})
    note = f"overlapping patterns also give {', '.join(others)}; the strictest applies" if others else ""
    return chosen.licence, chosen.copyright, note


def _unpack(pkg: DebPackage, deb: Path, out: Path) -> tuple[list[Photo], list[dict]]:
    """Write ``pkg``'s photos and copyright file under ``out/NAME``; return ``(photos, excluded)``."""
    doc = f"usr/share/doc/{pkg.name}/copyright"
    found = dict(read_members(deb, lambda n: n == doc or any(fnmatch.fnmatchcase(n, p) for p in pkg.images)))
    if doc not in found:
        raise ValueError(f"{deb.name}: no {doc} in the package; cannot tell the photos' licence")
    (out / pkg.name).mkdir(parents=True)
    copyright_bytes = found.pop(doc)
    (out / pkg.name / "copyright").write_bytes(copyright_bytes)
    paragraphs = dep5.parse_copyright(copyright_bytes.decode("utf-8", errors="replace"))
    photos, excluded = [], []
    for member in sorted(found):
        source = member[len(pkg.source_root):] if member.startswith(pkg.source_root) else member
        if ".." in PurePosixPath(source).parts:
            excluded.append({"member": member, "licence": "", "reason": "path leaves the package folder"})
            continue
        licence, holders, note = licence_of(pkg, source, paragraphs)
        if strictness(licence) == 3:
            excluded.append({"member": member, "licence": licence,
                             "reason": note or "licence does not allow redistributing edited copies"})
            continue
        dest = out / pkg.name / source
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(found[member])
        photos.append(Photo(f"{pkg.name}/{source}", pkg.name, member, file_sha256(dest), licence, holders, note))
    return photos, excluded


def _notes(packages: list[dict], photos: list[Photo]) -> str:
    lines = ["Photographs from Debian 12 (bookworm) main, fetched with apt-get download and read without "
             "installing; each package's copyright file is kept next to its photos.", ""]
    for p in packages:
        lines += [f"{p['name']} {p['version']} (sha256 {p['sha256']}): {p['photos']} photos",
                  f"  licence: {p['licence']}", f"  why usable: {p['reason']}"]
    lines += ["", "Per photo (path: licence; holders):"]
    lines += [f"  {ph.path}: {ph.licence}; {ph.copyright}" + (f" ({ph.note})" if ph.note else "") for ph in photos]
    return "\n".join(lines) + "\n"


def fetch_photos(out: str | Path, cache: str | Path | None = None, packages: tuple[DebPackage, ...] = PACKAGES,
                 apt: str = "apt-get") -> PhotoSet | NotRun:
    """Fetch, check and unpack ``packages`` into ``out`` (module docstring).

    Returns :class:`PhotoSet`, or :class:`NotRun` when apt cannot deliver a package (then
    ``out`` is left as it was). Raises ``ValueError`` naming the file on a sha256 mismatch,
    a damaged package, or an ``out`` folder holding files this function did not write.
    """
    out, cache = Path(out), Path(cache) if cache is not None else default_cache()
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ValueError(f"photos: {out} is not empty and holds no {MANIFEST}; choose another --out")
    try:
        debs = [download(p, cache, apt) for p in packages]
    except _Unavailable as e:
        return NotRun(str(e))
    if out.is_dir():  # a previous fetch: replace what it wrote
        old = json.loads((out / MANIFEST).read_text()).get("packages", [])
        for name in {p["name"] for p in old} | {p.name for p in packages}:
            shutil.rmtree(out / name, ignore_errors=True)
        (out / MANIFEST).unlink()
    out.mkdir(parents=True, exist_ok=True)
    photos, summaries = [], []
    for pkg, deb in zip(packages, debs):
        got, excluded = _unpack(pkg, deb, out)
        photos += got
        summaries.append({**{k: v for k, v in asdict(pkg).items() if k not in ("images", "source_root")},
                          "images": list(pkg.images), "copyright_file": f"{pkg.name}/copyright",
                          "photos": len(got), "licences": dict(sorted(Counter(p.licence for p in got).items())),
                          "excluded": excluded})
    photos.sort(key=lambda p: p.path)
    (out / NOTES).write_text(_notes(summaries, photos))
    manifest = {"source": "Debian 12 (bookworm) main via apt-get download", "packages": summaries,
                "photos": [asdict(p) for p in photos], "total": len(photos)}
    write_json(out / MANIFEST, manifest, indent=1, sort_keys=True)
    return PhotoSet(out, tuple(photos), tuple(summaries))


# ---------------------------------------------------------------------- CLI
def add_parser(sub) -> None:
    """The ``photos`` subcommand of ``python -m icdlib.data``."""
    p = sub.add_parser("photos", help="fetch free photographs from Debian's archive (apt-get download; "
                       "nothing is installed)")
    p.add_argument("--out", required=True, help="folder to write the photos, copyright files and photos.json to")
    p.add_argument("--cache", default=None,
                   help=f"folder keeping the downloaded .deb files (default {default_cache()})")
    p.add_argument("--packages", nargs="+", default=None, choices=[p.name for p in PACKAGES],
                   help="only these pinned packages (default: all)")


def run(args) -> int:
    """Run ``photos``; exit status 0 when written, 2 when not run here (reason on stderr)."""
    chosen = tuple(p for p in PACKAGES if args.packages is None or p.name in args.packages)
    result = fetch_photos(args.out, args.cache, chosen)
    if isinstance(result, NotRun):
        print(f"not run: {result.reason}", file=sys.stderr)
        return 2
    for p in result.packages:
        licences = ", ".join(f"{k} {n}" for k, n in p["licences"].items())
        print(f"{p['name']} {p['version']}: {p['photos']} photos ({licences})"
              + (f"; {len(p['excluded'])} excluded" if p["excluded"] else ""))
    print(f"{len(result.photos)} photos in {args.out}; next: python -m icdlib.data build --photos {args.out} "
          f"--licence-notes {Path(args.out) / NOTES} --out BENCH")
    return 0
