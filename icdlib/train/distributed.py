"""Process-group set-up and the few collectives the training loop needs.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them and starts NCCL on CUDA or gloo on
CPU. Without them everything runs as a single process (rank 0 of 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, GPU ``local_rank``, ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None, backend: str | None = None) -> DistInfo:
    """Join the process group described by the torchrun environment, if any.

    Args:
        device: "cpu", "cuda" or None (CUDA when available). Under DDP on CUDA each
            process uses GPU ``LOCAL_RANK``.
        backend: process-group backend; default NCCL on CUDA, gloo on CPU.
    Returns:
        A :class:`DistInfo`. A group that is already initialised is reused.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"init_distributed: device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("init_distributed: device 'cuda' requested but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return DistInfo(device="cuda:0" if device == "cuda" else "cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device == "cuda" else "gloo"))
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local,
        device=f"cuda:{local}" if device == "cuda" else "cpu",
    )


def active() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of ``value`` over all processes (a no-grad copy; identity when single)."""
    out = value.detach().clone()
    if active():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


class _GatherSum(torch.autograd.Function):
    """All-gather forward; backward sums every process's gradient into its own slice."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x [b, ...]`` of every process in rank order -> ``[W * b, ...]``.

    Differentiable end to end: the gradient each process computes for any slice is
    summed back into the process that owns it. Consequently a loss computed on the
    gathered tensor identically by all W processes yields, after DDP's gradient
    averaging, exactly the gradient of that loss in a single process (each owner gets
    ``W`` copies of its gradient, averaging divides by ``W``). Works with any backend
    (one all-gather, one all-reduce). Identity when single-process.
    """
    if not active():
        return x
    return _GatherSum.apply(x)


class GatheredBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics cover the batch of every process.

    The CPU counterpart of ``torch.nn.SyncBatchNorm`` (which needs a GPU): local inputs
    ``[b, C]`` are gathered with :func:`gather`, normalised with the global mean and
    (biased) variance, and the local slice is returned. Every process must pass the
    same ``b``. Running statistics update identically on every process.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        full = gather(x)
        out = F.batch_norm(
            full,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            True,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        b = x.shape[0]
        rank = dist.get_rank()
        return out[rank * b : (rank + 1) * b]


def sync_batchnorm(module: nn.Module, device: str) -> nn.Module:
    """Make every ``BatchNorm1d`` use global-batch statistics under DDP.

    CUDA: ``torch.nn.SyncBatchNorm``. CPU: :class:`GatheredBatchNorm1d` (state dicts
    are unchanged, so checkpoints stay loadable by the plain model). Single process:
    the module is returned as is.
    """
    if not active():
        return module
    if device.startswith("cuda"):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            new = GatheredBatchNorm1d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            sync_batchnorm(child, device)
    return module
