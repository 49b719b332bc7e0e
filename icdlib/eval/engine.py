"""The evaluation engine: one split of a DISC21-layout folder, scored for any model.

:class:`Benchmark` holds the query split, the references, the ground truth and the
auxiliary images of one evaluation, and turns a descriptor, a hash baseline or a matcher
into ``query_id, reference_id, score`` predictions (higher = more likely a copy) and ISC21
metrics. Both ``python -m icdlib.evaluate`` (:func:`evaluate_benchmark`) and the pipeline's
evaluation stages (:mod:`icdlib.pipeline.evaluation`) run on it, so a table row and a
command-line run of the same model agree.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from icdlib.atomic import new_file_mode, write_bytes
from icdlib.checkpoints import load_model
from icdlib.data import IMAGE_SUFFIXES, SPLIT_DIRS, Disc21
from icdlib.eval.calibration import calibrate as make_calibration
from icdlib.eval.calibration import write_calibration
from icdlib.eval.hashes import hash_predictions
from icdlib.eval.metrics import Metrics, PrCurve, evaluate_arrays, read_predictions, write_predictions
from icdlib.eval.pixels import PixelCache
from icdlib.eval.rescore import rescore, rescore_pixels
from icdlib.eval.retrieval import EvalConfig, descriptor_predictions, embed, embed_pixels, save_features
from icdlib.eval.views import query_views
from icdlib.models.precision import bf16_enabled
from icdlib.params import to_dict

SPLIT_PREFERENCE = ("queries", "dev_queries", "final_queries")
EVAL_CONFIG = "eval_config.json"  # marks a folder written by evaluate_benchmark
Items = Sequence[tuple[str, Path]]  # (image id, path)


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


def evenly_spaced(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spaced (all of them when ``n`` is 0 or large enough)."""
    if not n or len(items) <= n:
        return list(items)
    keep = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in keep]


def embedding_key(model: torch.nn.Module, size: int, cfg: EvalConfig, items: Items) -> str:
    """sha256 (hex) naming a model's embeddings of ``items``: its state's names, dtypes, shapes and
    bytes, the input side, ``cfg``'s device, the precision its forwards run in (not the amp flag:
    the same flag gives float32 on one machine and bf16 on another), batch size, each item's id,
    path, size and mtime."""
    bf16 = bool(cfg.amp) and bf16_enabled(cfg.device)
    h = hashlib.sha256(f"{int(size)}|{cfg.device}|bf16={bf16}|{cfg.batch_size}".encode())
    for key, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"|{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for i, p in items:
        st = os.stat(p)
        h.update(f"|{i}|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def load_checkpoint(path: str | Path, kind: str, device: str = "cpu"):
    """``(model, meta)`` of a checkpoint that must hold a ``kind`` model."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{kind} checkpoint not found: {path}")
    model, meta = load_model(path, device=device, what=f"--{kind} checkpoint")
    if meta.get("kind") != kind:
        raise ValueError(f"evaluate: checkpoint {path} holds a {meta.get('kind')!r} model, expected {kind!r}")
    return model, meta


def model_size(cfg: EvalConfig, meta: dict, path) -> int:
    """The input side to evaluate a checkpoint at: ``eval.img_size``, else its own config's."""
    if cfg.img_size:
        return cfg.img_size
    size = meta.get("config", {}).get("img_size")
    if not size:
        raise ValueError(f"evaluate: checkpoint {path} config has no img_size; set eval.img_size")
    return int(size)


class Benchmark:
    """One query split of a DISC21-layout folder, ready to score models on.

    Args:
        data: benchmark root (``reference_images/`` plus a query folder).
        split: query split (default: see :func:`pick_split`).
        cfg: the ``eval`` section.
        ground_truth: optional CSV overriding the root's ground-truth file.
        auxiliary: ``(id, path)`` images for score normalisation (none: no ``sn`` variant).
        on_error: what a missing or corrupt image does (:class:`icdlib.data.Disc21`).
    """

    def __init__(self, data: str | Path, split: str | None = None, cfg: EvalConfig = EvalConfig(),
                 ground_truth: str | Path | None = None, auxiliary: Items = (), on_error: str = "raise"):
        self.ds = Disc21(data, ground_truth=ground_truth, on_error=on_error)
        self.split = pick_split(self.ds.splits(), split)
        self.cfg = cfg
        self.queries = self.ds.images(self.split)
        self.refs = self.ds.images("reference")
        self.aux = list(auxiliary)
        self.feature_cache: Path | None = None  # a folder: embeddings kept per model and image set (cached_embed)
        gt = self.ds.ground_truth(self.split) if self.ds.gt_file(self.split) is not None else None
        self.gt_q = None if gt is None else [q for q, _ in gt]
        self.gt_r = None if gt is None else [r for _, r in gt]
        self.pixels = PixelCache(cfg.pixel_cache_mb, cfg.num_workers, cfg.batch_size)  # image sets decoded once

    @property
    def n_positives(self) -> int:
        """``N_gt``: the ground-truth (query, reference) copy pairs; a query that copies two
        references counts twice (0 without ground truth)."""
        return 0 if self.gt_r is None else int(sum(r is not None for r in self.gt_r))

    def score(self, preds: pd.DataFrame) -> tuple[Metrics | None, PrCurve | None]:
        """ISC21 metrics and PR curve of ``preds``; ``(None, None)`` without ground truth."""
        if self.gt_q is None:
            return None, None
        return evaluate_arrays(preds["query_id"].to_numpy(), preds["reference_id"].to_numpy(),
                               preds["score"].to_numpy(), self.gt_q, self.gt_r)

    def embed(self, model: torch.nn.Module, size: int, items: Items, desc: str, views=None) -> np.ndarray:
        c = self.cfg
        pixels = None if views else self.pixels.get([p for _, p in items], size, f"decoding {desc.split(': ')[-1]}")
        if pixels is not None:
            return embed_pixels(model, pixels, c.batch_size, c.device, desc, c.amp)
        return embed(model, [p for _, p in items], size=size, batch_size=c.batch_size, num_workers=c.num_workers,
                     device=c.device, desc=desc, views=views, amp=c.amp)

    def descriptor(self, model: torch.nn.Module, size: int, name: str = "descriptor",
                   features: dict | None = None) -> dict[str, pd.DataFrame]:
        """Top-``k`` predictions of a descriptor: ``plain``, and ``sn`` (score-normalised)
        when there are enough auxiliary images. ``features``, if given, receives the
        ``queries``/``references`` arrays."""
        c = self.cfg
        rf = self.cached_embed(model, size, self.refs, f"{name}: references")
        qf = (self.embed(model, size, self.queries, f"{name}: {self.split}", views=query_views) if c.lce_descriptor
              else self.cached_embed(model, size, self.queries, f"{name}: {self.split}"))
        if features is not None:
            features.update(queries=qf, references=rf)
        q_ids, r_ids = [i for i, _ in self.queries], [i for i, _ in self.refs]
        out = {"plain": descriptor_predictions(q_ids, qf, r_ids, rf, c)}
        if len(self.aux) >= c.norm_end:
            af = self.auxiliary_features(model, size, name)
            out["sn"] = descriptor_predictions(q_ids, qf, r_ids, rf, c, af)
        return out

    def auxiliary_features(self, model: torch.nn.Module, size: int, name: str = "descriptor") -> np.ndarray:
        """The auxiliary images' embeddings by ``model`` (:meth:`cached_embed`)."""
        return self.cached_embed(model, size, self.aux, f"{name}: auxiliary")

    def cached_embed(self, model: torch.nn.Module, size: int, items: Items, desc: str) -> np.ndarray:
        """:meth:`embed` of ``items``. With ``feature_cache`` set, the embeddings are kept there under a
        key of everything they depend on (:func:`embedding_key`: the weights' bytes, the input side,
        the eval settings that touch the forward pass, each image's id, path, size and modification
        time), so another evaluation of the same model on the same images (stage ablations reading
        the main runs after evaluate; the auxiliary set again in stage real_photos) reads them
        instead of embedding thousands of images again."""
        if self.feature_cache is None:
            return self.embed(model, size, items, desc)
        file = Path(self.feature_cache) / f"{embedding_key(model, size, self.cfg, items)}.npy"
        if file.is_file():
            try:
                return np.load(file, allow_pickle=False)
            except (OSError, ValueError):  # a damaged cache file is embedded again
                pass
        features = self.embed(model, size, items, desc)
        buf = io.BytesIO()
        np.save(buf, features, allow_pickle=False)
        write_bytes(file, buf.getvalue())
        return features

    def hashes(self, method: str) -> pd.DataFrame:
        """Top-``k`` predictions of a perceptual hash (``pdq`` or ``phash``)."""
        return hash_predictions(self.queries, self.refs, method, self.cfg.k, self.cfg.num_workers)

    def matcher(self, model: torch.nn.Module, size: int, candidates: pd.DataFrame,
                lce_candidates: int = 0) -> dict[str, pd.DataFrame]:
        """Matcher scores of ``candidates``: ``plain``, and ``lce`` when ``lce_candidates``
        is not 0: Local Crop Ensembling of each query's top-n candidates (-1: all of them),
        the others keeping their plain score."""
        c = self.cfg
        qp, rp = dict(self.queries), dict(self.refs)
        qx = self.pixels.get([p for _, p in self.queries], size, f"decoding {self.split}")
        rx = self.pixels.get([p for _, p in self.refs], size, "decoding references") if qx is not None else None
        if rx is not None:
            q_rows = {i: n for n, (i, _) in enumerate(self.queries)}
            r_rows = {i: n for n, (i, _) in enumerate(self.refs)}
            plain = rescore_pixels(model, candidates, q_rows, qx, r_rows, rx, c.matcher_batch_size, c.device,
                                   amp=c.amp)
        else:
            plain = rescore(model, candidates, qp, rp, size, c.matcher_batch_size, c.num_workers, c.device, amp=c.amp)
        out = {"plain": plain}
        if lce_candidates:
            top = candidates
            if lce_candidates > 0:
                ranked = candidates.sort_values(["query_id", "score"], ascending=[True, False], kind="stable")
                top = ranked.groupby("query_id", sort=False).head(lce_candidates)
            lce = rescore(model, top, qp, rp, size, c.matcher_batch_size, c.num_workers, c.device, lce=True,
                          amp=c.amp, lce_views=c.lce_views)
            merged = plain.merge(lce, on=["query_id", "reference_id"], how="left", suffixes=("", "_lce"))
            merged["score"] = merged["score_lce"].fillna(merged["score"])
            out["lce"] = merged[["query_id", "reference_id", "score"]]
        return out


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
    calibrate: bool = False,
) -> EvalResult:
    """Evaluate a descriptor (+ matcher) or a hash baseline on a DISC21-layout folder.

    Args:
        data: benchmark root (``reference_images/`` plus a query folder).
        descriptor: descriptor checkpoint (:func:`icdlib.checkpoints.save_checkpoint` format).
        matcher: optional matcher checkpoint; rescores the descriptor's candidates (all of
            them with Local Crop Ensembling when ``cfg.lce``).
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
        calibrate: also write ``<checkpoint>.calibration.json`` beside the checkpoint whose
            scores are final (the matcher if given, else the descriptor): the score at
            90 % pooled precision on this split (:mod:`icdlib.eval.calibration`).

    Returns:
        :class:`EvalResult`; metrics are None when the split has no ground truth.
    """
    if sum(x is not None for x in (descriptor, baseline, candidates)) != 1:
        raise ValueError("evaluate: give exactly one of descriptor, baseline or candidates")
    if candidates is not None and matcher is None:
        raise ValueError("evaluate: candidates are rescored by a matcher; give a matcher")
    if baseline is not None and matcher is not None:
        raise ValueError("evaluate: a matcher rescores descriptor or file candidates, not a hash baseline")
    if auxiliary is not None and descriptor is None:
        raise ValueError("evaluate: auxiliary normalisation needs descriptor features; give a descriptor")
    if calibrate and matcher is None and descriptor is None:
        raise ValueError("evaluate: calibration applies to a checkpoint's scores; give a descriptor or matcher")
    aux = auxiliary_images(auxiliary) if auxiliary is not None else ()
    bench = Benchmark(data, split, cfg, ground_truth, aux)
    if out is None:
        return _evaluate(bench, data, descriptor, matcher, auxiliary, ground_truth, baseline, cfg, None,
                         candidates, aux, calibrate)
    final = Path(out)
    if final.exists() and not (final.is_dir() and (not any(final.iterdir()) or (final / EVAL_CONFIG).is_file())):
        raise ValueError(f"evaluate: --out {final} exists and is not an evaluation output folder (no "
                         f"{EVAL_CONFIG}); give a new or empty folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        result = _evaluate(bench, data, descriptor, matcher, auxiliary, ground_truth, baseline, cfg, work,
                           candidates, aux, calibrate)
        os.chmod(work, new_file_mode(folder=True))  # mkdtemp makes 0700 folders
        old = final.with_name(f".{final.name}.old")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(work, final)  # --out holds this run only, whole
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return result


def _evaluate(bench, data, descriptor, matcher, auxiliary, ground_truth, baseline, cfg, out, candidates,
              aux, calibrate=False) -> EvalResult:
    """The body of :func:`evaluate_benchmark`; writes into ``out`` (a fresh folder) if given."""
    split = bench.split
    info = {"data": str(data), "split": split, "descriptor": str(descriptor) if descriptor else None,
            "matcher": str(matcher) if matcher else None, "auxiliary": str(auxiliary) if auxiliary else None,
            "ground_truth": str(ground_truth) if ground_truth else None, "baseline": baseline,
            "candidates": str(candidates) if candidates else None,
            "eval": to_dict(cfg), "n_queries": len(bench.queries), "n_references": len(bench.refs)}

    if baseline is not None:
        preds = bench.hashes(baseline)
    elif candidates is not None:
        preds = read_predictions(candidates)
    else:
        model, meta = load_checkpoint(descriptor, "descriptor", cfg.device)
        size = model_size(cfg, meta, descriptor)
        feats: dict = {}
        variants = bench.descriptor(model, size, "descriptor", feats)
        if auxiliary is not None:
            if "sn" not in variants:
                raise ValueError(f"evaluate: score normalisation needs at least eval.norm_end={cfg.norm_end} "
                                 f"auxiliary images, {auxiliary} has {len(aux)}")
            info["n_auxiliary"] = len(aux)
        preds = variants["sn" if auxiliary is not None else "plain"]
        if out is not None:
            save_features(out / "features" / "reference", [i for i, _ in bench.refs], feats["references"])
            save_features(out / "features" / split, [i for i, _ in bench.queries], feats["queries"])
        info["descriptor_img_size"] = size
    if matcher is not None:
        if out is not None:
            write_predictions(out / "candidates.csv", preds["query_id"], preds["reference_id"], preds["score"])
        mmodel, mmeta = load_checkpoint(matcher, "matcher", cfg.device)
        msize = model_size(cfg, mmeta, matcher)
        scored = bench.matcher(mmodel, msize, preds, lce_candidates=-1 if cfg.lce else 0)
        preds = scored["lce" if cfg.lce else "plain"]
        info["matcher_img_size"] = msize

    preds = preds.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    metrics, curve = bench.score(preds)
    if calibrate:
        if curve is None:
            raise ValueError(f"evaluate: split {split!r} of {data} has no ground truth to calibrate on")
        if matcher is not None:
            ckpt, kind = matcher, "matcher probability, LCE" if cfg.lce else "matcher probability"
        else:
            ckpt, kind = descriptor, "descriptor cosine, score-normalised" if auxiliary else "descriptor cosine"
        info["calibration"] = str(write_calibration(make_calibration(curve, ckpt, kind, info, bench.n_positives)))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(out / "predictions.csv", preds["query_id"], preds["reference_id"], preds["score"])
        if metrics is not None:
            (out / "metrics.json").write_text(json.dumps(metrics.to_dict(), indent=2) + "\n")
        (out / EVAL_CONFIG).write_text(json.dumps(info, indent=2) + "\n")
    return EvalResult(preds, metrics, curve, split, info)
