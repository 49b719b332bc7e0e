"""A copy-detection benchmark from any folder of photos, in the DISC21 layout.

``python -m icdlib.data build --photos DIR --out OUT [--queries N] [--seed S]`` calls
:func:`build_photo_benchmark`, which writes the layout of the embedded benchmark
(:mod:`icdlib.data.build`)::

    OUT/reference_images/R000000.jpg ...  the photos, shrunk to max_side (JPEG)
    OUT/dev_queries/Q00000.jpg ...        edited copies and distractors
    OUT/final_queries/Q00100.jpg ...      (ids continue after dev; absent when final_share is 0)
    OUT/training_images/T000000.jpg ...   only when train_fraction leaves >= min_training photos
    OUT/dev_ground_truth.csv, OUT/final_ground_truth.csv
    OUT/licence_notes.txt                 a byte copy of --licence-notes, when given
    OUT/manifest.json                     written last, atomically

How photos become roles: the folder is scanned (:func:`icdlib.data.photo_scan.scan_photos`:
undecodable files skipped with a reason, near-duplicates dropped), the usable photos are
shuffled by the seed and split into training (``train_fraction``), held-back distractor
sources (``distractor_share`` of the rest, never more than the distractor queries use) and
references (all others). Queries are planned by
:func:`icdlib.data.layout_writer.plan_split_queries` exactly as for the embedded benchmark
(positives on distinct references while there are
enough). A positive is an edit chain (:func:`icdlib.edits.sample_chain`, seeded as the embedded
benchmark seeds query ``q``: ``derive_seed(seed, "edit", q)``) applied to its reference
*as stored* (the decoded JPEG), so replaying the manifest's ``specs`` on
``reference_images/R....jpg`` gives the query's pixels and trace exactly. A distractor is
the same kind of edit of a held-back photo, which went through the same shrink and JPEG
round trip, so nothing but content tells distractors from copies. Pasted foreign content
comes from the edits' procedural donors (each spec's seed), never from another photo.

Every random choice derives from ``seed``; files are read in sorted relative-path order;
the manifest holds relative paths only and no time stamps. The same folder content, config
and seed give byte-identical outputs.
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from icdlib import edits
from icdlib.data.disc21 import SPLIT_DIRS, load_image
from icdlib.data.layout_writer import (ROLES, derive_seed, finish_build, image_id, plan_split_queries, start_build,
                                       write_ground_truth)
from icdlib.data.photo_scan import PhotoScan, decode_photo, scan_photos  # noqa: F401  (PhotoScan re-exported)
from icdlib.params import section, to_dict

LICENCE_NOTES = "licence_notes.txt"


@dataclass(frozen=True)
class PhotoBuildConfig:
    """Settings of :func:`build_photo_benchmark` (``params.yaml`` section ``photos``; the
    ``build`` flags ``--queries``, ``--max-side`` and ``--train-fraction`` override them)."""

    queries: int = 200  # dev + final; 100 positives give a uAP whose seed-to-seed spread is a few points
    final_share: float = 0.5  # share of the queries in final_queries (ids continue after dev)
    positive_rate: float = 0.5  # as the embedded benchmark: half copies, half distractors
    distractor_share: float = 0.25  # share of non-training photos held back as distractor sources
    train_fraction: float = 0.0  # evaluation-only unless asked: photos are scarcer than procedural sources
    min_training: int = 100  # fewer training images than this teach a descriptor nothing that transfers
    max_side: int = 512  # longest side of references (and sources); 4x the CPU model input, DISC21-like
    min_side: int = 32  # smaller images are icons, not photos
    jpeg_quality: int = 90  # as the embedded benchmark: JPEG is not itself a strong edit
    max_distance: int = 4  # near-duplicate threshold in hash bits: resized copies differ in <= 3
    edit_families: tuple[str, ...] | None = None  # None: every family, at the edits config's severity

    def __post_init__(self):
        if int(self.queries) < 1:
            raise ValueError(f"PhotoBuildConfig.queries must be >= 1, got {self.queries}")
        for name in ("final_share", "positive_rate", "distractor_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PhotoBuildConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.train_fraction < 1.0:
            raise ValueError(f"PhotoBuildConfig.train_fraction must be in [0, 1), got {self.train_fraction}")
        if int(self.min_training) < 1:
            raise ValueError(f"PhotoBuildConfig.min_training must be >= 1, got {self.min_training}")
        if not 32 <= int(self.max_side) <= 4096 or not 1 <= int(self.min_side) <= int(self.max_side):
            raise ValueError(f"PhotoBuildConfig: need 32 <= max_side <= 4096 and 1 <= min_side <= max_side, "
                             f"got max_side={self.max_side}, min_side={self.min_side}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"PhotoBuildConfig.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if not 0 <= int(self.max_distance) < 64:
            raise ValueError(f"PhotoBuildConfig.max_distance must be in [0, 64), got {self.max_distance}")

    @property
    def query_counts(self) -> dict[str, int]:
        """``{"dev_queries": n, "final_queries": n}``; dev keeps at least one query."""
        final = min(int(round(self.queries * self.final_share)), int(self.queries) - 1)
        return {"dev_queries": int(self.queries) - final, "final_queries": final}


def photo_config(params: dict, source: str = "params.yaml") -> PhotoBuildConfig:
    """The :class:`PhotoBuildConfig` of a parsed params dict (section ``photos``; absent: defaults)."""
    return section(params, "photos", PhotoBuildConfig, source)


def assign_roles(n: int, cfg: PhotoBuildConfig, seed: int) -> tuple[dict[str, list[int]], list[str]]:
    """Split ``n`` usable photos (indices in sorted path order) into roles.

    Returns ``({"training": [...], "distractor": [...], "reference": [...]}, notes)``: each
    list sorted, the three disjoint and covering ``range(n)``; ``notes`` say why the
    benchmark is evaluation-only when it is. Raises ``ValueError`` when no reference is left.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), ROLES["plan"], 1]))
    order = rng.permutation(n)
    n_train, notes = int(n * cfg.train_fraction), []
    if n_train < cfg.min_training:
        why = ("train_fraction is 0" if cfg.train_fraction == 0 else
               f"train_fraction {cfg.train_fraction:g} of {n} usable photos is {n_train}, "
               f"fewer than min_training={cfg.min_training}")
        notes.append(f"evaluation-only: no training split ({why}); every photo serves evaluation")
        n_train = 0
    rest = n - n_train
    counts = cfg.query_counts
    n_neg = sum(counts.values()) - sum(int(round(c * cfg.positive_rate)) for c in counts.values())
    n_distractor = min(n_neg, max(1, int(round(rest * cfg.distractor_share)))) if n_neg else 0
    if rest - n_distractor < 1:
        raise ValueError(f"{n} usable photos leave no reference after {n_train} for training and "
                         f"{n_distractor} held back for distractors; add photos or raise positive_rate")
    parts = np.split(order, [n_train, n_train + n_distractor])
    roles = {r: sorted(int(i) for i in p) for r, p in zip(("training", "distractor", "reference"), parts)}
    return roles, notes


def _stored(img: Image.Image, quality: int) -> tuple[bytes, Image.Image]:
    """``(JPEG bytes, the decoded JPEG)``: an image as the benchmark stores it."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0", optimize=False)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        return data, im.convert("RGB")


def build_photo_benchmark(photos: str | Path, out_dir: str | Path, config: PhotoBuildConfig = PhotoBuildConfig(),
                          seed: int = 0, edit_config: Any = None, licence_notes: str | Path | None = None,
                          progress: bool = True) -> dict[str, Any]:
    """Write the benchmark of the module docstring from the photos under ``photos``.

    Args:
        photos: folder of photos (JPEG, PNG, WebP; read recursively).
        out_dir: destination; its split folders, CSVs, notes and manifest are replaced.
        config: :class:`PhotoBuildConfig`.
        seed: non-negative int; every random choice derives from it.
        edit_config: the ``icdlib.edits.EditConfig`` of the chains (None: its defaults).
        licence_notes: optional text file on where the photos come from and their
            licences; copied to ``OUT/licence_notes.txt`` and into the manifest.
        progress: show tqdm bars.
    Returns:
        The manifest, also written to ``manifest.json``: the embedded benchmark's keys
        (``seed``, ``config``, ``counts``, ``edit_config``, ``source_kinds``, ``queries``
        with ``specs`` and ``traced_fraction`` per query) plus ``kind: "photos"``,
        ``evaluation_only``, ``notes``, ``licence_notes`` (text or None) and ``photos``: the
        scan report (``skipped`` with per-reason counts and files, ``duplicates``,
        ``ignored_other_suffixes``) and ``sources``: per usable photo its ``path``,
        ``sha256``, ``size`` (w, h as found), ``role`` and ``id`` (``T``/``R``/``D`` id).
    Raises:
        FileNotFoundError, ValueError: naming the folder or file at fault.
    """
    if not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"build_photo_benchmark: seed must be a non-negative int, got {seed!r}")
    photos, seed = Path(photos), int(seed)
    notes_text = None
    if licence_notes is not None:
        notes_path = Path(licence_notes)
        if not notes_path.is_file():
            raise FileNotFoundError(f"licence notes file not found: {notes_path}")
        try:
            notes_text = notes_path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"licence notes file {notes_path} is not UTF-8 text ({e})") from None
    scan = scan_photos(photos, config.max_side, config.min_side, config.max_distance, progress=progress)
    if not scan.usable:
        counts = ", ".join(f"{r}: {n}" for r, n in scan.skip_counts().items())
        raise ValueError(f"photo folder {photos}: none of its {len(scan.skipped)} photo files can be used ({counts})")
    try:
        roles, notes = assign_roles(len(scan.usable), config, seed)
    except ValueError as e:
        raise ValueError(f"photo folder {photos}: {e}") from None
    qc = config.query_counts
    tasks = plan_split_queries({**qc, "reference": len(roles["reference"])}, config.positive_rate, seed)

    out = start_build(out_dir, "build_photo_benchmark")
    for name in ("dev_ground_truth.csv", "final_ground_truth.csv", LICENCE_NOTES):
        (out / name).unlink(missing_ok=True)
    counts = {"training": len(roles["training"]), "reference": len(roles["reference"]), **qc}
    for split, n in counts.items():
        if n:
            (out / SPLIT_DIRS[split]).mkdir()
    if notes_text is not None:
        (out / LICENCE_NOTES).write_bytes(Path(licence_notes).read_bytes())

    def stored_photo(i: int) -> tuple[bytes, Image.Image]:
        return _stored(decode_photo(photos / scan.usable[i].path, config.max_side)[0], config.jpeg_quality)

    sources: dict[int, dict] = {}
    for role in ("training", "reference", "distractor"):
        for k, i in enumerate(tqdm(roles[role], desc=f"{role} photos", disable=not progress or role == "distractor",
                                   mininterval=1.0)):
            sid = f"D{k:06d}" if role == "distractor" else image_id(role, k)
            if role != "distractor":  # held-back sources are written only as edited queries
                (out / SPLIT_DIRS[role] / f"{sid}.jpg").write_bytes(stored_photo(i)[0])
            sources[i] = {"path": scan.usable[i].path, "sha256": scan.usable[i].sha256,
                          "size": list(scan.usable[i].size), "role": role, "id": sid}

    records = []
    for _, q, split, ref, dis in tqdm(tasks, desc="queries", disable=not progress, mininterval=1.0):
        if ref is not None:
            i = roles["reference"][ref]
            src = load_image(out / SPLIT_DIRS["reference"] / f"{image_id('reference', ref)}.jpg")
        else:
            i = roles["distractor"][dis % len(roles["distractor"])]
            src = stored_photo(i)[1]
        specs = edits.sample_chain(derive_seed(seed, "edit", q), families=config.edit_families, config=edit_config)
        edited, trace = edits.apply(src, specs, config=edit_config)
        qid = image_id("query", q)
        _stored_to(out / SPLIT_DIRS[split] / f"{qid}.jpg", edited, config.jpeg_quality)
        records.append({
            "query_id": qid, "split": split, "reference_id": image_id("reference", ref) if ref is not None else None,
            "source_id": sources[i]["id"], "source_kind": f"photo:{sources[i]['path']}", "size": list(edited.size),
            "traced_fraction": round(float(trace.valid_mask().mean()), 4), "specs": specs,
        })
    for split, name in (("dev_queries", "dev_ground_truth.csv"), ("final_queries", "final_ground_truth.csv")):
        if counts[split]:
            write_ground_truth(out / name, [(m["query_id"], m["reference_id"]) for m in records if m["split"] == split])

    by_role = {r: [sources[i] for i in roles[r]] for r in roles}
    manifest = {
        "kind": "photos",
        "seed": seed,
        "config": to_dict(config),
        "counts": counts,
        "edit_config": to_dict(edit_config) if dataclasses.is_dataclass(edit_config) else edit_config,
        "evaluation_only": counts["training"] == 0,
        "notes": notes,
        "licence_notes": notes_text,
        "photos": {**scan.report(), "sources": [sources[i] for i in range(len(scan.usable))]},
        "source_kinds": {r: [f"photo:{s['path']}" for s in by_role[r]] for r in ("training", "reference")},
        "queries": records,
    }
    finish_build(out, manifest)
    return manifest


def _stored_to(path: Path, img: Image.Image, quality: int) -> None:
    img.convert("RGB").save(path, format="JPEG", quality=int(quality), subsampling="4:2:0", optimize=False)


def replay_query(root: str | Path, record: dict, photos: str | Path | None = None,
                 manifest: dict | None = None, edit_config: Any = None):
    """Replay one query record of a photo benchmark: ``(edited RGB image, icdlib.pixtrace.Trace)``.

    A positive is replayed on its stored reference (exactly the build's pixels). A
    distractor's source is a held-back photo: pass the ``photos`` folder and the
    ``manifest`` (for the photo's path and the build's config).
    """
    root = Path(root)
    if record["reference_id"] is not None:
        src = load_image(root / SPLIT_DIRS["reference"] / f"{record['reference_id']}.jpg")
    else:
        if photos is None or manifest is None:
            raise ValueError(f"replay_query: {record['query_id']} is a distractor; pass photos= and manifest=")
        cfg = manifest["config"]
        path = next(s["path"] for s in manifest["photos"]["sources"] if s["id"] == record["source_id"])
        src = _stored(decode_photo(Path(photos) / path, cfg["max_side"])[0], cfg["jpeg_quality"])[1]
    return edits.apply(src, record["specs"], config=edit_config)


# ---------------------------------------------------------------------- CLI (the ``build`` subcommand)
def add_arguments(parser) -> None:
    """Add ``--photos`` and its options to the ``build`` subcommand's parser."""
    parser.add_argument("--photos", default=None, help="build from this folder of photos (JPEG/PNG/WebP, recursive) "
                        "instead of procedural sources; settings: params.yaml section photos")
    parser.add_argument("--queries", type=int, default=None,
                        help="with --photos: number of queries, dev + final (default 200)")
    parser.add_argument("--max-side", type=int, default=None,
                        help="with --photos: longest side of references in px (default 512)")
    parser.add_argument("--train-fraction", type=float, default=None,
                        help="with --photos: share of photos for training_images/ (default 0: evaluation-only)")
    parser.add_argument("--licence-notes", default=None, help="with --photos: text file on the photos' origin and "
                        "licences, copied into the benchmark")


def refuse_photo_flags(args) -> None:
    """``ValueError`` when a ``--photos`` option is given without ``--photos``."""
    given = [f"--{k.replace('_', '-')}" for k in ("queries", "max_side", "train_fraction", "licence_notes")
             if getattr(args, k) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} only apply with --photos DIR")


def run(args, params: dict, source: str, seed: int, edit_config: Any) -> None:
    """Run ``build --photos`` (settings: ``params`` read from ``source``) and print what it did."""
    if args.size is not None:
        raise ValueError("--size names an embedded benchmark size; with --photos use --queries")
    flags = {"queries": args.queries, "max_side": args.max_side, "train_fraction": args.train_fraction}
    cfg = dataclasses.replace(photo_config(params, source), **{k: v for k, v in flags.items() if v is not None})
    t0 = time.perf_counter()
    m = build_photo_benchmark(args.photos, args.out, cfg, seed, edit_config, args.licence_notes)
    report = m["photos"]
    print(f"built a photo benchmark (seed {seed}) in {args.out} from {len(report['sources'])} photos: "
          + ", ".join(f"{k} {v}" for k, v in m["counts"].items()) + f"; {time.perf_counter() - t0:.1f} s")
    skipped = report["skipped"]["counts"]
    print(f"skipped {sum(skipped.values())} files" + (": " + ", ".join(f"{r} {n}" for r, n in skipped.items())
                                                      if skipped else "")
          + f"; dropped {report['duplicates']['count']} near-duplicates ({report['duplicates']['hash']}, "
          f"<= {report['duplicates']['max_distance_bits']} bits); ignored {report['ignored_other_suffixes']} "
          "files with other suffixes; manifest.json lists the skipped and dropped files")
    for note in m["notes"]:
        print(note)
    if m["licence_notes"] is None:
        print("no --licence-notes given: the manifest does not say where the photos come from or under what licence")
