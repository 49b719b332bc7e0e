"""Stage real_photos, first half: the photos, and the benchmark built from them.

:func:`prepare_real_photos` takes its photos from one of three places, in this order:

1. ``paths.real_photos``, when set: a folder of your own photos (read recursively);
2. ``real_photos.source: debian``: Debian's free photographs
   (:func:`icdlib.data.debian_photos.fetch_photos`), the ``.deb`` files cached in
   ``paths.runs/real_photos/debs`` and unpacked into ``paths.runs/real_photos/photos``;
3. ``real_photos.source: stand_ins``: ``real_photos.stand_ins`` procedural images the stage
   renders itself into ``paths.runs/real_photos/stand_ins`` (no network: the tiny profile
   that the test suite runs the notebooks with). They are no photographs, and every record
   says so.

It then builds the benchmark (:func:`icdlib.data.photo_bench.build_photo_benchmark`, the
``photos`` section, ``seed`` and ``edits``) into ``paths.runs/real_photos/benchmark`` and
writes ``paths.reports/real_photos/status.json``. Where Debian's archive cannot be used
here (no ``apt-get``, offline, other apt lists), nothing fails: the status file says
``{"run": false, "reason": "..."}`` and every later consumer (the evaluation, the table,
the orderings) reports "not run: <reason>".
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from icdlib.data import PROCEDURAL_KINDS, data_config, edit_config, render
from icdlib.data.debian_photos import MANIFEST, NOTES, NotRun, fetch_photos
from icdlib.data.photo_bench import build_photo_benchmark, photo_config
from icdlib.params import section
from icdlib.pipeline.stage import Stage, write_json

SOURCES = ("debian", "stand_ins")
STAND_IN_STREAM = 101  # seed stream of the stand-ins, apart from every stream of icdlib.data.layout_writer.ROLES
STATUS = "status.json"


@dataclass(frozen=True)
class RealPhotosConfig:
    """params.yaml ``real_photos``: where stage real_photos takes its photos (the benchmark's
    own settings are the ``photos`` section; ``paths.real_photos``, when set, wins over both)."""

    source: str = "debian"  # debian: Debian's free photographs (apt-get download) | stand_ins: rendered, no download
    stand_ins: int = 40  # images rendered for source stand_ins, at data.image_size px

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"real_photos.source must be one of {list(SOURCES)}, got {self.source!r}")
        if int(self.stand_ins) < 2:
            raise ValueError(f"real_photos.stand_ins must be >= 2 (a reference and a distractor), got {self.stand_ins}")


def real_photos_config(st: Stage) -> RealPhotosConfig:
    """The ``real_photos`` section of a stage's params (absent: defaults)."""
    return section(st.params, "real_photos", RealPhotosConfig, st.params_path.name)


def benchmark_root(st: Stage) -> Path:
    """Where the real-photo benchmark is built: ``paths.runs/real_photos/benchmark``."""
    return st.path("runs", "real_photos", "benchmark")


def status_path(st: Stage) -> Path:
    return st.path("reports", "real_photos", STATUS)


def render_stand_ins(out: str | Path, n: int, size: int, seed: int) -> Path:
    """Write ``n`` procedural images ``S0000.png ...`` (``size`` px square, kinds in turn, image
    ``i`` seeded by ``(seed, STAND_IN_STREAM, i)``: never one of the embedded benchmark's sources)
    into ``out``, replacing what was there. Returns ``out``."""
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for i in range(int(n)):
        kind = PROCEDURAL_KINDS[i % len(PROCEDURAL_KINDS)]
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), STAND_IN_STREAM, i]))
        render(kind, rng, int(size)).save(out / f"S{i:04d}.png")
    return out


def _photos(st: Stage, cfg: RealPhotosConfig) -> tuple[str, Path | None, Path | None, str | None]:
    """``(source, photo folder, licence notes file, reason it did not run)``."""
    if st.paths.real_photos is not None:
        folder = st.path("real_photos")
        if not folder.is_dir():
            raise FileNotFoundError(f"paths.real_photos: photo folder not found: {folder}")
        notes = folder / NOTES
        return "folder", folder, notes if notes.is_file() else None, None
    base = st.path("runs", "real_photos")
    if cfg.source == "stand_ins":
        size = data_config(st.params, st.params_path.name).image_size  # as the embedded benchmark's sources
        return "stand_ins", render_stand_ins(base / "stand_ins", cfg.stand_ins, size, st.seed), None, None
    if (base / "photos").is_dir() and not (base / "photos" / MANIFEST).is_file():
        shutil.rmtree(base / "photos")  # the stage's own folder, left half-written by an interrupted fetch
    fetched = fetch_photos(base / "photos", cache=base / "debs")
    if isinstance(fetched, NotRun):
        return "debian", None, None, fetched.reason
    return "debian", fetched.root, fetched.root / NOTES, None


def _licences(folder: Path) -> dict[str, Any] | None:
    """Per-package licence counts of a Debian fetch (``photos.json``), else None."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    packages = json.loads(manifest.read_text())["packages"]
    return {p["name"]: {"version": p["version"], "photos": p["photos"], "licences": p["licences"]}
            for p in packages}


def prepare_real_photos(params_file: str | Path, progress: bool = True) -> dict[str, Any]:
    """Take the photos, build the benchmark and write ``status.json`` (module docstring).

    Returns the status: ``run`` (bool), ``reason`` (why not, else None), ``source``
    (``folder``, ``debian`` or ``stand_ins``), ``profile``, ``seed``, ``config`` (a tag of
    the ``photos``, ``real_photos`` and ``edits`` params) and, when run, ``root`` (the
    benchmark, relative to the params file), ``counts``, ``photos`` (usable), ``skipped``,
    ``duplicates``, ``evaluation_only``, ``licences`` (Debian's, per package) and
    ``manifest_sha256`` (the benchmark's ``manifest.json``: a pure function of the photos
    and params, so identical rebuilds are recognisable).

    Raises:
        FileNotFoundError, ValueError: a ``paths.real_photos`` folder that is missing or
            holds too few usable photos (a setting to fix, not a machine without apt).
    """
    st = Stage(params_file)
    cfg = real_photos_config(st)
    source, folder, notes, reason = _photos(st, cfg)
    status: dict[str, Any] = {"run": reason is None, "reason": reason, "source": source, "profile": st.profile,
                              "seed": st.seed, "config": st.tag(["photos", "real_photos", "edits"], source=source)}
    if folder is not None:
        root = benchmark_root(st)
        pcfg = photo_config(st.params, st.params_path.name)
        manifest = build_photo_benchmark(folder, root, pcfg, st.seed, edit_config(st.params, st.params_path.name),
                                         notes, progress=progress)
        report = manifest["photos"]
        status.update(root=st.relative(root), counts=manifest["counts"], photos=len(report["sources"]),
                      skipped=report["skipped"]["counts"], duplicates=report["duplicates"]["count"],
                      evaluation_only=manifest["evaluation_only"], licences=_licences(folder),
                      manifest_sha256=hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest())
    path = status_path(st)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, status)
    return status


def read_status(st: Stage) -> dict[str, Any]:
    """``status.json`` as :func:`prepare_real_photos` wrote it; a not-run status naming the
    missing file when the stage has not run here."""
    path = status_path(st)
    if not path.is_file():
        return {"run": False, "reason": f"stage real_photos has not run here (no {st.relative(path)})"}
    return json.loads(path.read_text())


def describe(status: dict[str, Any]) -> str:
    """One line on what the benchmark was built from, or ``not run: <reason>``."""
    if not status.get("run"):
        return f"not run: {status.get('reason')}"
    what = {"folder": "photos from paths.real_photos", "debian": "Debian's free photographs",
            "stand_ins": "stand-ins (procedural images rendered by the stage, no photographs; "
                         "real_photos.source: stand_ins)"}[status["source"]]
    c = status["counts"]
    return (f"{status['photos']} usable images: {what}; {c['reference']} references, "
            f"{c['dev_queries']} dev and {c['final_queries']} final queries")
