"""The command line of ``python -m icdlib.evaluate``: evaluate a DISC21-layout folder.

::

    python -m icdlib.evaluate --data ROOT --descriptor CKPT [--matcher CKPT] \
        [--auxiliary AUX_ROOT] [--ground-truth CSV] [--split NAME] --out DIR
    python -m icdlib.evaluate --data ROOT --baseline pdq --out DIR
    python -m icdlib.evaluate --data ROOT --candidates PAIRS.csv --matcher CKPT --out DIR

Steps: embed the query split and the references with the descriptor (resized to the
checkpoint's ``img_size``), search the top ``k`` references per query, optionally
normalise scores with the auxiliary root's training images, optionally rescore the
candidates with the matcher (``DIR/candidates.csv`` keeps the descriptor's pairs), and
write ``DIR/predictions.csv``. With ground truth it also writes ``DIR/metrics.json``,
exactly the object ``python -m icdlib.metrics`` prints for those two files, and
``DIR/eval_config.json`` records the resolved configuration and inputs.

The query split defaults to ``queries`` (single ``query_images/`` layout), else
``dev_queries``, else ``final_queries``. Knobs come from ``params.yaml:eval``
(:class:`icdlib.eval.retrieval.EvalConfig`); the work is :mod:`icdlib.eval.engine`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from icdlib.eval.engine import evaluate_benchmark
from icdlib.eval.hashes import HashUnavailable
from icdlib.eval.retrieval import EvalConfig
from icdlib.params import load_params, section, to_dict


def eval_config(params_path: str | Path | None) -> EvalConfig:
    """The ``eval`` section of a params file (all defaults without one)."""
    if params_path is None:
        return EvalConfig()
    return section(load_params(params_path), "eval", EvalConfig, source=str(params_path))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icdlib.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="DISC21-layout benchmark root")
    ap.add_argument("--descriptor", help="descriptor checkpoint")
    ap.add_argument("--matcher", help="matcher checkpoint (rescores the descriptor's top-k)")
    ap.add_argument("--baseline", choices=["pdq", "phash"], help="hash baseline instead of a descriptor")
    ap.add_argument("--candidates", help="candidate-pair CSV for --matcher, instead of a descriptor")
    ap.add_argument("--auxiliary", help="root whose training_images/ normalise scores")
    ap.add_argument("--ground-truth", help="ground-truth CSV (default: the root's file for the split)")
    ap.add_argument("--split", help="query split: queries, dev_queries or final_queries")
    ap.add_argument("--params", help="params.yaml to read the eval section from (default: built-in defaults)")
    ap.add_argument("--lce", action="store_true", help="Local Crop Ensembling for the matcher")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    try:
        cfg = eval_config(args.params)
        if args.lce:
            cfg = EvalConfig(**{**to_dict(cfg), "lce": True})
        res = evaluate_benchmark(args.data, args.descriptor, args.matcher, args.auxiliary, args.ground_truth,
                                 args.split, args.baseline, cfg, args.out, args.candidates)
    except (ValueError, FileNotFoundError, HashUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {"split": res.split, "n_predictions": len(res.predictions), "out": str(args.out)}
    if res.metrics is not None:
        summary.update({k: v for k, v in res.metrics.to_dict().items() if k in ("uAP", "RP90", "mAP")})
    print(json.dumps(summary, indent=2))
    return 0
