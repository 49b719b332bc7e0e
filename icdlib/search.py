"""``python -m icdlib.search``: find copies of your query images among your reference images.

::

    python -m icdlib.search --queries DIR --references DIR --descriptor CKPT [--matcher CKPT] \\
        [--k 10] [--index FACTORY] [--threshold auto|FLOAT] --out DIR
    python -m icdlib.search --queries DIR2 --reference-index DIR --descriptor CKPT --out DIR3

Folders are searched recursively for every format PIL opens; ids are paths relative to
each folder. ``--out`` receives ``matches.csv`` (``query_id, reference_id, score, rank``),
``features/{queries,references}.{npy,ids.txt}``, the faiss index ``references.faiss``
with ``references.ids.txt`` and ``reference_index.json`` (pass that folder as
``--reference-index`` to search more queries without re-embedding the references),
``search_config.json``, ``copies.csv`` with a threshold, and ``index.html``, a
self-contained page of each query beside its top matches.

``--index`` is a faiss factory string: ``Flat`` (exact; the default, fine below ~1M
references) or e.g. ``IVF4096,PQ32`` for a million references. A trainable index is
trained on the references, so it needs enough of them (``IVFn``: at least n, 39 n
advised; ``PQ``: at least 256); with too few the command stops and says so.
``--threshold auto`` takes the score at 90 % precision that
``python -m icdlib.evaluate ... --calibrate`` stored beside the checkpoint whose scores
are final (``<ckpt>.calibration.json``), and prints where it was measured.
The work is :mod:`icdlib.eval.folder_search` and :mod:`icdlib.eval.gallery`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

from icdlib.eval.cli import eval_config
from icdlib.eval.folder_search import run_search
from icdlib.eval.gallery import write_gallery


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icdlib.search", description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", required=True, help="folder of query images (recursive)")
    ap.add_argument("--references", help="folder of reference images (recursive)")
    ap.add_argument("--reference-index", help="output folder of an earlier search: reuse its references' index")
    ap.add_argument("--descriptor", required=True, help="descriptor checkpoint")
    ap.add_argument("--matcher", help="matcher checkpoint: rescores each query's k candidates")
    ap.add_argument("--k", type=int, help="matches per query (default: eval.k, 10)")
    ap.add_argument("--index", help="faiss factory string, e.g. Flat or IVF4096,PQ32 (default: eval.index)")
    ap.add_argument("--threshold",
                    help="'auto' (the checkpoint's calibration) or a score: pairs at or above are copies")
    ap.add_argument("--params", help="params.yaml to read the eval section from (default: built-in defaults)")
    ap.add_argument("--html-queries", type=int, default=200, help="queries shown in index.html, best first (0: all)")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    try:
        cfg = eval_config(args.params)
        changes = {k: v for k, v in (("k", args.k), ("index", args.index)) if v is not None}
        cfg = dataclasses.replace(cfg, **changes)
        res = run_search(args.queries, args.descriptor, args.out, args.references, args.matcher,
                         args.threshold, args.reference_index, cfg)
        if res.threshold_note:
            print(res.threshold_note, file=sys.stderr)
        page = write_gallery(Path(args.out) / "index.html", res.matches, res.query_paths, res.reference_paths,
                             res.threshold, title=f"icdlib search: {Path(args.queries).resolve().name}",
                             note=res.threshold_note,
                             max_queries=args.html_queries)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: res.info[k] for k in ("n_queries", "n_references", "n_matches", "k", "index", "threshold")}
    if res.threshold is not None:
        summary["n_copies"] = int((res.matches["score"] >= res.threshold).sum())
    summary.update(out=str(args.out), index_html=str(page))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
