"""The evaluation stage: every model and baseline of the descriptor and matcher tables.

It runs on the same engine as ``python -m icdlib.evaluate``
(:class:`icdlib.eval.engine.Benchmark`), adding what a table row needs: predictions
written under ``paths.features``, metrics, a subsampled PR curve, seed and config tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from icdlib.data import Disc21
from icdlib.eval.engine import Benchmark, evenly_spaced, load_checkpoint
from icdlib.eval.hashes import PACKAGES, missing_reason
from icdlib.eval.metrics import write_predictions
from icdlib.eval.retrieval import EvalConfig
from icdlib.models import DescriptorConfig, build_descriptor
from icdlib.params import section
from icdlib.pipeline.curves import matcher_curve, overtaking_budget
from icdlib.pipeline.results import evaluated
from icdlib.pipeline.stage import MATCHER_ROWS, Stage, write_csv, write_json
from icdlib.pipeline.arms import TRUNK, checkpoint_name, seed_checkpoint

DESCRIPTOR_ROWS = {"infonce": "InfoNCE descriptor", "copynce": "CopyNCE descriptor"}  # arm -> row, table order
START_ROW = "start descriptor (no fine-tuning)"  # models/trunk.pt as it is: what every arm fine-tunes from


class Evaluator:
    """Evaluates many models on one benchmark split and records each prediction set.

    A thin layer over :class:`icdlib.eval.engine.Benchmark`: the engine scores, this
    writes ``paths.features/<predictions>/<name>.csv`` and returns the result entries
    (metrics, PR curve, predictions path) that ``reports/eval/results.json`` holds.
    """

    def __init__(self, params_file: str | Path, predictions: str = "predictions", normalise: bool = True,
                 root: str | Path | None = None):
        self.st = Stage(params_file)
        self.predictions = predictions  # folder under paths.features for this stage's prediction CSVs
        cfg = section(self.st.params, "eval", EvalConfig, self.st.params_path.name)
        data = self.st.path("data")
        own = root is None  # the pipeline's benchmark (paths.data), or another one (root) scored the same way
        root = data if own else Path(root)
        split, on_error = self.st.dataset.eval_split, self.st.dataset.on_error
        gt = self.st.dataset.ground_truth if own else None
        bench = Benchmark(root, None, cfg, gt, on_error=on_error)
        if split not in bench.ds.splits() and own:
            raise ValueError(f"dataset.eval_split: {split!r} not in {root} (splits: {bench.ds.splits()})")
        if split in bench.ds.splits() and bench.split != split:  # another root without it: its preferred split
            bench = Benchmark(root, split, cfg, gt, on_error=on_error)
        if bench.gt_q is None:
            raise ValueError(f"evaluation: query split {bench.split!r} in {root} has no ground truth to score against")
        # score normalisation against the pipeline's training images (whichever root is scored): an
        # evenly spaced subset keeps the normaliser cheap
        aux = (bench.ds if own else Disc21(data, on_error=on_error)) if normalise else None
        if aux is not None and "training" in aux.splits():
            bench.aux = evenly_spaced(aux.images("training"), self.st.report.aux_images)
        bench.feature_cache = self.st.path("features", "embeddings")  # shared by the stages that score a model
        self.bench = bench

    def record(self, preds: pd.DataFrame, name: str) -> dict[str, Any]:
        """Score ``preds``, write them to ``paths.features/<predictions>/<name>.csv``; the result entry."""
        metrics, curve = self.bench.score(preds)
        path = self.st.path("features", self.predictions, f"{name}.csv")
        write_predictions(path, preds["query_id"], preds["reference_id"], preds["score"])
        return {"metrics": metrics.to_dict(), "curve": _curve(curve), "predictions": self.st.relative(path)}

    def descriptor(self, model: torch.nn.Module, size: int, name: str) -> dict[str, Any]:
        """Metrics of a descriptor without and with score normalisation; writes predictions."""
        return {v: self.record(p, f"{name}_{v}") for v, p in self.bench.descriptor(model, size, name).items()}

    def descriptor_plain(self, model: torch.nn.Module, size: int, name: str) -> float:
        """uAP of a descriptor's plain top-k predictions (nothing written): a learning-curve point."""
        metrics, _ = self.bench.score(self.bench.descriptor(model, size, name)["plain"])
        return float(metrics.uAP)

    def hashes(self, method: str) -> dict[str, Any]:
        return {"plain": self.record(self.bench.hashes(method), method)}

    def matcher(self, model: torch.nn.Module, size: int, candidates: pd.DataFrame, name: str,
                lce: bool = True) -> dict[str, Any]:
        """Matcher rescoring of ``candidates``: plain, and (``lce``) LCE on each query's top-n candidates."""
        n = self.st.report.lce_candidates if lce else 0
        out = {v: self.record(p, f"{name}_{v}") for v, p in self.bench.matcher(model, size, candidates, n).items()}
        if "lce" in out:
            out["lce"]["lce_candidates"] = n
        return out


def _curve(curve, points: int = 200) -> dict[str, list[float]]:
    c = curve.subsample(points)
    return {"recall": [float(x) for x in c.recall], "precision": [float(x) for x in c.precision]}


def seed_of(meta: dict, default: int) -> int:
    """The training seed a checkpoint's meta records (``default`` when it has none)."""
    run = meta.get("run") or meta.get("train") or {}
    if isinstance(run, dict):
        t = run.get("train", run)
        if isinstance(t, dict) and "seed" in t:
            return int(t["seed"])
    return int(meta.get("seed", default))


def _load(path: Path, kind: str):
    if not path.is_file():
        raise FileNotFoundError(f"{kind} checkpoint not found: {path} (run its training stage first)")
    return load_checkpoint(path, kind)


TAG_KEYS = ["data", "edits", "eval", "report"]  # the params every row's config tag hashes


def hash_rows(ev: Evaluator, tag_keys: list[str] = TAG_KEYS) -> dict[str, Any]:
    """PDQ and pHash rows; a hash whose package is missing keeps its row, saying why (``missing``)."""
    rows = {}
    for method in ("pdq", "phash"):
        label, why = PACKAGES[method][0], missing_reason(method)
        rows[label] = {"table": "descriptor", "seed": ev.st.seed, "config": ev.st.tag(tag_keys, baseline=method),
                       **({"missing": why} if why else ev.hashes(method))}
        if why:
            print(f"evaluation: no {label} row: {why}")
    return rows


def start_row(ev: Evaluator, size: int, tag_keys: list[str] = TAG_KEYS) -> dict[str, Any]:
    """The shared start (stage train_trunk's ``models/trunk.pt``) scored as it is: the row every
    fine-tuned descriptor must clear for its fine-tuning to have added anything. One model, so
    the orderings compare it with every seed of the other side (``seedless``), as a hash."""
    st = ev.st
    path = st.path("models", checkpoint_name(TRUNK))
    model, meta = _load(path, "descriptor")
    return {"table": "descriptor", "seed": seed_of(meta, st.seed), "seedless": True, "checkpoint": st.relative(path),
            "config": st.tag(tag_keys + ["descriptor", "paths.trunk", "paths.trunk_start"], model="start"),
            **ev.descriptor(model, int(meta["config"].get("img_size", size)), "start")}


def descriptor_rows(ev: Evaluator, tag_keys: list[str] = TAG_KEYS) -> dict[str, Any]:
    """The InfoNCE and CopyNCE descriptor rows: every seed of ``main.seeds`` under ``runs``,
    the row's own entries being the first seed's."""
    st, rows = ev.st, {}
    for arm, label in DESCRIPTOR_ROWS.items():
        runs = []
        for seed in st.main.seeds:
            path = seed_checkpoint(st, arm, seed)
            model, meta = _load(path, "descriptor")
            name = arm if seed == st.main.seeds[0] else f"{arm}_s{seed}"
            runs.append({"seed": seed_of(meta, seed), "checkpoint": st.relative(path),
                         **ev.descriptor(model, int(meta["config"]["img_size"]), name)})
        rows[label] = {"table": "descriptor", "seed": runs[0]["seed"],
                       "config": st.tag(tag_keys + ["descriptor", "train", "pairs", f"arms.{arm}", "main"], arm=arm),
                       **runs[0], "runs": runs}
    return rows


def matcher_rows(ev: Evaluator, candidates: pd.DataFrame, tag_keys: list[str] = TAG_KEYS) -> dict[str, Any]:
    """Both matcher rows, rescoring ``candidates`` (plain; LCE for the arms of ``report.lce_arms``)."""
    st, rows = ev.st, {}
    for arm, label in MATCHER_ROWS.items():
        path = st.path("models", checkpoint_name(arm))
        model, meta = _load(path, "matcher")
        rows[label] = {"table": "matcher", "seed": seed_of(meta, st.seed),
                       "config": st.tag(tag_keys + ["matcher", "train", "pairs", f"arms.{arm}"], arm=arm),
                       "checkpoint": st.relative(path),
                       **ev.matcher(model, int(meta["config"]["img_size"]), candidates, arm, arm in st.report.lce_arms)}
    return rows


def candidates_of(ev: Evaluator, rows: dict[str, Any]) -> pd.DataFrame:
    """The matchers' candidates: the CopyNCE descriptor's plain top-k predictions (first seed)."""
    return pd.read_csv(ev.st.absolute(rows["CopyNCE descriptor"]["plain"]["predictions"]),
                       dtype={"query_id": str, "reference_id": str})


def evaluate_suite(params_file: str | Path) -> dict[str, Any]:
    """Every model and baseline of the descriptor and matcher tables on ``dataset.eval_split``.

    Writes ``paths.reports/eval/results.json`` and PR curves ``reports/plots/pr_<row>.csv``.
    """
    ev = Evaluator(params_file)
    st = ev.st
    rows: dict[str, Any] = hash_rows(ev)
    dcfg = section(st.params, "descriptor", DescriptorConfig, st.params_path.name)
    rnd = build_descriptor(dcfg, seed=st.report.random_init_seed)
    size = rnd.config.img_size
    rows["random-init descriptor"] = {
        "table": "descriptor", "seed": st.report.random_init_seed,
        "config": st.tag(TAG_KEYS + ["descriptor"], model="random_init"),
        **ev.descriptor(rnd, size, "random_init")}
    rows[START_ROW] = start_row(ev, size)
    rows.update(descriptor_rows(ev))
    candidates = candidates_of(ev, rows)
    rows.update(matcher_rows(ev, candidates))
    finals = {arm: rows[label]["plain"]["metrics"]["uAP"]  # the final points, evaluated just above
              for arm, label in MATCHER_ROWS.items()}
    curve = write_matcher_curve(ev, candidates, rows["CopyNCE descriptor"]["plain"]["metrics"]["uAP"], finals)
    result = {**summary(ev), "rows": rows, "matcher_curve": curve}
    out = st.path("reports", "eval")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    write_json(out / "metrics.json", metrics_of(rows))
    write_pr_curves(rows, st.path("reports", "plots"))
    return result


def summary(ev: Evaluator) -> dict[str, Any]:
    """What a results file says of the benchmark scored: split, counts, ground truth, seed, profile."""
    st, bench = ev.st, ev.bench
    return {"split": bench.split, "n_queries": len(bench.queries), "n_references": len(bench.refs),
            "n_positives": bench.n_positives, "n_auxiliary": len(bench.aux),
            "ground_truth": st.relative(bench.ds.gt_file(bench.split)), "seed": st.seed, "profile": st.profile}


def metrics_of(rows: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json``: ``{"<row>/<variant>": metrics}`` of every evaluated row."""
    return {f"{label}/{variant}": e["metrics"] for label, _, variant, e in evaluated(rows)}


def write_matcher_curve(ev: Evaluator, candidates: pd.DataFrame, descriptor_uap: float,
                        finals: dict[str, float]) -> dict[str, Any]:
    """``reports/matcher/curve.csv``: both matcher arms' uAP at each kept budget
    (:func:`icdlib.pipeline.curves.matcher_curve`); returns where it is and, per arm, the
    training pairs at which the trend would reach the descriptor (None: no crossing in sight)."""
    curve = matcher_curve(ev, candidates, descriptor_uap, finals)
    d = ev.st.path("reports", "matcher")
    d.mkdir(parents=True, exist_ok=True)
    write_csv(d / "curve.csv", curve)
    return {"path": ev.st.relative(d / "curve.csv"), "descriptor_uAP": float(descriptor_uap),
            "overtaking_pairs": {arm: overtaking_budget(curve, arm) for arm in sorted(set(curve["arm"]))}}


def write_pr_curves(rows: dict[str, Any], out_dir: Path) -> list[Path]:
    """One ``pr_<row>_<variant>.csv`` (recall, precision) per evaluated row, for ``dvc plots``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for label, _, variant, entry in evaluated(rows):
        slug = "".join(ch if ch.isalnum() else "_" for ch in label.lower()).strip("_")
        p = out_dir / f"pr_{slug}_{variant}.csv"
        pd.DataFrame(entry["curve"]).to_csv(p, index=False, float_format="%.5f")
        written.append(p)
    return written
