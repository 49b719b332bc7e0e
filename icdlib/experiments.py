"""The paper's experiments as pipeline stages: data, training arms, evaluation, ablations.

Each public function is one DVC stage's work, called by its notebook with the path of
the params file; everything it writes goes under the ``paths`` of that file, and every
result record carries the seed and a config tag so a table row says what made it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from icdlib.params import load_params, resolve, section, to_dict
from icdlib.report import config_tag


@dataclass(frozen=True)
class DatasetConfig:
    """params.yaml ``dataset``: which data the pipeline reads."""

    build: bool = True  # build the embedded benchmark; false: validate a DISC21 copy at paths.data
    eval_split: str = "dev_queries"  # query split every table is computed on
    ground_truth: str | None = None  # explicit ground truth for eval_split (None: by DISC21 name)
    on_error: str = "raise"  # raise | skip: what a missing or corrupt image does


@dataclass(frozen=True)
class PathsConfig:
    """params.yaml ``paths`` (relative to the params file)."""

    data: str = "data/mini_disc"
    models: str = "models"
    runs: str = "runs"
    features: str = "features"
    reports: str = "reports"
    backbone: str | None = None  # DINO-format ViT weights for every trunk; None = random init
    matcher_backbone: str | None = None  # the matcher trunk's start instead (e.g. a trained descriptor)


@dataclass(frozen=True)
class LaunchConfig:
    """params.yaml ``launch``: how training runs are started."""

    nproc_per_node: int = 1  # > 1: each arm runs under torchrun with this many processes (GPUs)
    nnodes: int = 1  # multi-node: also set rdzv_endpoint
    rdzv_endpoint: str | None = None  # host:port of node 0 for multi-node runs

    def __post_init__(self):
        if int(self.nproc_per_node) < 1 or int(self.nnodes) < 1:
            raise ValueError(f"launch: nproc_per_node and nnodes must be >= 1, got {self.nproc_per_node}, {self.nnodes}")


@dataclass(frozen=True)
class AblationConfig:
    """params.yaml ``ablation``: short paired runs over several seeds."""

    arms: tuple[str, ...] = ("infonce", "copynce", "copynce_gamma1", "copynce_lam1", "copynce_c2c", "copynce_uniform")
    seeds: tuple[int, ...] = (0, 1, 2)  # at least 3 seeds to show the spread
    steps: int = 150  # every arm of a seed shares the data order and the step count

    def __post_init__(self):
        if int(self.steps) < 1:
            raise ValueError(f"ablation.steps must be >= 1, got {self.steps}")
        if not self.arms or not self.seeds:
            raise ValueError("ablation: arms and seeds must be non-empty")


@dataclass(frozen=True)
class ReportConfig:
    """params.yaml ``report``: evaluation choices of the tables."""

    lce_candidates: int = 1  # LCE rescoring covers each query's top-n candidates (35 passes per pair)
    aux_images: int = 5000  # auxiliary (training) images for score normalisation; 0 = all
    random_init_seed: int = 0  # seed of the random-init descriptor row


class Stage:
    """A params file, resolved: configs of the pipeline's own sections and its paths."""

    def __init__(self, params_file: str | Path):
        self.params_path = Path(params_file).resolve()
        self.params = load_params(self.params_path)
        src = str(self.params_path.name)
        self.seed = int(self.params.get("seed", 0))
        self.profile = str(self.params.get("profile", "default"))
        self.paths = section(self.params, "paths", PathsConfig, src)
        self.dataset = section(self.params, "dataset", DatasetConfig, src)
        self.ablation = section(self.params, "ablation", AblationConfig, src)
        self.report = section(self.params, "report", ReportConfig, src)
        self.launch = section(self.params, "launch", LaunchConfig, src)

    def path(self, name: str, *parts: str) -> Path:
        """A path under ``paths.<name>``, resolved against the params file's folder."""
        return resolve(self.params_path, getattr(self.paths, name)).joinpath(*parts)

    def tag(self, keys: Sequence[str], **extra: Any) -> str:
        return config_tag(self.params, keys, profile=self.profile, **extra)


# --------------------------------------------------------------------------- data
def prepare_data(params_file: str | Path, progress: bool = True) -> dict[str, Any]:
    """Build the embedded benchmark (``dataset.build``) or validate a DISC21 copy.

    Returns the reader's counts per split (plus the manifest summary when built).
    """
    from icdlib import data as D

    st = Stage(params_file)
    root = st.path("data")
    if st.dataset.build:
        cfg = D.data_config(st.params, st.params_path.name)
        edit_cfg = D.edit_config(st.params, st.params_path.name)
        D.build_benchmark(root, cfg, seed=st.seed, edit_config=edit_cfg, progress=progress)
    elif not root.is_dir():
        raise FileNotFoundError(f"paths.data: DISC21 folder not found: {root} (set dataset.build: true to build one)")
    ds = D.Disc21(root, ground_truth=st.dataset.ground_truth, on_error=st.dataset.on_error)
    counts = ds.validate(decode=True)
    summary = {"root": str(root), "counts": counts, "seed": st.seed, "profile": st.profile,
               "built": st.dataset.build, "config": st.tag(["data", "edits", "dataset"])}
    out = st.path("reports", "data")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "summary.json", {k: v for k, v in summary.items() if k != "root"})
    return summary


def sample_queries(params_file: str | Path, n: int = 4) -> list[dict[str, Any]]:
    """The first ``n`` copy queries of the eval split: query and reference images, edit ops."""
    from icdlib.data import Disc21, load_image

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


# --------------------------------------------------------------------------- training
MAIN_CHECKPOINTS = {
    "infonce": "descriptor_infonce.pt",
    "copynce": "descriptor_copynce.pt",
    "matcher_bce": "matcher_bce.pt",
    "matcher_copynce": "matcher.pt",
}


def checkpoint_name(arm: str) -> str:
    """File name of an arm's final checkpoint under ``paths.models``."""
    return MAIN_CHECKPOINTS.get(arm, f"{arm}.pt")


def train_arm(
    params_file: str | Path,
    arm: str,
    *,
    seed: int | None = None,
    steps: int | None = None,
    run_name: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train one named arm (``params.yaml: arms``) and copy its final checkpoint to ``out``.

    The run folder ``paths.runs/<run_name>`` keeps the resumable checkpoint and DVCLive
    logs: an interrupted stage continues where it stopped. Matcher arms that draw kNN
    negatives (``pairs.neg_knn_p > 0``) mine them once with the CopyNCE descriptor
    checkpoint, in ``paths.runs/knn``.
    """
    from icdlib import train as T

    st = Stage(params_file)
    sets: dict[str, Any] = {"train.seed": st.seed if seed is None else int(seed)}
    if steps is not None:
        sets["train.steps"] = int(steps)
    run = T.resolve_run(st.params, arm, sets, st.params_path.name)
    if run.train.steps <= run.train.warmup_steps:
        sets["train.warmup_steps"] = max(0, run.train.steps // 10)
        run = T.resolve_run(st.params, arm, sets, st.params_path.name)
    start = st.paths.matcher_backbone if run.train.kind == "matcher" and st.paths.matcher_backbone else st.paths.backbone
    if start and run.train.backbone is None and run.train.init is None:
        sets["train.backbone"] = str(resolve(st.params_path, start))
        run = T.resolve_run(st.params, arm, sets, st.params_path.name)
    if run.train.kind == "matcher" and run.train.knn_checkpoint is None and run.pairs.neg_knn_p > 0:
        knn = st.path("models", checkpoint_name("copynce"))
        if knn.is_file():
            sets["train.knn_checkpoint"] = str(knn)
            if run.train.knn_cache is None:  # both matcher arms mine once
                sets["train.knn_cache"] = str(st.path("runs", "knn"))
            run = T.resolve_run(st.params, arm, sets, st.params_path.name)
    run_dir = st.path("runs", run_name or arm)
    if st.launch.nproc_per_node > 1 or st.launch.nnodes > 1:
        final = _torchrun(st, arm, run_dir, sets.items())
    else:
        final = T.train(run, run_dir, data_root=st.path("data"), resume="auto", progress=progress)
    dest = Path(out) if out is not None else st.path("models", checkpoint_name(arm))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    shutil.copyfile(final, tmp)
    tmp.replace(dest)
    return dest


def _torchrun(st: Stage, arm: str, run_dir: Path, sets: Sequence[tuple[str, Any]]) -> Path:
    """Run one arm under torchrun (DDP over ``launch.nproc_per_node`` processes per node)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={st.launch.nproc_per_node}",
           f"--nnodes={st.launch.nnodes}"]
    if st.launch.rdzv_endpoint:
        cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={st.launch.rdzv_endpoint}"]
    cmd += ["-m", "icdlib.train", "--params", str(st.params_path), "--arm", arm, "--out", str(run_dir),
            "--data", str(st.path("data"))]
    for key, value in sets:
        cmd += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    subprocess.run(cmd, check=True)
    return run_dir / "model.pt"


def train_arms(params_file: str | Path, arms: Sequence[str], progress: bool = True) -> dict[str, Path]:
    """:func:`train_arm` for each of ``arms`` (the main runs, seed from params); name -> checkpoint."""
    return {arm: train_arm(params_file, arm, progress=progress) for arm in arms}


def training_curves(params_file: str | Path, runs: Sequence[str]) -> pd.DataFrame:
    """Long-format DVCLive curves of several runs: ``run, step, metric, value``."""
    frames = []
    for run in runs:
        wide = training_curve(params_file, run)
        long = wide.melt(id_vars="step", var_name="metric", value_name="value").dropna()
        long.insert(0, "run", run)
        frames.append(long)
    return pd.concat(frames, ignore_index=True)


def training_curve(params_file: str | Path, run_name: str) -> pd.DataFrame:
    """The DVCLive metric rows of a run (``step`` plus one column per logged metric)."""
    st = Stage(params_file)
    plots = st.path("runs", run_name, "dvclive", "plots", "metrics")
    frames = []
    for f in sorted(plots.rglob("*.tsv")):
        df = pd.read_csv(f, sep="\t")
        name = str(f.relative_to(plots).with_suffix(""))
        frames.append(df.rename(columns={df.columns[-1]: name})[["step", name]].set_index("step"))
    if not frames:
        raise FileNotFoundError(f"no DVCLive metrics under {plots}")
    return pd.concat(frames, axis=1).reset_index()


# --------------------------------------------------------------------------- evaluation
class Evaluator:
    """Evaluates many models on one benchmark split, embedding each image set once per model."""

    def __init__(self, params_file: str | Path, predictions: str = "predictions"):
        from icdlib.data import Disc21
        from icdlib.retrieval import EvalConfig

        self.st = Stage(params_file)
        self.predictions = predictions  # folder under paths.features for this stage's prediction CSVs
        self.cfg = section(self.st.params, "eval", EvalConfig, self.st.params_path.name)
        root = self.st.path("data")
        self.ds = Disc21(root, ground_truth=self.st.dataset.ground_truth, on_error=self.st.dataset.on_error)
        split = self.st.dataset.eval_split
        if split not in self.ds.splits():
            raise ValueError(f"dataset.eval_split: {split!r} not in {root} (splits: {self.ds.splits()})")
        self.split = split
        self.queries = self.ds.images(split)
        self.refs = self.ds.images("reference")
        gt = self.ds.ground_truth(split)
        self.gt_q = [q for q, _ in gt]
        self.gt_r = [r for _, r in gt]
        aux = self.ds.images("training") if "training" in self.ds.splits() else []
        n = self.st.report.aux_images
        if n and len(aux) > n:  # an evenly spaced subset keeps the normaliser cheap
            keep = np.linspace(0, len(aux) - 1, n).round().astype(int)
            aux = [aux[i] for i in keep]
        self.aux = aux

    def score(self, preds: pd.DataFrame) -> tuple[dict[str, float], Any]:
        from icdlib.metrics import evaluate_arrays

        m, curve = evaluate_arrays(preds["query_id"].to_numpy(), preds["reference_id"].to_numpy(),
                                   preds["score"].to_numpy(), self.gt_q, self.gt_r)
        return m.to_dict(), curve

    def record(self, preds: pd.DataFrame, name: str) -> dict[str, Any]:
        """Score ``preds``, write them to ``paths.features/<predictions>/<name>.csv``; the result entry."""
        from icdlib.metrics import write_predictions

        metrics, curve = self.score(preds)
        path = self.st.path("features", self.predictions, f"{name}.csv")
        write_predictions(path, preds["query_id"], preds["reference_id"], preds["score"])
        return {"metrics": metrics, "curve": _curve(curve), "predictions": str(path)}

    def descriptor(self, model: torch.nn.Module, size: int, name: str) -> dict[str, Any]:
        """Metrics of a descriptor without and with score normalisation; writes predictions."""
        from icdlib.retrieval import descriptor_predictions, embed

        c = self.cfg
        common = dict(size=size, batch_size=c.batch_size, num_workers=c.num_workers, device=c.device)
        rf = embed(model, [p for _, p in self.refs], desc=f"{name}: references", **common)
        qf = embed(model, [p for _, p in self.queries], desc=f"{name}: queries", **common)
        out: dict[str, Any] = {}
        q_ids, r_ids = [i for i, _ in self.queries], [i for i, _ in self.refs]
        variants = {"plain": None}
        if len(self.aux) >= c.norm_end:
            variants["sn"] = embed(model, [p for _, p in self.aux], desc=f"{name}: auxiliary", **common)
        for variant, af in variants.items():
            out[variant] = self.record(descriptor_predictions(q_ids, qf, r_ids, rf, c, af), f"{name}_{variant}")
        return out

    def hashes(self, method: str) -> dict[str, Any]:
        from icdlib.hashes import hash_predictions

        preds = hash_predictions(self.queries, self.refs, method, self.cfg.k, self.cfg.num_workers)
        return {"plain": self.record(preds, method)}

    def matcher(self, model: torch.nn.Module, size: int, candidates: pd.DataFrame, name: str) -> dict[str, Any]:
        """Matcher rescoring of ``candidates``: plain, and LCE on each query's top-n candidates."""
        from icdlib.retrieval import rescore

        c, n = self.cfg, self.st.report.lce_candidates
        qp, rp = dict(self.queries), dict(self.refs)
        plain = rescore(model, candidates, qp, rp, size, c.matcher_batch_size, c.num_workers, c.device)
        out: dict[str, Any] = {"plain": self.record(plain, f"{name}_plain")}
        if n > 0:
            ranked = candidates.sort_values(["query_id", "score"], ascending=[True, False], kind="stable")
            top = ranked.groupby("query_id", sort=False).head(n)
            lce = rescore(model, top, qp, rp, size, c.matcher_batch_size, c.num_workers, c.device, lce=True)
            merged = plain.merge(lce, on=["query_id", "reference_id"], how="left", suffixes=("", "_lce"))
            merged["score"] = merged["score_lce"].fillna(merged["score"])
            out["lce"] = {**self.record(merged[["query_id", "reference_id", "score"]], f"{name}_lce"),
                          "lce_candidates": n}
        return out


def _curve(curve, points: int = 200) -> dict[str, list[float]]:
    c = curve.subsample(points)
    return {"recall": [float(x) for x in c.recall], "precision": [float(x) for x in c.precision]}


def _load(path: Path, kind: str):
    from icdlib.models import load_model

    if not path.is_file():
        raise FileNotFoundError(f"{kind} checkpoint not found: {path} (run its training stage first)")
    model, meta = load_model(path)
    if meta.get("kind") != kind:
        raise ValueError(f"{path}: holds a {meta.get('kind')!r} model, expected {kind!r}")
    return model, meta


def _seed_of(meta: dict, default: int) -> int:
    run = meta.get("run") or meta.get("train") or {}
    if isinstance(run, dict):
        t = run.get("train", run)
        if isinstance(t, dict) and "seed" in t:
            return int(t["seed"])
    return int(meta.get("seed", default))


def evaluate_suite(params_file: str | Path) -> dict[str, Any]:
    """Every model and baseline of the descriptor and matcher tables on ``dataset.eval_split``.

    Writes ``paths.reports/eval/results.json`` and PR curves ``reports/plots/pr_<row>.csv``.
    """
    from icdlib.models import DescriptorConfig, build_descriptor

    ev = Evaluator(params_file)
    st = ev.st
    rows: dict[str, Any] = {}
    tag_keys = ["data", "edits", "eval", "report"]
    for method, label in (("pdq", "PDQ"), ("phash", "pHash")):
        rows[label] = {"table": "descriptor", "seed": st.seed, "config": st.tag(tag_keys, baseline=method),
                       **ev.hashes(method)}
    dcfg = section(st.params, "descriptor", DescriptorConfig, st.params_path.name)
    rnd = build_descriptor(dcfg, seed=st.report.random_init_seed)
    size = rnd.config.img_size
    rows["random-init descriptor"] = {
        "table": "descriptor", "seed": st.report.random_init_seed,
        "config": st.tag(tag_keys + ["descriptor"], model="random_init"),
        **ev.descriptor(rnd, size, "random_init")}
    for arm, label in (("infonce", "InfoNCE descriptor"), ("copynce", "CopyNCE descriptor")):
        path = st.path("models", checkpoint_name(arm))
        model, meta = _load(path, "descriptor")
        rows[label] = {"table": "descriptor", "seed": _seed_of(meta, st.seed),
                       "config": st.tag(tag_keys + ["descriptor", "train", "pairs", f"arms.{arm}"], arm=arm),
                       "checkpoint": str(path), **ev.descriptor(model, int(meta["config"]["img_size"]), arm)}
    candidates = pd.read_csv(rows["CopyNCE descriptor"]["plain"]["predictions"], dtype={"query_id": str, "reference_id": str})
    for arm, label in (("matcher_bce", "matcher (BCE only)"), ("matcher_copynce", "matcher (CopyNCE)")):
        path = st.path("models", checkpoint_name(arm))
        model, meta = _load(path, "matcher")
        rows[label] = {"table": "matcher", "seed": _seed_of(meta, st.seed),
                       "config": st.tag(tag_keys + ["matcher", "train", "pairs", f"arms.{arm}"], arm=arm),
                       "checkpoint": str(path), **ev.matcher(model, int(meta["config"]["img_size"]), candidates, arm)}
    result = {"split": ev.split, "n_queries": len(ev.queries), "n_references": len(ev.refs),
              "n_positives": int(sum(r is not None for r in ev.gt_r)), "n_auxiliary": len(ev.aux),
              "seed": st.seed, "profile": st.profile, "rows": rows}
    out = st.path("reports", "eval")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "results.json", result)
    _write_json(out / "metrics.json", {f"{label}/{variant}": e["metrics"] for label, _, variant, e in evaluated(rows)})
    write_pr_curves(rows, st.path("reports", "plots"))
    return result


VARIANTS = ("plain", "sn", "lce")  # no normalisation, score normalisation, local crop ensembling


def evaluated(rows: dict[str, Any]):
    """``(label, row, variant, entry)`` for every variant an evaluation row holds."""
    for label, row in rows.items():
        for variant in VARIANTS:
            if variant in row:
                yield label, row, variant, row[variant]


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


def results_frame(result: dict[str, Any]) -> pd.DataFrame:
    """Flat table of an :func:`evaluate_suite` result: one row per (row, variant)."""
    return pd.DataFrame([{"table": row["table"], "method": label, "variant": variant, "uAP": e["metrics"]["uAP"],
                          "RP90": e["metrics"]["RP90"], "mAP": e["metrics"]["mAP"], "seed": row["seed"]}
                         for label, row, variant, e in evaluated(result["rows"])])


def curves_frame(result: dict[str, Any]) -> pd.DataFrame:
    """Long-format PR curves of an :func:`evaluate_suite` result: ``method, variant, recall, precision``."""
    return pd.concat([pd.DataFrame({"method": label, "variant": variant, "recall": e["curve"]["recall"],
                                    "precision": e["curve"]["precision"]})
                      for label, _, variant, e in evaluated(result["rows"])], ignore_index=True)


# --------------------------------------------------------------------------- ablations
def run_ablations(params_file: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train every ``ablation.arms`` x ``ablation.seeds`` run (short, paired) and evaluate it.

    Runs are resumable (finished ones return at once). Writes
    ``paths.reports/ablation/results.json``.
    """
    st = Stage(params_file)
    ev = Evaluator(params_file, predictions="ablation")
    ev.aux = []  # the ablation table compares arms without score normalisation
    results: dict[str, Any] = {}
    for seed in st.ablation.seeds:
        for arm in st.ablation.arms:
            name = f"{arm}_s{seed}"
            ckpt = train_arm(params_file, arm, seed=seed, steps=st.ablation.steps, run_name=f"ablation/{name}",
                             out=st.path("models", "ablation", f"{name}.pt"), progress=progress)
            model, meta = _load(ckpt, "descriptor")
            res = ev.descriptor(model, int(meta["config"]["img_size"]), f"ablation_{name}")
            results.setdefault(arm, {"seeds": [], "runs": [],
                                     "config": st.tag(["data", "edits", "descriptor", "train", "pairs", f"arms.{arm}", "ablation"],
                                                      arm=arm, steps=st.ablation.steps)})
            results[arm]["seeds"].append(int(seed))
            results[arm]["runs"].append(res["plain"]["metrics"])
    out = {"split": ev.split, "steps": st.ablation.steps, "profile": st.profile, "seed": st.seed, "arms": results}
    d = st.path("reports", "ablation")
    d.mkdir(parents=True, exist_ok=True)
    _write_json(d / "results.json", out)
    return out


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
