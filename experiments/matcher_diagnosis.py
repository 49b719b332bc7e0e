"""Why does the matcher re-rank worse than the descriptor it starts from? -> reports/matcher/diagnosis.json

    python experiments/matcher_diagnosis.py --run RUN [--parts consistency,shortcut,overfit,curves] [--n 100]
        [--overfit-steps 200] [--curve-steps 120] [--every 30] [--out reports/matcher/diagnosis.json]

Writes ``reports/matcher/diagnosis.json``, one section per part (sections and curve variants not
run this time are kept from the file). One CPU thread. ``--run`` is a finished pipeline run (read
only): its ``params.yaml``, data, ``models/*.pt``, the CopyNCE descriptor's score-normalised
candidates (the file ``reports/eval/results.json`` names) and the training pairs of arm
``matcher_bce`` as its stage resolves it: from its pair store where the store holds them, else
made as its loader makes them (the same pixels). AUCs: :func:`icdlib.eval.metrics.exact_auc`.

1. ``consistency``: ``--n`` dev pairs of each kind (positives from the ground truth; random other
   references, and hard negatives from the descriptor's candidates) scored by the trained matchers
   through the evaluation path (:func:`icdlib.eval.rescore.rescore`) and the training path
   (``resize_traced`` + ``to_tensor`` + ``collate``), also with query and reference swapped; the
   descriptor cosine on the same pairs; both on held-out *training-distribution* pairs (steps
   ``--heldout-steps`` of the arm's schedule, minus images its first ``--seen-steps`` show), which
   also checks that the stored labels line up with the images.
2. ``overfit``: the matcher, started as the pipeline starts it, trained with the loop's optimiser
   and lr schedule on ``--overfit-pairs`` fixed pairs: train accuracy, AUC, BCE.
3. ``curves``: short learning curves (held-out AUC vs pairs seen) for the trunk start (CopyNCE /
   InfoNCE descriptor / random), the fusion class token init (random / the trunk's class token)
   and the fusion blocks (trunk's last blocks / fresh); also lr 1e-4.
   ``shortcut``: held-out pairs split by whether the negative's query was edited.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from icdlib.checkpoints import load_backbone_weights, load_model
from icdlib.data import Disc21, MatcherPairs, collate, load_image
from icdlib.data.cache import CachedPairs, cache_folder
from icdlib.data.pairs import resize_traced, to_tensor
from icdlib.eval.metrics import exact_auc
from icdlib.eval.rescore import rescore
from icdlib.models import build_matcher, preprocess
from icdlib.models.precision import bf16_enabled
from icdlib.pipeline.stage import Stage
from icdlib.pipeline.training import checkpoint_name, stage_run
from icdlib.pixtrace import Trace
from icdlib.train import training_images
from icdlib.train.assembly import build_optimizer
from icdlib.train.mining import cached_neighbours
from icdlib.train.objectives import MatcherObjective
from icdlib.train.runs import TrainConfig
from icdlib.train.schedule import global_batch, lr_schedule

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "matcher" / "diagnosis.json"
ARM = "matcher_bce"  # whose training pairs are read (both matcher arms read the same pairs)
MATCHERS = ("matcher_copynce", "matcher_bce")  # reported under their checkpoints' names: matcher, matcher_bce


def auc(labels, scores) -> float:
    """:func:`icdlib.eval.metrics.exact_auc` to 4 decimals, as the diagnosis reports it."""
    return round(exact_auc(np.asarray(labels), np.asarray(scores)), 4)


class Run:
    """What the diagnosis reads from the finished pipeline run in ``folder``: data root, models,
    the CopyNCE descriptor's score-normalised candidates, the matcher arm as its stage trains it
    (``arm``: batch, input side) and that arm's training pairs (:meth:`pair`)."""

    def __init__(self, folder: Path, seen_steps: int, heldout_steps: range):
        st = Stage(folder / "params.yaml")
        self.data, self.models = st.path("data"), st.path("models")
        results = json.loads(st.path("reports", "eval", "results.json").read_text())
        self.candidates = st.absolute(results["rows"]["CopyNCE descriptor"]["sn"]["predictions"])
        self.arm, _ = stage_run(st, ARM, None, None)
        self.batch, self.size = int(self.arm.train.batch_size), int(self.arm.pairs.size)
        self.seen_steps, self.heldout_steps = seen_steps, heldout_steps
        t = self.arm.train
        paths = training_images(self.data, t.split)
        neighbours = None
        if t.knn_checkpoint and self.arm.pairs.neg_knn_p > 0:
            neighbours = cached_neighbours(t.knn_checkpoint, paths, t.knn_k, t.knn_cache, batch_size=t.knn_batch_size,
                                           device="cpu", amp=bf16_enabled("cpu", t.amp, t.amp_cpu))
        self.live = MatcherPairs(paths, self.arm.pairs, t.seed, neighbours=neighbours, edit_config=self.arm.edits)
        store = cache_folder(t.pair_cache, self.live) if t.pair_cache else None
        self.store = CachedPairs(store, len(self.live)) if store and (store / "meta.json").is_file() else None

    def model(self, name: str) -> Path:
        return self.models / f"{name}.pt"

    def pair(self, key: tuple[int, int]) -> dict:
        """The arm's training pair of ``(index, epoch)``: its store's copy where the store holds
        it, else made by the loader's dataset (bit-identical, see :mod:`icdlib.data.cache`)."""
        k = (int(key[0]), int(key[1]))
        return self.store[k] if self.store is not None and k in self.store.index else self.live[k]


# ------------------------------------------------------------------ pairs
def dev_pairs(root: Path, cand_csv: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` positives (ground truth), ``n`` random-reference and ``n`` hard (candidate) negatives."""
    rng = np.random.default_rng(seed)
    gt = pd.read_csv(root / "dev_ground_truth.csv").dropna()
    pos = gt.iloc[rng.choice(len(gt), n, replace=False)][["query_id", "reference_id"]].assign(kind="pos", label=1)
    refs = sorted(p.stem for p in (root / "reference_images").iterdir())
    truth = set(zip(gt.query_id, gt.reference_id))
    rand = pos[["query_id"]].copy()
    rand["reference_id"] = [refs[i] for i in rng.integers(len(refs), size=n)]
    rand = rand[[(q, r) not in truth for q, r in zip(rand.query_id, rand.reference_id)]].assign(kind="random", label=0)
    cand = pd.read_csv(cand_csv)
    hard = cand[[(q, r) not in truth for q, r in zip(cand.query_id, cand.reference_id)]]
    hard = hard.iloc[rng.choice(len(hard), n, replace=False)][["query_id", "reference_id"]].assign(kind="hard", label=0)
    return pd.concat([pos, rand, hard], ignore_index=True)


def train_path_batch(qp: list[Path], rp: list[Path], size: int) -> dict:
    """The pairs as the training data make them: ``resize_traced`` -> ``to_tensor`` -> ``collate``."""
    items = []
    for q, r in zip(qp, rp):
        qi, ri = load_image(q), load_image(r)
        qi, _ = resize_traced(qi, Trace(qi.size), size)
        ri, _ = resize_traced(ri, Trace(ri.size), size)
        items.append({"query": to_tensor(qi), "reference": to_tensor(ri), "label": torch.tensor(0.0)})
    return collate(items)


@torch.inference_mode()
def logits_of(model, q: torch.Tensor, r: torch.Tensor, bs: int = 64) -> np.ndarray:
    model.eval()
    return torch.cat([model(q[s:s + bs], r[s:s + bs]) for s in range(0, len(q), bs)]).float().numpy()


@torch.inference_mode()
def cosine(desc, q: torch.Tensor, r: torch.Tensor, bs: int = 128) -> np.ndarray:
    desc.eval()
    out = [(desc(q[s:s + bs]) * desc(r[s:s + bs])).sum(1) for s in range(0, len(q), bs)]
    return torch.cat(out).numpy()


def cached(run: Run, keys: list[tuple[int, int]]) -> dict:
    """The arm's training pairs of ``keys``, collated."""
    return collate([run.pair(k) for k in keys])


def cache_keys(run: Run, steps: range) -> list[tuple[int, int]]:
    """The matcher arm's ``(index, epoch)`` keys of ``steps`` (its data order)."""
    keys, n = [], len(run.live)
    for s in steps:
        idx, pos = global_batch(run.arm.train.seed, s, run.batch, n)
        keys += [(int(i), int(p // n)) for i, p in zip(idx, pos)]
    return keys


def heldout_keys(run: Run, n: int) -> list[tuple[int, int]]:
    """``n`` keys of the arm's ``heldout_steps`` whose images its first ``seen_steps`` never show."""
    seen = {i for i, _ in cache_keys(run, range(run.seen_steps))}
    return [k for k in cache_keys(run, run.heldout_steps) if k[0] not in seen][:n]


def split_maps(root: Path) -> tuple[dict, dict]:
    bench = Disc21(root)
    return dict(bench.images("dev_queries")), dict(bench.images("references"))


# ------------------------------------------------------------------ 2. consistency
def consistency(run: Run, n: int) -> dict:
    root = run.data
    pairs = dev_pairs(root, run.candidates, n)
    qmap, rmap = split_maps(root)
    qp, rp = [qmap[q] for q in pairs.query_id], [rmap[r] for r in pairs.reference_id]
    out: dict = {"pairs": pairs.kind.value_counts().to_dict()}
    y = pairs.label.to_numpy()
    hard = pairs.kind.isin(["pos", "hard"]).to_numpy()
    rand = pairs.kind.isin(["pos", "random"]).to_numpy()

    def report(scores) -> dict:
        s = np.asarray(scores)
        return {"auc_all": auc(y, s), "auc_random_neg": auc(y[rand], s[rand]), "auc_candidate_neg": auc(y[hard], s[hard])}

    desc, _ = load_model(run.model("descriptor_copynce"))
    dsize = desc.config.img_size
    dq = preprocess([load_image(p) for p in qp], dsize)
    dr = preprocess([load_image(p) for p in rp], dsize)
    out["descriptor_copynce_cosine"] = report(cosine(desc, dq, dr))
    held = cached(run, heldout_keys(run, 256))
    out["heldout_train_pairs"] = {"n": len(held["label"]), "positives": float(held["label"].mean()),
                                  "descriptor_copynce_cosine_auc": auc(held["label"], cosine(desc, held["query"], held["reference"]))}
    for name in (Path(checkpoint_name(arm)).stem for arm in MATCHERS):
        model, _ = load_model(run.model(name))
        size = model.config.img_size
        ev = rescore(model, pairs[["query_id", "reference_id"]], qmap, rmap, size, batch_size=32)["score"].to_numpy()
        tb = train_path_batch(qp, rp, size)
        ep = torch.cat([torch.cat([preprocess([load_image(p)], size) for p in qp])])
        tr = logits_of(model, tb["query"], tb["reference"])
        sw = logits_of(model, tb["reference"], tb["query"])
        out[name] = {
            "eval_path": report(ev), "train_path": report(tr), "train_path_swapped": report(sw),
            "max_abs_input_diff_eval_vs_train": float((ep - tb["query"]).abs().max()),
            "max_abs_prob_diff_eval_vs_train": float(np.abs(ev - 1 / (1 + np.exp(-tr))).max()),
            "mean_prob_pos_neg": [round(float(ev[y == 1].mean()), 4), round(float(ev[y == 0].mean()), 4)],
            "heldout_train_pairs_auc": auc(held["label"], logits_of(model, held["query"], held["reference"])),
        }
    return out


# ------------------------------------------------------------------ 2b. shortcut
def shortcut(run: Run) -> dict:
    """Held-out training pairs split by whether the negative's query is edited: positives
    are always edited copies, but ``pairs.neg_edit_p`` = 0.5 leaves half the negatives a
    plain resize of another image, so "is the query edited?" separates half the pairs."""
    keys = heldout_keys(run, 256)
    held = cached(run, keys)
    paths = run.live.paths
    y = held["label"].numpy().astype(bool)
    plain = np.zeros(len(y), bool)
    for i in np.flatnonzero(~y):
        img = load_image(paths[int(held["query_index"][i])])
        x = to_tensor(resize_traced(img, Trace(img.size), run.size)[0])
        plain[i] = bool(torch.equal(x, held["query"][i]))
    out = {"positives": int(y.sum()), "negatives_edited": int((~y & ~plain).sum()), "negatives_plain": int(plain.sum())}
    desc, _ = load_model(run.model("descriptor_copynce"))
    scores = {"descriptor_copynce_cosine": cosine(desc, held["query"], held["reference"])}
    for name in (Path(checkpoint_name(arm)).stem for arm in MATCHERS):
        model, _ = load_model(run.model(name))
        scores[name] = logits_of(model, held["query"], held["reference"])
    for name, s in scores.items():
        out[name] = {"auc_vs_edited_negatives": auc(y[y | ~plain], s[y | ~plain]),
                     "auc_vs_plain_negatives": auc(y[y | plain], s[y | plain])}
    return out


# ------------------------------------------------------------------ training
def start_matcher(run: Run, trunk: str | None, token: str = "random", fusion: str = "trunk", seed: int = 0):
    """The matcher as the pipeline starts it (``trunk``: a descriptor checkpoint name or None
    for random init), with the fusion class token / fusion blocks variants."""
    torch.manual_seed(seed)
    model = build_matcher(run.arm.model)
    if trunk:
        load_backbone_weights(model, run.model(trunk))
    with torch.no_grad():
        if token == "trunk_cls":
            model.fusion_token.copy_(model.vit.cls_token)
        if fusion == "fresh":
            fresh = build_matcher(run.arm.model, seed=seed + 1)
            e = model.config.encoder_depth
            for i in range(e, len(model.vit.blocks)):
                model.vit.blocks[i].load_state_dict(fresh.vit.blocks[i].state_dict())
            model.vit.norm.load_state_dict(fresh.vit.norm.state_dict())
    return model


def train_steps(model, batches, steps: int, batch_size: int = 32, lr: float = 5e-4,
                on_step=None, w_copynce: float = 0.0) -> list[dict]:
    """The loop's update (AdamW groups, warm-up + cosine, grad clip 3) on ``batches(step)``."""
    t = TrainConfig(kind="matcher", steps=steps, batch_size=batch_size, lr=lr,
                    warmup_steps=max(1, steps // 20), w_copynce=w_copynce, gamma=1.0)
    obj = MatcherObjective(model, w_copynce=t.w_copynce, gamma=t.gamma, lam=t.lam, scale=t.scale)
    opt = build_optimizer(obj, t)
    lrs = lr_schedule(t.steps, t.lr, t.warmup_steps, t.min_lr, t.warmup_start)
    params = [p for p in obj.parameters() if p.requires_grad]
    log = []
    for step in range(steps):
        obj.train()
        for g in opt.param_groups:
            g["lr"] = float(lrs[step])
        terms = obj(batches(step))
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        log.append({"bce": float(terms["bce"]), "accuracy": float(terms["accuracy"])})
        if on_step is not None:
            on_step(step + 1)
    return log


@torch.inference_mode()
def fit_stats(model, batch: dict) -> dict:
    lg = torch.from_numpy(logits_of(model, batch["query"], batch["reference"]))
    y = batch["label"].float()
    return {"accuracy": round(float(((lg > 0).float() == y).float().mean()), 4), "auc": auc(y, lg),
            "bce": round(float(F.binary_cross_entropy_with_logits(lg, y)), 5)}


# ------------------------------------------------------------------ 1. overfit
def overfit(run: Run, n_pairs: int, steps: int, trunks: list) -> dict:
    keys = cache_keys(run, range(-(-2 * n_pairs // run.batch)))[:n_pairs * 2]
    data = cached(run, keys)
    pos = torch.nonzero(data["label"] == 1).flatten()[: n_pairs // 2]
    neg = torch.nonzero(data["label"] == 0).flatten()[: n_pairs - len(pos)]
    sel = torch.cat([pos, neg])
    fixed = {k: v[sel] for k, v in data.items()}
    out = {"pairs": len(sel), "positives": len(pos), "steps": steps}
    for trunk in trunks:
        model = start_matcher(run, trunk)
        gen = torch.Generator().manual_seed(0)
        t0 = time.process_time()

        def batches(step, gen=gen):
            i = torch.randperm(len(sel), generator=gen)[:run.batch]
            return {k: v[i] for k, v in fixed.items()}

        log = train_steps(model, batches, steps, batch_size=run.batch)
        out[trunk or "random"] = {"start": log[0], "train_last10": {k: float(np.mean([r[k] for r in log[-10:]])) for k in log[0]},
                                  "eval_mode_on_fixed": fit_stats(model, fixed), "cpu_s": round(time.process_time() - t0, 1)}
        print("overfit", trunk, out[trunk or "random"], flush=True)
    return out


# ------------------------------------------------------------------ 3. curves
def curves(run: Run, steps: int, every: int, variants: dict, dev: dict) -> dict:
    held = cached(run, heldout_keys(run, 256))
    b = run.batch
    train_keys = cache_keys(run, range(steps))
    out = {"batch_size": b, "heldout_pairs": len(held["label"])}
    for name, kw in variants.items():
        kw = dict(kw)
        lr = kw.pop("lr", 5e-4)
        model = start_matcher(run, **kw)
        curve = []
        t0 = time.process_time()

        def point(step, model=model, curve=curve, name=name):
            if step % every == 0 or step == 0:
                row = {"step": step, "pairs_seen": step * b, "heldout_auc": fit_stats(model, held)["auc"]}
                if dev:
                    row["dev_auc"] = auc(dev["y"], logits_of(model, dev["q"], dev["r"]))
                curve.append(row)
                print(name, row, flush=True)

        point(0)
        train_steps(model, lambda s: cached(run, train_keys[s * b:(s + 1) * b]), steps, batch_size=b, lr=lr,
                    on_step=point)
        out[name] = {"config": {**kw, "lr": lr}, "steps": steps, "curve": curve, "cpu_s": round(time.process_time() - t0, 1)}
    return out


VARIANTS = {
    "copynce_trunk": {"trunk": "descriptor_copynce"},  # the pipeline's start
    "infonce_trunk": {"trunk": "descriptor_infonce"},
    "random_init": {"trunk": None},
    "copynce_trunk_token_from_cls": {"trunk": "descriptor_copynce", "token": "trunk_cls"},
    "copynce_trunk_fresh_fusion": {"trunk": "descriptor_copynce", "fusion": "fresh"},
    "copynce_trunk_lr1e-4": {"trunk": "descriptor_copynce", "lr": 1e-4},  # not an init: the fine-tuning step size
}
PARTS = ("consistency", "shortcut", "overfit", "curves")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished pipeline run folder (read only)")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--n", type=int, default=100, help="dev pairs per kind (positive, random, hard); curves use half")
    ap.add_argument("--overfit-pairs", type=int, default=256, help="fixed training pairs the overfit part fits")
    ap.add_argument("--overfit-steps", type=int, default=200)
    ap.add_argument("--curve-steps", type=int, default=120)
    ap.add_argument("--every", type=int, default=30, help="curve points every this many steps")
    ap.add_argument("--seen-steps", type=int, default=200, help="held-out pairs avoid the images of these first steps")
    ap.add_argument("--heldout-steps", type=int, nargs=2, default=[380, 400], metavar=("START", "STOP"),
                    help="steps [START, STOP) of the arm's schedule the held-out pairs come from")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    parts = [p for p in a.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS] + [v for v in a.variants.split(",") if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown part(s) or variant(s) {unknown}; parts: {list(PARTS)}, variants: {list(VARIANTS)}")
    if not 0 <= a.heldout_steps[0] < a.heldout_steps[1]:
        ap.error(f"--heldout-steps: need 0 <= START < STOP, got {a.heldout_steps}")
    torch.set_num_threads(1)
    run = Run(a.run, a.seen_steps, range(*a.heldout_steps))
    result = json.loads(a.out.read_text()) if a.out.is_file() else {}
    if "consistency" in parts:
        result["consistency"] = consistency(run, a.n)
    if "shortcut" in parts:
        result["shortcut"] = shortcut(run)
    if "overfit" in parts:
        result["overfit"] = overfit(run, a.overfit_pairs, a.overfit_steps, ["descriptor_copynce", None])
    if "curves" in parts:
        root = run.data
        pairs = dev_pairs(root, run.candidates, max(1, a.n // 2))
        qmap, rmap = split_maps(root)
        b = train_path_batch([qmap[q] for q in pairs.query_id], [rmap[r] for r in pairs.reference_id], run.size)
        dev = {"q": b["query"], "r": b["reference"], "y": pairs.label.to_numpy()}
        chosen = {k: VARIANTS[k] for k in a.variants.split(",")}
        prev = result.get("curves", {})
        result["curves"] = {**prev, **curves(run, a.curve_steps, a.every, chosen, dev)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
