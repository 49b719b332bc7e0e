"""End-to-end copy-detection evaluation of a DISC21-layout folder.

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
(:class:`icdlib.retrieval.EvalConfig`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from icdlib.metrics import Metrics, PrCurve, evaluate_arrays, read_predictions, write_predictions
from icdlib.params import load_params, section, to_dict
from icdlib.retrieval import (
    EvalConfig,
    descriptor_predictions,
    embed,
    query_views,
    rescore,
    save_features,
)

SPLIT_PREFERENCE = ("queries", "dev_queries", "final_queries")


@dataclass
class EvalResult:
    """What one evaluation produced.

    Attributes:
        predictions: DataFrame ``query_id, reference_id, score`` (higher = more likely a copy).
        metrics: ISC21 metrics, or None without ground truth.
        curve: pooled PR curve, or None without ground truth.
        split: the query split evaluated.
        info: resolved config and inputs (what ``eval_config.json`` holds).
    """

    predictions: pd.DataFrame
    metrics: Metrics | None
    curve: PrCurve | None
    split: str
    info: dict


def pick_split(available: Sequence[str], split: str | None) -> str:
    """The query split to evaluate: ``split`` if given and present, else the preferred one."""
    queries = [s for s in SPLIT_PREFERENCE if s in available]
    if split is not None:
        if split not in queries:
            raise ValueError(f"evaluate: split {split!r} not available; query splits present: {queries}")
        return split
    if not queries:
        raise ValueError(f"evaluate: no query split among {list(available)}")
    return queries[0]


def auxiliary_images(root: str | Path) -> list[tuple[str, Path]]:
    """``[(id, path)]`` of ``ROOT/training_images/`` (or of ROOT itself if it holds the images)."""
    from icdlib.disc21 import IMAGE_SUFFIXES, SPLIT_DIRS

    root = Path(root)
    folder = root / SPLIT_DIRS["training"]
    if not folder.is_dir():
        folder = root
    if not folder.is_dir():
        raise FileNotFoundError(f"evaluate: auxiliary folder not found: {root}")
    items = sorted((p.stem, p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not items:
        raise ValueError(f"evaluate: no auxiliary images in {folder}")
    return items


def _load(path, kind: str, device: str):
    from icdlib.models import load_model

    model, meta = load_model(path, device=device)
    if meta.get("kind") != kind:
        raise ValueError(f"evaluate: checkpoint {path} holds a {meta.get('kind')!r} model, expected {kind!r}")
    return model, meta


def _size(cfg: EvalConfig, meta: dict, path) -> int:
    if cfg.img_size:
        return cfg.img_size
    size = meta.get("config", {}).get("img_size")
    if not size:
        raise ValueError(f"evaluate: checkpoint {path} config has no img_size; set eval.img_size")
    return int(size)


def evaluate_benchmark(
    data: str | Path,
    descriptor: str | Path | None = None,
    matcher: str | Path | None = None,
    auxiliary: str | Path | None = None,
    ground_truth: str | Path | None = None,
    split: str | None = None,
    baseline: str | None = None,
    cfg: EvalConfig = EvalConfig(),
    out: str | Path | None = None,
    candidates: str | Path | None = None,
) -> EvalResult:
    """Evaluate a descriptor (+ matcher) or a hash baseline on a DISC21-layout folder.

    Args:
        data: benchmark root (``reference_images/`` plus a query folder).
        descriptor: descriptor checkpoint (``icdlib.models.save_checkpoint`` format).
        matcher: optional matcher checkpoint; rescores the descriptor's candidates.
        auxiliary: optional root whose ``training_images/`` (or its own images) normalise
            the scores.
        ground_truth: optional CSV overriding the root's ground-truth file.
        split: query split (default: see :func:`pick_split`).
        baseline: ``"pdq"`` or ``"phash"`` instead of a descriptor.
        cfg: the ``eval`` section.
        out: if given, write ``predictions.csv``, ``metrics.json``, ``eval_config.json``
            (and ``candidates.csv``, ``features/``) there.
        candidates: a candidate-pair CSV (predictions format) for the matcher to rescore
            instead of running a descriptor.

    Returns:
        :class:`EvalResult`; metrics are None when the split has no ground truth.
    """
    from icdlib.data import Disc21

    if sum(x is not None for x in (descriptor, baseline, candidates)) != 1:
        raise ValueError("evaluate: give exactly one of descriptor, baseline or candidates")
    if candidates is not None and matcher is None:
        raise ValueError("evaluate: candidates are rescored by a matcher; give a matcher")
    if baseline is not None and matcher is not None:
        raise ValueError("evaluate: a matcher rescores descriptor or file candidates, not a hash baseline")
    if auxiliary is not None and descriptor is None:
        raise ValueError("evaluate: auxiliary normalisation needs descriptor features; give a descriptor")
    ds = Disc21(data, ground_truth=ground_truth)
    split = pick_split(ds.splits(), split)
    queries, refs = ds.images(split), ds.images("reference")
    q_ids, r_ids = [i for i, _ in queries], [i for i, _ in refs]
    out = Path(out) if out is not None else None
    info = {"data": str(data), "split": split, "descriptor": str(descriptor) if descriptor else None,
            "matcher": str(matcher) if matcher else None, "auxiliary": str(auxiliary) if auxiliary else None,
            "ground_truth": str(ground_truth) if ground_truth else None, "baseline": baseline,
            "candidates": str(candidates) if candidates else None,
            "eval": to_dict(cfg), "n_queries": len(queries), "n_references": len(refs)}

    if baseline is not None:
        from icdlib.hashes import hash_predictions

        preds = hash_predictions(queries, refs, baseline, cfg.k, cfg.num_workers)
    elif candidates is not None:
        preds = read_predictions(candidates)
    else:
        aux = auxiliary_images(auxiliary) if auxiliary is not None else None
        model, meta = _load(descriptor, "descriptor", cfg.device)
        size = _size(cfg, meta, descriptor)
        common = dict(size=size, batch_size=cfg.batch_size, num_workers=cfg.num_workers, device=cfg.device)
        rf = embed(model, [p for _, p in refs], desc="embedding references", **common)
        qf = embed(model, [p for _, p in queries], desc=f"embedding {split}",
                   views=query_views if cfg.lce_descriptor else None, **common)
        af = None
        if auxiliary is not None:
            af = embed(model, [p for _, p in aux], desc="embedding auxiliary", **common)
            info["n_auxiliary"] = len(aux)
        if out is not None:
            save_features(out / "features" / "reference", r_ids, rf)
            save_features(out / "features" / split, q_ids, qf)
        preds = descriptor_predictions(q_ids, qf, r_ids, rf, cfg, af)
        info["descriptor_img_size"] = size
    if matcher is not None:
        if out is not None:
            write_predictions(out / "candidates.csv", preds["query_id"], preds["reference_id"], preds["score"])
        mmodel, mmeta = _load(matcher, "matcher", cfg.device)
        msize = _size(cfg, mmeta, matcher)
        preds = rescore(mmodel, preds, dict(queries), dict(refs), msize, cfg.matcher_batch_size,
                        cfg.num_workers, cfg.device, lce=cfg.lce)
        info["matcher_img_size"] = msize

    preds = preds.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    metrics = curve = None
    if ds.gt_file(split) is not None:
        gt = ds.ground_truth(split)
        metrics, curve = evaluate_arrays(
            preds["query_id"].to_numpy(), preds["reference_id"].to_numpy(), preds["score"].to_numpy(),
            [q for q, _ in gt], [r for _, r in gt],
        )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(out / "predictions.csv", preds["query_id"], preds["reference_id"], preds["score"])
        if metrics is not None:
            (out / "metrics.json").write_text(json.dumps(metrics.to_dict(), indent=2) + "\n")
        else:  # no ground truth: never leave an earlier run's metrics beside new predictions
            (out / "metrics.json").unlink(missing_ok=True)
        (out / "eval_config.json").write_text(json.dumps(info, indent=2) + "\n")
    return EvalResult(preds, metrics, curve, split, info)


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
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {"split": res.split, "n_predictions": len(res.predictions), "out": str(args.out)}
    if res.metrics is not None:
        summary.update({k: v for k, v in res.metrics.to_dict().items() if k in ("uAP", "RP90", "mAP")})
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
