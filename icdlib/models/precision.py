"""Mixed precision for the forward passes of training, evaluation and search.

bf16 autocast runs the ViT's matrix products in bfloat16: always on CUDA, and on a CPU
only where the processor has bf16 units (oneDNN: AVX512-BF16 or AMX), since emulated
bf16 is slower than float32 there.
"""

from __future__ import annotations

import contextlib

import torch


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (oneDNN: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_enabled(device: str | torch.device, cuda: bool = True, cpu: bool = True) -> bool:
    """Whether bf16 autocast applies on ``device``: ``cuda`` there, ``cpu`` with bf16 units."""
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(cuda)
    return kind == "cpu" and bool(cpu) and cpu_has_bf16()


def autocast(device: str | torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled`` and :func:`bf16_enabled`, else nothing."""
    kind = torch.device(device).type
    if enabled and bf16_enabled(device):
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()
