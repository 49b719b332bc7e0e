"""The data stage: build the embedded benchmark (or validate a DISC21 copy), and sample copies to show."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from icdlib.data import Disc21, build_benchmark, data_config, edit_config, load_image
from icdlib.pipeline.stage import Stage, write_json


def prepare_data(params_file: str | Path, progress: bool = True) -> dict[str, Any]:
    """Build the embedded benchmark (``dataset.build``) or validate a DISC21 copy.

    Returns the reader's counts per split (plus the manifest summary when built).
    """
    st = Stage(params_file)
    root = st.path("data")
    if st.dataset.build:
        cfg = data_config(st.params, st.params_path.name)
        edit_cfg = edit_config(st.params, st.params_path.name)
        build_benchmark(root, cfg, seed=st.seed, edit_config=edit_cfg, progress=progress)
    elif not root.is_dir():
        raise FileNotFoundError(f"paths.data: DISC21 folder not found: {root} (set dataset.build: true to build one)")
    ds = Disc21(root, ground_truth=st.dataset.ground_truth, on_error=st.dataset.on_error)
    counts = ds.validate(decode=True, workers=st.dataset.workers, cache=st.path("runs", "validation"))
    summary = {"root": str(root), "counts": counts, "seed": st.seed, "profile": st.profile,
               "built": st.dataset.build, "config": st.tag(["data", "edits", "dataset"])}
    out = st.path("reports", "data")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", {k: v for k, v in summary.items() if k != "root"})
    fp = fingerprint(ds)
    write_json(out / "images.json", fp)
    # the machine's own copy (stage output ``paths.runs/data/images.json``, outside git): a fresh
    # clone lacks it, so DVC runs this stage there rather than skip it on the committed fingerprint
    st.path("runs", "data").mkdir(parents=True, exist_ok=True)
    write_json(st.path("runs", "data", "images.json"), fp)
    return summary


def fingerprint(ds: Disc21) -> dict[str, Any]:
    """What the later stages depend on instead of the image folder (DVC would hash 2M files):
    per split, the image count and a digest of ``(id, size, mtime)``; for a built benchmark,
    the digest of its ``manifest.json`` (a pure function of its params), so an identical
    rebuild changes nothing downstream."""
    out: dict[str, Any] = {}
    manifest = ds.root / "manifest.json"
    if manifest.is_file():
        out["manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    for split in ds.splits():
        items = ds.images(split)
        if manifest.is_file():
            out[split] = {"images": len(items)}
            continue
        h = hashlib.sha256()
        for image_id, path in items:
            info = path.stat()
            h.update(f"{image_id}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
        out[split] = {"images": len(items), "sha256": h.hexdigest()}
    for split in ("dev_queries", "final_queries", "queries"):
        gt = ds.gt_file(split) if split in ds.splits() else None
        if gt is not None:
            out[f"{split}_ground_truth_sha256"] = hashlib.sha256(gt.read_bytes()).hexdigest()
    return out


def sample_queries(params_file: str | Path, n: int = 4) -> list[dict[str, Any]]:
    """The first ``n`` copy queries of the eval split: query and reference images, edit ops."""
    st = Stage(params_file)
    root = st.path("data")
    ds = Disc21(root, ground_truth=st.dataset.ground_truth)
    paths_q, paths_r = dict(ds.images(st.dataset.eval_split)), dict(ds.images("reference"))
    specs = {}
    manifest = root / "manifest.json"
    if manifest.is_file():
        specs = {q["query_id"]: q["specs"] for q in json.loads(manifest.read_text())["queries"]}
    out = []
    for q, r in ds.ground_truth(st.dataset.eval_split):
        if r is None or q not in paths_q or r not in paths_r:
            continue
        ops = [s["op"] for s in specs.get(q, [])]
        out.append({"query_id": q, "reference_id": r, "query": load_image(paths_q[q]),
                    "reference": load_image(paths_r[r]), "ops": ops})
        if len(out) == n:
            break
    return out
