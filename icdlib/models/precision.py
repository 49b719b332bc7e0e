"""Mixed precision for the forward passes of training, evaluation and search.

bf16 autocast runs the ViT's matrix products in bfloat16: always on CUDA, and on a CPU where
the kind of processor makes it pay: AMX tiles (Intel Sapphire Rapids and later), or an AMD
processor with AVX512-BF16 (Zen 4 and later), on which bf16 autocast ran a training step 1.2x
to 1.8x faster than float32 (two hosts, each side by side). AVX512-BF16 on an Intel processor
without AMX is not enough: on such a Xeon virtual machine oneDNN's bf16 kernels, with
autocast's casts, ran a training step at 0.55x the speed of float32. A timing cannot make the
choice: the same Xeon ran a ViT-sized probe product at 0.55x idle and 1.8x under load, so a
probe flipped between the processes of one run, and their numbers rounded differently. The
choice is therefore made from the hardware alone, the same in every process of a run and on
every machine of a kind; :func:`probe_cpu_matmul` stays as a diagnostic that benchmarks record
beside it.
"""

from __future__ import annotations

import contextlib
import functools
import time

import torch

PROBE_SHAPE = (1600, 192, 768)  # tokens x width x MLP width: one ViT-tiny MLP product of a 32-image batch


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later), whose bf16 matrix
    products run well ahead of float32."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def cpu_vendor() -> str:
    """The CPU's vendor id (``AuthenticAMD``, ``GenuineIntel``; ``""`` where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (oneDNN: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def probe_cpu_matmul(shape: tuple[int, int, int] = PROBE_SHAPE, rounds: int = 4, reps: int = 2) -> dict[str, float]:
    """Seconds of one linear layer's forward on this CPU, float32 and under bf16 autocast (a
    diagnostic for benchmarks, never a switch):
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


@functools.lru_cache(maxsize=None)
def cpu_precision() -> dict[str, object]:
    """This machine's choice for CPU forwards: ``{"bf16": bool, "why": str}``, from the hardware
    alone (no timing), so every process of a run makes the same one."""
    if not cpu_has_bf16():
        return {"bf16": False, "why": "no bf16 units"}
    if cpu_has_amx():
        return {"bf16": True, "why": "AMX tiles"}
    if cpu_vendor() == "AuthenticAMD":
        return {"bf16": True,
                "why": "AMD with AVX512-BF16: bf16 autocast measured 1.2x-1.8x float32 in a training step (two hosts)"}
    return {"bf16": False, "why": "AVX512-BF16 without AMX on this vendor: bf16 autocast measured 0.55x float32"}


def cpu_bf16() -> bool:
    """Whether CPU forwards run under bf16 autocast here (:func:`cpu_precision`)."""
    return bool(cpu_precision()["bf16"])


def bf16_enabled(device: str | torch.device, cuda: bool = True, cpu: bool = True) -> bool:
    """Whether bf16 autocast applies on ``device``: ``cuda`` there; ``cpu`` where :func:`cpu_bf16`."""
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
