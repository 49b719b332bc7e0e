"""The command line of ``python -m icdlib.train``: train a descriptor or matcher arm (see :mod:`icdlib.train.loop`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import yaml

from icdlib.params import load_params
from icdlib.train.loop import train
from icdlib.train.runs import arm_names, resolve_run


def _arms_help(argv: list[str] | None) -> str:
    """The ``--arm`` help: the arms of the params file named by ``--params`` (if readable)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--params", default="params.yaml")
    path = pre.parse_known_args(argv)[0].params
    try:
        names = arm_names(load_params(path), str(path))
    except (OSError, ValueError, yaml.YAMLError):
        names = []
    listed = f": {', '.join(names)}" if names else ""
    return f"named arm of the params file's 'arms' section{listed}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m icdlib.train",
        description="Train a descriptor or matcher arm (single process, or DDP under torchrun).",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--arm", default=None, help=_arms_help(argv))
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, model.pt, dvclive/)")
    p.add_argument("--data", default=None, help="DISC21-layout data root (default: params paths.data)")
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params key, e.g. --set train.steps=1000 (repeatable)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    args = p.parse_args(argv)
    try:
        params = load_params(args.params)
        sets = list(args.sets) + ([f"train.init={args.init}"] if args.init else [])
        run = resolve_run(params, args.arm, sets, source=str(args.params))
        if int(os.environ.get("RANK", "0")) == 0:
            for key, base, value in run.shadowed:  # arm keys win over their sections: say so
                print(f"arm {args.arm}: {key} = {value!r} (its section says {base!r})", file=sys.stderr)
            print(f"arm {args.arm or '(none)'}: {run.train.lr_source()}", flush=True)
        data = args.data
        if data is None:
            data = (params.get("paths") or {}).get("data")
            if data is None:
                raise ValueError(f"no data root: pass --data or set paths.data in {args.params}")
            data = Path(args.params).resolve().parent / data  # params paths are file-relative
        final = train(run, args.out, data_root=data, resume=not args.no_resume, device=args.device)
    except (ValueError, OSError) as e:  # OSError: a folder or file the system refuses
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)
    return 0
