"""What the training loop logs about the machine beside the losses: device and GPU utilisation.

The loader's share of step time needs no helper (the loop times its own ``next(batches)``);
GPU utilisation does: it is NVML's reading (``torch.cuda.utilization``, which needs the
``nvidia-ml-py`` package, a dependency of dvclive), the percentage of the last sample period (1/6 s to 1 s, by GPU)
in which a kernel ran. It is a query to the driver, not to the CUDA stream, so reading it
adds no synchronisation and cannot change what the run computes. Where it cannot be read
(a CPU run, no NVML, another vendor's driver) the run logs no ``train/gpu_util`` rows and
says why once, as the DVCLive param ``gpu_util_unavailable``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

UNAVAILABLE_PARAM = "gpu_util_unavailable"  # DVCLive param: why a run logged no train/gpu_util


def device_name(device: str) -> str:
    """The accelerator's name (``NVIDIA H200``) for a ``cuda[:N]`` device, else the device string."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return device


class GpuUtilisation:
    """Reads the utilisation of the GPU ``device`` trains on; gives up, saying why, at the first failure.

    :attr:`reason` is None while readings work; otherwise why none are taken (set at once on a
    non-CUDA device). :meth:`take_reason` hands that reason out once, for the run's log.
    """

    def __init__(self, device: str):
        self.device = device
        self.reason: str | None = None if device.startswith("cuda") else f"trained on {device}: no GPU to measure"
        self._told = False

    def read(self) -> float | None:
        """Percent utilisation now, or None (and :attr:`reason` set) when it cannot be read."""
        if self.reason is not None:
            return None
        try:
            return float(torch.cuda.utilization(torch.device(self.device)))
        except Exception as e:  # noqa: BLE001  an optional probe: NVML missing, driver or permission errors alike
            self.reason = (f"torch.cuda.utilization failed ({type(e).__name__}: {e}); "
                           "it needs the nvidia-ml-py package and an NVIDIA driver")
            print(f"train: not logging train/gpu_util: {self.reason}", file=sys.stderr)
            return None

    def take_reason(self) -> str | None:
        """:attr:`reason` the first time it is set, then None: the run records it once."""
        if self.reason is None or self._told:
            return None
        self._told = True
        return self.reason


def live_series(live: Path, metric: str):
    """DVCLive's ``train/<metric>`` rows of a run's ``dvclive/`` folder as a pandas Series indexed
    by step, or None when the run logged none (a metric it predates, ``gpu_util`` on a CPU)."""
    import pandas as pd  # the pipeline extra; the training loop itself never reads logs back

    f = Path(live) / "plots" / "metrics" / "train" / f"{metric}.tsv"
    if not f.is_file():
        return None
    df = pd.read_csv(f, sep="\t")
    if "step" not in df.columns or metric not in df.columns:
        raise ValueError(f"{f}: expected DVCLive columns 'step' and {metric!r}, got {list(df.columns)}")
    return df.set_index("step")[metric].astype(float).sort_index()
