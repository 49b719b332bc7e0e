"""Copy search between two folders of your own images (``python -m icdlib.search``).

The same steps as the evaluation engine, on folders instead of a DISC21 layout: embed
every image with the descriptor (:func:`icdlib.eval.retrieval.embed`), search the ``k``
best references per query in a faiss index (:func:`icdlib.eval.retrieval.build_index`),
optionally rescore those pairs with a matcher (:func:`icdlib.eval.rescore.rescore`).

Image ids are POSIX paths relative to their folder (``sub/dir/img.jpg``); folders are
walked recursively, hidden files and folders (``.name``) skipped, and every file whose
extension a PIL plugin opens is an image.

A reference index folder holds ``references.faiss`` (faiss.write_index), its row ids
``references.ids.txt`` and ``reference_index.json`` (descriptor SHA-256, input size,
index string, references root): a later search passes it as ``reference_index`` and
embeds only its queries. It refuses an index built by another descriptor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import pandas as pd
from PIL import Image

from icdlib.digest import file_sha256
from icdlib.eval.calibration import read_calibration
from icdlib.eval.engine import load_checkpoint, model_size
from icdlib.eval.rescore import rescore
from icdlib.eval.retrieval import EvalConfig, build_index, embed, save_features, search_index

INDEX_FILE, INDEX_IDS, INDEX_META = "references.faiss", "references.ids.txt", "reference_index.json"
AUTO_PRECISION = 0.9  # what --threshold auto calibrates to (the RP90 operating point)


def image_extensions() -> frozenset[str]:
    """Lower-case suffixes (``.jpg``, ``.webp``...) of every format PIL can open here."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def list_images(folder: str | Path) -> list[tuple[str, Path]]:
    """``[(id, path)]`` of the images under ``folder``, recursively, sorted by id.

    The id is the path relative to ``folder`` with ``/`` separators. Raises
    ``FileNotFoundError`` for a missing folder, ``ValueError`` for one without images.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"search: image folder not found: {folder}")
    exts = image_extensions()
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in exts:
                p = Path(dirpath) / name
                items.append((p.relative_to(root).as_posix(), p))
    if not items:
        raise ValueError(f"search: no image files under {folder} (looked for {', '.join(sorted(exts)[:8])}...)")
    return sorted(items)


@dataclass
class SearchResult:
    """What one search produced.

    Attributes:
        matches: ``query_id, reference_id, score, rank`` (rank 1 = best of its query;
            score: descriptor cosine, or matcher probability with a matcher).
        threshold: score from which a pair is called a copy (None: not set).
        threshold_note: where the threshold comes from, one line.
        info: resolved inputs and config (``search_config.json``).
        query_paths, reference_paths: id -> image file.
    """

    matches: pd.DataFrame
    threshold: float | None
    threshold_note: str
    info: dict
    query_paths: dict[str, Path]
    reference_paths: dict[str, Path]


def resolve_threshold(threshold: str | float | None, descriptor: str | Path,
                      matcher: str | Path | None) -> tuple[float | None, str]:
    """``(threshold, note)`` from ``None``, a number, or ``"auto"``: the score at 90 %
    precision that ``python -m icdlib.evaluate --calibrate`` stored beside the checkpoint
    whose scores are final (the matcher if given, else the descriptor)."""
    if threshold is None:
        return None, ""
    if threshold != "auto":
        try:
            value = float(threshold)
        except (TypeError, ValueError):
            raise ValueError(f"search: --threshold must be 'auto' or a number, got {threshold!r}") from None
        return value, f"threshold {value:g} given on the command line"
    ckpt = matcher if matcher is not None else descriptor
    expected = "matcher probability" if matcher is not None else "descriptor cosine"
    cal = read_calibration(ckpt)
    if cal.score != expected:
        raise ValueError(f"search: the calibration of {ckpt} is for {cal.score!r} but search produces "
                         f"{expected!r}; calibrate with python -m icdlib.evaluate without --auxiliary/--lce")
    if cal.precision != AUTO_PRECISION:
        raise ValueError(f"search: the calibration of {ckpt} targets precision {cal.precision}, not {AUTO_PRECISION}")
    if cal.threshold is None:
        raise ValueError(f"search: {ckpt} never reached {AUTO_PRECISION:.0%} precision on split {cal.split!r} "
                         f"of {cal.data}; give --threshold FLOAT")
    return cal.threshold, "threshold auto: " + cal.describe()


def save_reference_index(folder: Path, idx: faiss.Index, ids: list[str], meta: dict) -> Path:
    """Write the index, its ids and ``reference_index.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(idx, str(folder / INDEX_FILE))
    (folder / INDEX_IDS).write_text("".join(f"{i}\n" for i in ids))
    (folder / INDEX_META).write_text(json.dumps(meta, indent=2) + "\n")
    return folder / INDEX_FILE


def load_reference_index(path: str | Path) -> tuple[faiss.Index, list[str], dict]:
    """``(index, ids, meta)`` saved by :func:`save_reference_index` (``path``: the folder
    or its ``references.faiss``)."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    files = [folder / n for n in (INDEX_FILE, INDEX_IDS, INDEX_META)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"search: reference index {path} is incomplete, missing {', '.join(missing)}")
    try:
        meta = json.loads(files[2].read_text())
        idx = faiss.read_index(str(files[0]))
    except (json.JSONDecodeError, RuntimeError) as e:
        raise ValueError(f"search: cannot read reference index {folder} ({e})") from e
    ids = files[1].read_text().splitlines()
    if len(ids) != idx.ntotal:
        raise ValueError(f"search: {files[1]} has {len(ids)} ids but {files[0]} holds {idx.ntotal} vectors")
    return idx, ids, meta


def run_search(queries: str | Path, descriptor: str | Path, out: str | Path, references: str | Path | None = None,
               matcher: str | Path | None = None, threshold: str | float | None = None,
               reference_index: str | Path | None = None, cfg: EvalConfig = EvalConfig()) -> SearchResult:
    """Search the ``cfg.k`` best references of every query image; write the outputs to ``out``.

    Writes ``matches.csv``, ``features/queries.{npy,ids.txt}`` (and ``references``),
    the reusable reference index (see the module docstring) and ``search_config.json``;
    the caller writes ``index.html`` (:func:`icdlib.eval.gallery.write_gallery`).

    Args:
        queries, references: image folders (``references`` may be omitted with a
            ``reference_index``: then the index's recorded folder is used for images).
        descriptor, matcher: checkpoints; the matcher rescores each query's k candidates.
        threshold: None, a score, or ``"auto"`` (:func:`resolve_threshold`).
        reference_index: a folder written by an earlier search, instead of embedding references.
        cfg: ``k``, ``index``, ``nprobe``, batch sizes, workers and device are read.
    """
    if references is None and reference_index is None:
        raise ValueError("search: give --references, or --reference-index from an earlier search")
    thr, note = resolve_threshold(threshold, descriptor, matcher)  # fail before any embedding
    out = Path(out)
    q_items = list_images(queries)
    model, meta = load_checkpoint(descriptor, "descriptor", cfg.device)
    size, sha = model_size(cfg, meta, descriptor), file_sha256(descriptor)
    if reference_index is not None:
        idx, r_ids, imeta = load_reference_index(reference_index)
        if imeta.get("descriptor_sha256") != sha or imeta.get("img_size") != size:
            raise ValueError(f"search: reference index {reference_index} was built with descriptor "
                             f"{imeta.get('descriptor')} at {imeta.get('img_size')} px, not {descriptor} at {size} px")
        ref_root = Path(references if references is not None else imeta["references"])
        r_paths = {i: ref_root / i for i in r_ids}
        index_string = imeta["index"]
    else:
        r_items = list_images(references)
        r_ids, r_paths, ref_root = [i for i, _ in r_items], dict(r_items), Path(references)
        rf = embed(model, [p for _, p in r_items], size, cfg.batch_size, cfg.num_workers, cfg.device,
                   desc="references", amp=cfg.amp)
        save_features(out / "features" / "references", r_ids, rf)
        idx = build_index(rf, cfg.index, cfg.nprobe)
        index_string = cfg.index
        save_reference_index(out, idx, r_ids, {
            "descriptor": str(descriptor), "descriptor_sha256": sha, "img_size": size, "index": cfg.index,
            "dim": int(rf.shape[1]), "n_references": len(r_ids), "references": str(ref_root.resolve())})
    if "IVF" in index_string:
        faiss.ParameterSpace().set_index_parameter(idx, "nprobe", cfg.nprobe)
    qf = embed(model, [p for _, p in q_items], size, cfg.batch_size, cfg.num_workers, cfg.device, desc="queries",
               amp=cfg.amp)
    save_features(out / "features" / "queries", [i for i, _ in q_items], qf)
    scores, rows = search_index(idx, qf, cfg.k)
    q_rep = [i for i, _ in q_items for _ in range(scores.shape[1])]
    flat_rows = rows.reshape(-1)
    keep = flat_rows >= 0
    preds = pd.DataFrame({"query_id": pd.Series(q_rep, dtype=object)[keep].to_numpy(),
                          "reference_id": [r_ids[j] for j in flat_rows[keep]],
                          "score": scores.reshape(-1)[keep].astype("float64")})
    if matcher is not None:
        mmodel, mmeta = load_checkpoint(matcher, "matcher", cfg.device)
        preds = rescore(mmodel, preds, dict(q_items), r_paths, model_size(cfg, mmeta, matcher),
                        cfg.matcher_batch_size, cfg.num_workers, cfg.device, amp=cfg.amp)
    preds = preds.sort_values(["query_id", "score"], ascending=[True, False], kind="stable").reset_index(drop=True)
    preds["rank"] = preds.groupby("query_id", sort=False).cumcount() + 1
    out.mkdir(parents=True, exist_ok=True)
    preds.to_csv(out / "matches.csv", index=False)
    if thr is not None:
        preds[preds["score"] >= thr].to_csv(out / "copies.csv", index=False)
    info = {"queries": str(queries), "references": str(ref_root), "descriptor": str(descriptor),
            "descriptor_sha256": sha, "matcher": str(matcher) if matcher else None, "img_size": size,
            "k": cfg.k, "index": index_string, "nprobe": cfg.nprobe,
            "reference_index": str(reference_index) if reference_index else None,
            "threshold": thr, "threshold_note": note, "n_queries": len(q_items), "n_references": len(r_ids),
            "n_matches": len(preds)}
    (out / "search_config.json").write_text(json.dumps(info, indent=2) + "\n")
    return SearchResult(preds, thr, note, info, dict(q_items), r_paths)
