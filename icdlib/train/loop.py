"""One training entry point for the descriptor and the matcher, on CPU or multi-GPU DDP.

In a notebook or script::

    from icdlib import params, train

    run = train.resolve_run(params.load_params(), arm="copynce")
    train.train(run, "runs/copynce", data_root="data/bench")

From the shell, one process (CPU or one GPU), or DDP over N GPUs (or N CPU processes)::

    python -m icdlib.train --params params.yaml --arm copynce --out runs/copynce
    torchrun --nproc_per_node=N -m icdlib.train --params params.yaml --arm copynce \\
        --out runs/copynce --set train.steps=1000

Exactness
---------
- The global batch of step ``t`` is a pure function of ``(seed, t)``
  (:func:`icdlib.train.schedule.global_batch`); process ``rank`` computes a fixed shard of it,
  so W processes consume the same batches as one, and the objectives
  (:mod:`icdlib.train.objectives`) give the same gradients.
- Checkpoints (atomic, every ``checkpoint_every`` steps) hold model, optimiser, loss
  parameters, step and RNG states: a resumed run ends with the same weights as an
  uninterrupted one.
- Exact equality holds up to float rounding, which Adam's normalised steps amplify
  slowly over many steps (CUDA kernels add their own non-determinism; bf16 autocast,
  ``train.amp`` / ``train.amp_cpu``, rounds each shard differently from the whole batch:
  compare process counts in fp32). With
  ``grad_accum > 1`` the in-batch negatives of InfoNCE/KoLeo are those of a micro-batch.
- Rank 0 alone shows progress, logs and writes files.

Outputs (``OUT`` = the run folder)
-----------------------------------
- ``checkpoint.pt``: the resumable state; ``model.pt``: the final model
  (:func:`icdlib.checkpoints.load_model`), with the resolved run config, arm, seed and step.
- ``dvclive/``: per-step ``train/<metric>`` (losses, lr, grad_norm, pairs_per_s, ...) as
  ``plots/metrics/train/*.tsv`` and the last values in ``metrics.json``. Beside them, how
  well the loader feeds the model: ``data_wait_s`` (seconds blocked in the loader) and
  ``loader_share`` (that wait over the step's wall time) and, on CUDA, ``gpu_util`` (percent,
  :mod:`icdlib.train.telemetry`; where it cannot be read, the param ``gpu_util_unavailable``
  says why); ``python experiments/gpu_smoke.py`` summarises them. DVCLive writes no
  ``dvc.yaml`` of its own (``dvcyaml=None``): the pipeline stage declares those two paths
  as its metrics and plots, so ``dvc exp show`` and ``dvc plots`` find them.

Throughput per arm and device: ``python benchmarks/train.py`` writes
``reports/benchmarks/train.json`` (ViT-S/16 at 224 px, bf16: ~3,500 pairs/s on one H200).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # text bars: logged by papermill --log-output, kept by the saved notebook

from icdlib.checkpoints import load_backbone_weights
from icdlib.data import collate, worker_errors
from icdlib.data.cache import CachedPairs, build_pair_cache, cache_folder
from icdlib.data.loading import worker_init
from icdlib.models.precision import bf16_enabled, describe

from icdlib.train import distributed as D
from icdlib.train.mining import load_table, neighbours_file
from icdlib.train.assembly import build_objective, build_optimizer, build_run_model, no_decay  # noqa: F401
from icdlib.params import portable, to_dict
from icdlib.train.runs import RunConfig, TrainConfig, model_section, resolve_run  # noqa: F401
from icdlib.train.state import (fit_weights, load_weights, resumable, save_snapshot, save_state,
                                set_rng_state, trim_live)
from icdlib.train.schedule import global_batch, lr_schedule, shard
from icdlib.train.telemetry import UNAVAILABLE_PARAM, GpuUtilisation, device_name
from icdlib.train.inputs import (  # noqa: F401  (training_images, prepare, schedule_keys: re-exported)
    CHECKPOINT, knn_folder, knn_table, pair_dataset, prepare, schedule_keys, source_paths, training_images,
)

FINAL = "model.pt"  # final weights, loadable with icdlib.checkpoints.load_model
LIVE_DIR = "dvclive"


def clear_outputs(out: Path) -> None:
    """Delete what an earlier run left in ``out``: checkpoint, final model (both formats),
    snapshots, DVCLive logs. Mined kNN tables stay: their names hash their inputs, so none is stale."""
    final = out / FINAL
    for f in (out / CHECKPOINT, final, final.with_suffix(".safetensors"), final.with_suffix(".json"),
              *out.glob("model_step*.pt")):
        f.unlink(missing_ok=True)
    shutil.rmtree(out / LIVE_DIR, ignore_errors=True)


class _StepBatches(torch.utils.data.Sampler):
    """Batch sampler: per micro-step from ``start_step`` on, this rank's ``(index, epoch)`` keys."""

    def __init__(self, run: RunConfig, n: int, start_step: int, dist: D.DistInfo):
        self.t, self.n, self.start, self.dist = run.train, n, start_step, dist

    def __len__(self):
        return (self.t.steps - self.start) * self.t.grad_accum

    def __iter__(self):
        for step in range(self.start, self.t.steps):
            idx, pos = global_batch(self.t.seed, step, self.t.batch_size, self.n)
            keys = np.stack([idx, pos // self.n], 1)  # (index, epoch): fresh edits each epoch
            for micro in range(self.t.grad_accum):
                part = shard(keys, self.dist.rank, self.dist.world_size, self.t.grad_accum, micro)
                yield [(int(i), int(e)) for i, e in part]


def _to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _step_seed(seed: int, step: int, rank: int) -> int:
    """Torch seed of one (step, rank): any stochastic layer draws are a pure function of it."""
    return int(np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(1)[0])


def train(
    run: RunConfig,
    out_path: str | Path,
    *,
    data_root: str | Path | None = None,
    image_paths: Sequence[str | Path] | None = None,
    resume: bool | str = True,
    device: str | None = None,
    neighbours: np.ndarray | None = None,
    callback: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> Path:
    """Train the model of ``run`` and write ``OUT/model.pt``; returns its path.

    Args:
        run: the resolved run (:func:`resolve_run`).
        out_path: run folder: ``checkpoint.pt`` (resumable state), ``model.pt`` (final,
            ``icdlib.checkpoints.load_model``-able, with the resolved run config and seed),
            ``dvclive/`` (metrics), ``neighbours_<hash>.npy`` (when mined here).
        data_root: DISC21-layout folder; its ``run.train.split`` images are the sources.
        image_paths: the source images directly (instead of ``data_root``).
        resume: continue from ``OUT/checkpoint.pt`` when it exists (a finished run
            returns at once); False starts over; ``"auto"`` resumes only a checkpoint of
            the same configuration and otherwise starts over (pipeline stages re-run
            after a parameter change).
        device: "cpu" / "cuda"; default CUDA when available. Under torchrun each process
            takes GPU ``LOCAL_RANK`` (NCCL) or joins a gloo group on CPU.
        neighbours: ``[n, k]`` kNN indices for hard negatives; default mined from
            ``run.train.knn_checkpoint`` when set (:func:`icdlib.train.mining.cached_neighbours`, kept
            in ``run.train.knn_cache`` or the run folder), else none.
        callback: called after every optimiser step (and its checkpoint) on every process
            as ``callback(steps_done, metrics)``.
        progress: show a tqdm bar on rank 0.
    """
    t = run.train
    dist = D.init_distributed(device)
    out = Path(out_path)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    D.barrier()
    paths = source_paths(t, data_root, image_paths, "train")

    torch.manual_seed(t.seed)  # the same initial weights on every process
    model = build_run_model(run)
    if t.init:
        load_weights(model, t.init, "train.init checkpoint")
    elif t.backbone:
        load_backbone_weights(model, t.backbone)
    objective = build_objective(run, model).to(dist.device)
    optimizer = build_optimizer(objective, t)
    start = _resume(run, out, resume, objective, optimizer, dist)
    bf16 = bf16_enabled(dist.device, t.amp, t.amp_cpu)  # train.amp on CUDA, train.amp_cpu on a bf16 CPU
    if dist.is_main and progress:
        print(f"{out.name}: trains in {describe(dist.device, t.amp, t.amp_cpu)}", file=sys.stderr, flush=True)
    loader = _loader(run, paths, out, start, neighbours, dist, bf16, progress)
    net = _parallel(objective, t, dist)
    lrs = lr_schedule(t.steps, t.peak_lr, t.warmup, t.min_lr, t.warmup_start)
    log = _Log(run, out, start, dist, progress)
    params = [p for p in objective.parameters() if p.requires_grad]
    amp = torch.autocast("cuda" if dist.device.startswith("cuda") else "cpu", dtype=torch.bfloat16, enabled=bf16)
    objective.train()
    batches = iter(loader)
    ckpt = out / CHECKPOINT
    try:
        for step in range(start, t.steps):
            metrics = _step(net, objective, optimizer, params, batches, amp, t, step, float(lrs[step]), dist)
            done = step + 1
            log.step(done, metrics)
            if done in t.snapshots and done < t.steps and dist.is_main:
                save_snapshot(out, run, objective.model, done)
            if done % t.checkpoint_every == 0 or done == t.steps:
                if dist.is_main:
                    save_state(ckpt, run, objective, optimizer, done, final=False)
                D.barrier()
            if callback is not None:
                callback(done, metrics)
        final = out / FINAL
        if dist.is_main:
            save_state(final, run, objective, optimizer, t.steps, final=True)
        D.barrier()
        return final
    finally:
        log.close()


# ------------------------------------------------------------------ the phases of a run
def _resume(run: RunConfig, out: Path, resume: bool | str, objective: nn.Module,
            optimizer: torch.optim.Optimizer, dist: D.DistInfo) -> int:
    """Load the run folder's checkpoint into ``objective`` and ``optimizer`` as ``resume`` asks; the first step.

    ``resume="auto"`` resumes only a checkpoint of the same configuration (else starts over);
    ``True`` resumes any checkpoint and refuses one of another configuration; a fresh start
    (``False``, or nothing to resume) clears what an earlier run left in ``out``.
    """
    ckpt, saved = out / CHECKPOINT, None
    if ckpt.is_file() and resume:
        saved = resumable(ckpt, run, strict=resume != "auto")  # the checkpoint is read once
        if saved is None:
            if dist.is_main:
                print(f"{ckpt}: written by another configuration (or unreadable); starting over", file=sys.stderr)
            resume = False
    if saved is None:
        if not resume and dist.is_main:
            clear_outputs(out)  # a fresh run never mixes with the last one's files
        return 0
    meta = saved[0]
    fit_weights(objective.model, saved[1], meta, ckpt, "resume checkpoint")
    try:
        objective.load_state_dict({**objective.state_dict(), **meta.get("loss_state", {})})
        optimizer.load_state_dict(meta["optimizer"])
        start = int(meta["step"])
        objective.to(dist.device)
        set_rng_state(meta["rng"])  # the loader's worker base seed is drawn from it
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{ckpt}: resume checkpoint lacks a usable optimiser/RNG/step state "
                         f"({type(e).__name__}: {e}); --no-resume starts over") from None
    return start


def _loader(run: RunConfig, paths: list[Path], out: Path, start: int, neighbours: np.ndarray | None,
            dist: D.DistInfo, bf16: bool, progress: bool) -> torch.utils.data.DataLoader:
    """The run's batches from step ``start`` on: its kNN table (mined by rank 0 or read back), its pairs
    (from the pair store when ``train.pair_cache`` is set, else made by the workers) and this rank's shards."""
    t = run.train
    if neighbours is None and t.knn_checkpoint:
        if dist.is_main:  # mines, or loads the table an earlier run (or :func:`prepare`) left
            neighbours = knn_table(t, paths, out, dist.device, bf16)
        D.barrier()
        if neighbours is None:  # the other ranks read what rank 0 wrote
            neighbours = load_table(neighbours_file(t.knn_checkpoint, paths, t.knn_k, knn_folder(t, out), bf16),
                                    len(paths), t.knn_k)
    dataset = pair_dataset(run, paths, neighbours)
    if t.pair_cache:  # the pairs of this run, computed once with every core, then read back
        folder = cache_folder(t.pair_cache, dataset)
        if dist.is_main:
            build_pair_cache(dataset, schedule_keys(t, len(dataset), start), t.pair_cache, progress=progress)
        D.barrier()
        dataset = CachedPairs(folder, len(dataset))
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=_StepBatches(run, len(dataset), start, dist), num_workers=t.workers,
        collate_fn=collate, pin_memory=dist.device.startswith("cuda"),
        worker_init_fn=worker_init if t.workers > 0 else None)


def _parallel(objective: nn.Module, t: TrainConfig, dist: D.DistInfo) -> nn.Module:
    """``objective`` itself on one process; under DDP, wrapped (with synchronised BatchNorm)."""
    if dist.world_size == 1:
        return objective
    D.sync_batchnorm(objective, dist.device)
    unused = t.kind == "matcher" and not t.w_copynce  # the matcher's token norm only feeds CopyNCE
    cuda = dist.device.startswith("cuda")
    return nn.parallel.DistributedDataParallel(objective, device_ids=[dist.local_rank] if cuda else None,
                                               find_unused_parameters=unused)


def _step(net: nn.Module, objective: nn.Module, optimizer: torch.optim.Optimizer, params: list, batches,
          amp, t: TrainConfig, step: int, lr: float, dist: D.DistInfo) -> dict[str, float]:
    """One optimiser step (``grad_accum`` micro-steps, clipping, AdamW); the step's metrics."""
    torch.manual_seed(_step_seed(t.seed, step, dist.rank))  # per-rank, per-step
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    tic = time.perf_counter()
    logged: dict[str, float] = {}
    n_pairs, wait = 0, 0.0
    for micro in range(t.grad_accum):
        with worker_errors():  # an unreadable image names its file, not a worker traceback
            t_wait = time.perf_counter()
            raw = next(batches)  # blocks only while no batch is ready: the loader's share of the step
            wait += time.perf_counter() - t_wait
            batch = _to_device(raw, dist.device)
        last = micro == t.grad_accum - 1
        sync = net.no_sync() if (net is not objective and not last) else contextlib.nullcontext()
        with sync:
            with amp:
                terms = net(batch)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"train: loss is {loss.item()} at step {step}")
            (loss / t.grad_accum).backward()
        n_pairs += batch["query"].shape[0] * dist.world_size
        for k, v in terms.items():
            if k != "loss":
                logged[k] = logged.get(k, 0.0) + float(v) / t.grad_accum
    clip = t.grad_clip if t.grad_clip > 0 else float("inf")
    grad_norm = float(nn.utils.clip_grad_norm_(params, clip))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - tic
    return {**logged, "lr": lr, "grad_norm": grad_norm, "pairs_per_s": n_pairs / max(elapsed, 1e-9),
            "data_wait_s": wait, "loader_share": min(1.0, wait / max(elapsed, 1e-9))}


class _Log:
    """Rank 0's DVCLive metrics (resumed from ``start``, trimmed to it) and progress bar."""

    def __init__(self, run: RunConfig, out: Path, start: int, dist: D.DistInfo, progress: bool):
        t = run.train
        self.t, self.live, self.gpu = t, None, GpuUtilisation(dist.device)
        if dist.is_main:
            from dvclive import Live

            live_dir = out / LIVE_DIR
            if start > 0:
                trim_live(live_dir, start)
            self.live = Live(dir=str(live_dir), resume=start > 0, save_dvc_exp=False, dvcyaml=None)
            self.live.log_params({"arm": run.arm, "seed": t.seed, "world_size": dist.world_size,
                                  "device": dist.device, "device_name": device_name(dist.device),
                                  **{f"train.{k}": portable(v) for k, v in to_dict(t).items() if v is not None}})
        self.bar = tqdm(total=t.steps, initial=start, desc=f"train {run.arm or t.kind}", unit="step",
                        disable=not (progress and dist.is_main))

    def step(self, done: int, metrics: dict[str, float]) -> None:
        live = self.live
        if live is not None and (done % self.t.log_every == 0 or done == self.t.steps):
            util = self.gpu.read()  # a driver query at the logging cadence: no stream synchronisation
            if util is not None:
                metrics["gpu_util"] = util
            if (why := self.gpu.take_reason()) is not None:
                live.log_param(UNAVAILABLE_PARAM, why)
            live.step = done
            for k, v in metrics.items():
                live.log_metric(f"train/{k}", v)
            live.next_step()
        self.bar.set_postfix({k: f"{metrics[k]:.3g}" for k in ("infonce", "bce", "copynce") if k in metrics},
                             refresh=False)  # drawn by update(), at most every mininterval s, not every step
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.live is not None:
            end_live(self.live)


STEP_SIGNAL = "DVCLIVE_STEP_COMPLETED"


def end_live(live) -> None:
    """``live.end()``, surviving DVCLive's race between runs side by side in one repository.

    Every run in a DVC repository writes the same signal file for the VS Code extension,
    ``.dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED``, at each step, and its ``end()`` removes it last,
    after checking that it exists: of two runs ending together, the second can find it gone
    (dvclive 3.41 to 3.49). That file is no output of the run, and ``end()`` has done all else
    by then, so only that error is let pass."""
    try:
        live.end()
    except FileNotFoundError as e:
        if Path(e.filename or "").name != STEP_SIGNAL:
            raise
