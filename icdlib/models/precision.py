"""Mixed precision for the forward passes of training, evaluation and search.

bf16 autocast runs the ViT's matrix products in bfloat16: always on CUDA, and on a CPU
only where it pays: the processor has bf16 units (oneDNN: AVX512-BF16 or AMX) *and* a
short probe of a ViT-sized matrix product runs faster under bf16 autocast than in float32.
Having the units is not enough: on some CPUs that report AVX512-BF16 (virtual machines
without AMX among them) oneDNN's bf16 kernels, with autocast's casts, run at half the
speed of float32, while on others they run nearly twice as fast.
"""

from __future__ import annotations

import contextlib
import functools
import time

import torch

# bf16 must be at least this much faster than float32 to be chosen: a CPU near parity keeps
# float32, whose rounding does not depend on the processor's kernels
BF16_MARGIN = 0.85
PROBE_SHAPE = (1600, 192, 768)  # tokens x width x MLP width: one ViT-tiny MLP product of a 32-image batch


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (oneDNN: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def probe_cpu_matmul(shape: tuple[int, int, int] = PROBE_SHAPE, rounds: int = 4, reps: int = 2) -> dict[str, float]:
    """Seconds of one linear layer's forward on this CPU, float32 and under bf16 autocast:
    the best of ``rounds`` alternating rounds of ``reps`` calls each (alternating, so that a
    load that comes and goes meets both precisions)."""
    n, k, m = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, k, generator=gen)
    lin = torch.nn.Linear(k, m)
    best = {"float32": float("inf"), "bf16": float("inf")}
    with torch.no_grad():
        for precision in ("float32", "bf16"):  # warm-up: oneDNN builds its kernels on the first call
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                lin(x)
        for _ in range(rounds):
            for precision in best:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    tic = time.perf_counter()
                    for _ in range(reps):
                        lin(x)
                    best[precision] = min(best[precision], (time.perf_counter() - tic) / reps)
    return best


def bf16_pays(seconds: dict[str, float], margin: float = BF16_MARGIN) -> bool:
    """Whether probe times (:func:`probe_cpu_matmul`) favour bf16 by at least ``margin``."""
    return seconds["bf16"] < margin * seconds["float32"]


@functools.lru_cache(maxsize=None)
def cpu_precision() -> dict[str, object]:
    """This process's choice for CPU forwards: ``{"bf16": bool, "why": str, "seconds": {...}}``
    (probed once per process, and only on a CPU with bf16 units)."""
    if not cpu_has_bf16():
        return {"bf16": False, "why": "no bf16 units", "seconds": {}}
    seconds = probe_cpu_matmul()
    ratio = seconds["float32"] / seconds["bf16"]
    faster = bf16_pays(seconds)
    why = f"bf16 autocast {ratio:.2f}x the speed of float32 in a {'x'.join(map(str, PROBE_SHAPE))} product"
    return {"bf16": faster, "why": why, "seconds": seconds}


def cpu_bf16() -> bool:
    """Whether CPU forwards run under bf16 autocast here: bf16 units, and faster (:func:`cpu_precision`)."""
    return bool(cpu_precision()["bf16"])


def bf16_enabled(device: str | torch.device, cuda: bool = True, cpu: bool = True) -> bool:
    """Whether bf16 autocast applies on ``device``: ``cuda`` there; ``cpu`` where it pays (:func:`cpu_bf16`)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(cuda)
    return kind == "cpu" and bool(cpu) and cpu_bf16()


def describe(device: str | torch.device, cuda: bool = True, cpu: bool = True) -> str:
    """One line on the precision forwards run in on ``device``, and why (for logs and run records)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16 autocast (CUDA)" if cuda else "float32 (CUDA, amp off)"
    if not cpu:
        return "float32 (bf16 autocast off in params)"
    choice = cpu_precision()
    return f"{'bf16 autocast' if choice['bf16'] else 'float32'} ({choice['why']})"


def autocast(device: str | torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled`` and :func:`bf16_enabled`, else nothing."""
    kind = torch.device(device).type
    if enabled and bf16_enabled(device):
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()
