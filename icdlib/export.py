"""``python -m icdlib.export``: a descriptor or matcher as a deployable file.

::

    python -m icdlib.export CKPT --format safetensors|torchscript|onnx --out FILE [--num-heads H]

``CKPT`` is anything :func:`icdlib.checkpoints.load_model` reads: an icdlib checkpoint or
an official CopyNCE release file (``--num-heads`` only for those; default width / 64).

What each format holds (the model in eval mode, float32, on CPU):

- ``safetensors``: the weights (icdlib key names) and, in the file's string metadata,
  ``format`` (:data:`EXPORT_FORMAT`), ``kind``, ``config`` (JSON; rebuild with
  ``icdlib.models.build_descriptor(config)`` or ``build_matcher``), ``inputs``/``outputs``.
- ``torchscript``: a traced module for ``torch.jit.load``; the same metadata as JSON in the
  extra file ``icdlib.json``.
- ``onnx``: a graph for onnxruntime (opset :data:`OPSET`); metadata in the model's
  ``metadata_props``.

Signatures (batch dimension dynamic, input side fixed at the config's ``img_size``):
descriptor ``images [B, 3, S, S] -> descriptor [B, D]`` (unit L2 norm, compare by inner
product); matcher ``query, reference [B, 3, S, S] -> logits [B]`` (copy probability
``sigmoid(logits)``). Inputs are RGB, bicubic-resized to ``S x S``, scaled to [0, 1] and
normalised with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225),
as :func:`icdlib.models.preprocess` does.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import save_file
from torch import nn

from icdlib.checkpoints import load_model
from icdlib.params import to_dict

FORMATS = ("safetensors", "torchscript", "onnx")
EXPORT_FORMAT = "icdlib-export-1"
OPSET = 17


def signature(model: nn.Module) -> tuple[list[str], list[str]]:
    """``(input names, output names)`` of an exported descriptor or matcher."""
    if model.kind == "descriptor":
        return ["images"], ["descriptor"]
    return ["query", "reference"], ["logits"]


def export_metadata(model: nn.Module) -> dict[str, str]:
    """String metadata stored in every exported file (safetensors metadata is str -> str)."""
    cfg = model.config
    side = cfg.img_size
    inputs, outputs = signature(model)
    shapes = {
        "descriptor": f"descriptor [B, {getattr(cfg, 'desc_dim', 0)}] float32, unit L2 norm",
        "logits": "logits [B] float32, copy probability = sigmoid(logits)",
    }
    return {
        "format": EXPORT_FORMAT,
        "kind": model.kind,
        "config": json.dumps(to_dict(cfg), sort_keys=True),
        "inputs": ", ".join(f"{n} [B, 3, {side}, {side}] float32 RGB ImageNet-normalised" for n in inputs),
        "outputs": ", ".join(shapes[n] for n in outputs),
    }


def example_inputs(model: nn.Module, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Random inputs of the model's signature: ``[batch, 3, S, S]`` float32 each (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    side = model.config.img_size
    n = 1 if model.kind == "descriptor" else 2
    return tuple(torch.randn(batch, 3, side, side, generator=g) for _ in range(n))


def export_safetensors(model: nn.Module, out: str | Path) -> Path:
    """Weights plus :func:`export_metadata` in a safetensors file."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out), metadata=export_metadata(model))
    return Path(out)


@contextmanager
def _quiet_trace():
    """Silence the tracer's notes on shape checks, which only fire for a wrong input shape."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # torch marks TorchScript and the TorchScript-based ONNX exporter deprecated; both
        # still work, and the torch.export-based ONNX exporter needs onnxscript as well
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"icdlib\.export")
        yield


def export_torchscript(model: nn.Module, out: str | Path) -> Path:
    """A ``torch.jit.trace`` of ``model.forward``; load with ``torch.jit.load(out)``."""
    with _quiet_trace():
        traced = torch.jit.trace(model, example_inputs(model), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={"icdlib.json": json.dumps(export_metadata(model))})
    return Path(out)


def export_onnx(model: nn.Module, out: str | Path, opset: int = OPSET) -> Path:
    """An ONNX graph with a dynamic batch axis; metadata in ``metadata_props``."""
    import onnx  # optional dependency (pip install icdlib[export])

    inputs, outputs = signature(model)
    with _quiet_trace():
        torch.onnx.export(
            model,
            example_inputs(model),
            str(out),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
            opset_version=opset,
            dynamo=False,
        )
    graph = onnx.load(str(out))
    for key, value in export_metadata(model).items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(out))
    return Path(out)


EXPORTERS = {"safetensors": export_safetensors, "torchscript": export_torchscript, "onnx": export_onnx}


def export(checkpoint: str | Path, fmt: str, out: str | Path, *, num_heads: int | None = None) -> Path:
    """Load ``checkpoint`` (icdlib or official release) and write it to ``out`` as ``fmt``.

    Raises:
        ValueError: unknown format, or a checkpoint :func:`load_model` rejects.
        FileNotFoundError: no checkpoint at that path.
    """
    if fmt not in EXPORTERS:
        raise ValueError(f"export: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model, _ = load_model(checkpoint, num_heads=num_heads)
    model = model.float().eval()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        return EXPORTERS[fmt](model, out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icdlib.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="icdlib checkpoint or official CopyNCE release file")
    ap.add_argument("--format", required=True, choices=FORMATS, help="output format")
    ap.add_argument("--out", required=True, help="file to write")
    ap.add_argument("--num-heads", type=int, help="attention heads of a release file (default width/64)")
    args = ap.parse_args(argv)
    try:
        path = export(args.checkpoint, args.format, args.out, num_heads=args.num_heads)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"python -m icdlib.export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({args.format})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
