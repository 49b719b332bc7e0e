"""Pure, precomputed training schedules: learning rate per step and data order per step.

Both are functions of the configuration and the step number alone, so a run resumed at
step ``t`` sees exactly the learning rates and samples an uninterrupted run would, and a
run on ``W`` processes consumes exactly the same global batches as a run on one.
"""

from __future__ import annotations

import math

import numpy as np


def lr_schedule(
    steps: int, lr: float, warmup_steps: int, min_lr: float, warmup_start: float = 0.01
) -> np.ndarray:
    """Linear warm-up then cosine decay, one value per optimiser step.

    For step ``t`` (0-based), with ``W = warmup_steps`` and ``T = steps``:

    - ``t < W``: ``lr * (warmup_start + (1 - warmup_start) * t / W)`` (starts at
      ``warmup_start * lr``, reaches ``lr`` at ``t = W``);
    - ``t >= W``: ``min_lr + (lr - min_lr) * (1 + cos(pi * (t - W) / (T - 1 - W))) / 2``,
      so step ``W`` runs at ``lr`` and the last step ``T - 1`` at exactly ``min_lr``
      (when ``T - 1 == W`` the single decay step runs at ``lr``).

    Args:
        steps: number of optimiser steps ``T`` (>= 1).
        lr: peak learning rate (> 0).
        warmup_steps: ``W``, 0 <= W < T.
        min_lr: final learning rate, 0 <= min_lr <= lr.
        warmup_start: first warm-up value as a fraction of ``lr``, in [0, 1].
    Returns:
        ``[T]`` float64 array of learning rates.
    """
    if int(steps) < 1:
        raise ValueError(f"lr_schedule: steps must be >= 1, got {steps}")
    if not lr > 0:
        raise ValueError(f"lr_schedule: lr must be > 0, got {lr}")
    if not 0 <= int(warmup_steps) < int(steps):
        raise ValueError(
            f"lr_schedule: warmup_steps must be in [0, steps={steps}), got {warmup_steps}"
        )
    if not 0 <= min_lr <= lr:
        raise ValueError(f"lr_schedule: min_lr must be in [0, lr={lr}], got {min_lr}")
    if not 0 <= warmup_start <= 1:
        raise ValueError(f"lr_schedule: warmup_start must be in [0, 1], got {warmup_start}")
    steps, warm = int(steps), int(warmup_steps)
    t = np.arange(steps, dtype=np.float64)
    out = np.empty(steps, dtype=np.float64)
    w = t[:warm]
    out[:warm] = lr * (warmup_start + (1.0 - warmup_start) * w / max(warm, 1))
    span = max(steps - 1 - warm, 1)
    progress = (t[warm:] - warm) / span
    out[warm:] = min_lr + (lr - min_lr) * 0.5 * (1.0 + np.cos(math.pi * progress))
    return out


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of ``range(n)`` used in ``epoch``: ``[n]`` int64, a pure function."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


def global_batch(seed: int, step: int, batch_size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Items of the global batch of optimiser step ``step``.

    The data stream is the concatenation of per-epoch permutations (``epoch_order``);
    step ``t`` takes stream positions ``[t * B, (t + 1) * B)``, crossing an epoch
    boundary when needed. Nothing depends on earlier steps, so resuming is exact.

    Args:
        seed: run seed.
        step: 0-based optimiser step.
        batch_size: global batch size ``B`` (items per optimiser step, all processes).
        n: dataset length (> 0).
    Returns:
        ``(indices, positions)``: two ``[B]`` int64 arrays, the dataset index of each
        item and its position in the stream (``position // n`` is its epoch; use it to
        draw fresh edits every epoch).
    """
    if n < 1:
        raise ValueError(f"global_batch: dataset is empty (n={n})")
    if batch_size < 1 or step < 0:
        raise ValueError(f"global_batch: need batch_size >= 1 and step >= 0, got {batch_size}, {step}")
    positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs = positions // n
    indices = np.empty_like(positions)
    for e in np.unique(epochs):
        sel = epochs == e
        indices[sel] = epoch_order(seed, int(e), n)[positions[sel] % n]
    return indices, positions


def shard(batch: np.ndarray, rank: int, world_size: int, accum: int, micro: int) -> np.ndarray:
    """The part of a global batch that process ``rank`` computes in micro-step ``micro``.

    The global batch ``[B]`` splits into ``accum`` consecutive micro-batches, each split
    into ``world_size`` consecutive shards, so every process sees ``B / (accum * W)``
    items and together they cover the batch exactly once.
    """
    b = len(batch)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard: rank {rank} not in [0, world_size={world_size})")
    if accum < 1 or not 0 <= micro < accum:
        raise ValueError(f"shard: micro-step {micro} not in [0, grad_accum={accum})")
    if b % (accum * world_size):
        raise ValueError(
            f"shard: batch_size {b} is not divisible by grad_accum * world_size = "
            f"{accum} * {world_size}"
        )
    per = b // (accum * world_size)
    start = (micro * world_size + rank) * per
    return batch[start : start + per]
