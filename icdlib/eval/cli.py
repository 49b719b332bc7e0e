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
``DIR/eval_config.json`` records the resolved configuration and inputs. With
``--calibrate`` it writes ``<checkpoint>.calibration.json`` beside the checkpoint whose
scores are final: the score at 90 % precision on this split, which
``python -m icdlib.search --threshold auto`` reads.

The query split defaults to ``queries`` (single ``query_images/`` layout), else
``dev_queries``, else ``final_queries``. Knobs come from the ``eval`` section
(:class:`icdlib.eval.retrieval.EvalConfig`) of ``--params``, by default of
``./params.yaml`` when there is one (as ``python -m icdlib.train`` reads it), else the
built-in defaults, which equal the repository's params.yaml. The work is
:mod:`icdlib.eval.engine`'s.
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
from icdlib.params import DEFAULT_PARAMS, load_params, section, to_dict


def eval_config(params_path: str | Path | None) -> EvalConfig:
    """The ``eval`` section of a params file (all defaults without one)."""
    if params_path is None:
        return EvalConfig()
    return section(load_params(params_path), "eval", EvalConfig, source=str(params_path))


def default_params() -> Path | None:
    """``./params.yaml`` when the working directory has one, else None (built-in defaults)."""
    return DEFAULT_PARAMS if DEFAULT_PARAMS.is_file() else None


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
    ap.add_argument("--params", help="params file whose eval section sets k, index, batch sizes, workers, device"
                    " and score normalisation (default: ./params.yaml if it exists, else built-in defaults)")
    ap.add_argument("--lce", action="store_true",
                    help="Local Crop Ensembling for the matcher: rescore every candidate with 35 crop pairs")
    ap.add_argument("--lce-views", choices=["full", "light"], default=None,
                    help="LCE view set (default: params eval.lce_views): full, 35 crop pairs per candidate; "
                         "light, 10 (the quadrants and the query's centre third)")
    ap.add_argument("--calibrate", action="store_true",
                    help="write <checkpoint>.calibration.json: the score at 90%% precision on this split "
                         "(for python -m icdlib.search --threshold auto)")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    try:
        params = args.params if args.params is not None else default_params()
        cfg = eval_config(params)
        if args.lce:
            cfg = EvalConfig(**{**to_dict(cfg), "lce": True})
        if args.lce_views:
            cfg = EvalConfig(**{**to_dict(cfg), "lce_views": args.lce_views})
        res = evaluate_benchmark(args.data, args.descriptor, args.matcher, args.auxiliary, args.ground_truth,
                                 args.split, args.baseline, cfg, args.out, args.candidates, args.calibrate)
    except (ValueError, OSError, HashUnavailable) as e:  # OSError: a folder or file the system refuses
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {"split": res.split, "n_predictions": len(res.predictions), "out": str(args.out),
               "params": str(params) if params is not None else "built-in defaults"}
    if res.metrics is not None:
        summary.update({k: v for k, v in res.metrics.to_dict().items() if k in ("uAP", "RP90", "mAP")})
    if "calibration" in res.info:
        summary["calibration"] = res.info["calibration"]
    print(json.dumps(summary, indent=2))
    return 0
