"""The committed trunk: the default run's start, trained once, outside the hour.

``reports/tables/starts.md`` compares the candidate starts of the fine-tuned arms: the default
trunk (InfoNCE + KoLeo from random init, ``arms.trunk``), the same objective trained ten times
longer, and a DINO of our own. The longer trunk wins, but its 3,000 steps take about 40 min on
2 cores, more than the default hour allows. So it is trained once, committed under ``weights/``,
and ``paths.trunk_start`` makes stage ``train_trunk`` copy it to ``models/trunk.pt`` instead of
training: ``dvc repro`` reads it as the paper reads DINO. Stage ``pretrain_trunk`` (frozen) and
``make pretrain-trunk`` re-create it:

    python -m icdlib.pipeline.trunk_start --params params.yaml --out weights/trunk10x_vit_tiny_cpu.safetensors

trains ``arms.trunk`` with ``--factor`` (10) times its steps and warm-up, exactly as
``experiments/starts.py`` trains its ``trunk10x`` start (:func:`trunk_start_params`), in
``paths.runs/trunk_start/`` (resumable), then writes beside the weights (an icdlib
safetensors checkpoint with its JSON sidecar): ``<stem>.record.json`` (commit, command,
profile, steps, seconds, the trunk's train settings, sha256 of the weights) and
``<stem>.curve.csv`` (its learning curve). ``--from RUN`` publishes a finished trunk run folder
instead of training one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from icdlib.atomic import write_bytes, write_json
from icdlib.checkpoints import load_model, save_checkpoint, sidecar
from icdlib.digest import file_sha256
from icdlib.params import load_params, run_commit
from icdlib.pipeline.arms import FACTOR, TRUNK, curve_path, longer_trunk, record_path
from icdlib.pipeline.stage import Stage
from icdlib.pipeline.training import dvclive_curve, train_arms

CURVE_METRICS = ("infonce", "koleo", "lr")


def subrun_params(params: dict, data: Path) -> dict:
    """A deep copy of ``params`` for runs in a folder of their own: every output folder relative to
    the copy's file, the benchmark already built at ``data``, and a trunk trained there
    (``paths.trunk_start: null``), whatever the original says."""
    p = json.loads(json.dumps(params))  # a deep copy of plain data
    p.setdefault("paths", {}).update({"data": str(data), "models": "models", "runs": "runs", "features": "features",
                                      "reports": "reports", "pair_cache": "runs/pairs", "trunk_start": None})
    p.setdefault("dataset", {})["build"] = False
    return p


def trunk_start_params(params: dict, data: Path, factor: int = FACTOR) -> dict:
    """:func:`subrun_params` whose trunk trains ``factor`` times its steps and warm-up, checkpointing
    every 100 steps."""
    p = subrun_params(params, data)
    p["arms"][TRUNK].setdefault("train", {}).update(longer_trunk(params, factor))
    return p


def train_trunk_start(params_file: str | Path, out: str | Path, factor: int = FACTOR, command: str = "",
                      progress: bool = True) -> Path:
    """Train the longer trunk in ``paths.runs/trunk_start/`` (resumable) and publish it to ``out``."""
    st = Stage(params_file)
    folder = st.path("runs", "trunk_start")
    folder.mkdir(parents=True, exist_ok=True)
    pfile = folder / "params.yaml"
    write_bytes(pfile, json.dumps(trunk_start_params(st.params, st.path("data").resolve(), factor), indent=1).encode())
    tic = time.perf_counter()
    train_arms(pfile, [TRUNK], progress)
    return publish(folder / "runs" / TRUNK, out, st.params, factor, command, time.perf_counter() - tic)


def portable(value: Any, root: Path) -> Any:
    """``value`` (a checkpoint's meta) with every path under ``root`` written relative to it: a
    committed file names no folder of the machine that made it."""
    prefix = str(Path(root).resolve()) + "/"

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [strip(x) for x in v]
        return v[len(prefix):] if isinstance(v, str) and v.startswith(prefix) else v

    return strip(value)


def last_value(column) -> float | None:
    """The last row of a curve's column, or None when the curve is empty or that row is blank."""
    return float(column.iloc[-1]) if len(column) and column.notna().iloc[-1] else None


def publish(run_dir: str | Path, out: str | Path, params: dict, factor: int, command: str = "",
            seconds: float | None = None) -> Path:
    """Write a finished trunk run's ``model.safetensors`` (and sidecar) to ``out``, its meta
    :func:`portable`, with its record and learning curve beside it."""
    run_dir, out = Path(run_dir), Path(out)
    weights = run_dir / "model.safetensors"
    if not weights.is_file() or not sidecar(weights).is_file():
        raise FileNotFoundError(f"{run_dir}: no finished trunk run (model.safetensors and model.json)")
    model, meta = load_model(weights, what="trunk run")
    if meta.get("kind") != "descriptor":
        raise ValueError(f"{weights}: holds a {meta.get('kind')!r} model, not the descriptor trunk")
    save_checkpoint(out, model, portable(meta, Path.cwd()))  # the same weights; a meta without this machine's paths
    logged = dvclive_curve(run_dir / "dvclive" / "plots" / "metrics")
    curve = logged.reindex(columns=["step", *(f"train/{m}" for m in CURVE_METRICS)])
    curve.columns = ["step", *CURVE_METRICS]
    write_bytes(curve_path(out), curve.to_csv(index=False, lineterminator="\n").encode())
    train = (meta.get("run") or {}).get("train") or {}
    write_json(record_path(out), {
        "what": "the committed trunk: arms.trunk trained factor times its steps (icdlib.pipeline.trunk_start)",
        "weights": out.name, "sha256": file_sha256(out), "factor": int(factor),
        "steps": train.get("steps"), "batch_size": train.get("batch_size"), "lr": train.get("lr"),
        "warmup_steps": train.get("warmup_steps"), "seed": train.get("seed"),
        "profile": params.get("profile", "default"), "commit": run_commit(Path.cwd()), "command": command,
        "seconds": None if seconds is None else round(float(seconds), 1), "curve": curve_path(out).name,
        "last_infonce": last_value(curve["infonce"]),
    })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icdlib.pipeline.trunk_start", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", required=True, help="weights file, *.safetensors")
    ap.add_argument("--factor", type=int, default=FACTOR, help="times the trunk's steps and warm-up (default 10)")
    ap.add_argument("--from", dest="run", type=Path, default=None,
                    help="publish this finished trunk run folder instead of training one")
    a = ap.parse_args(argv)
    if not str(a.out).endswith(".safetensors"):
        ap.error(f"--out {a.out}: expected a .safetensors file")
    if a.factor < 1:
        ap.error(f"--factor {a.factor}: must be 1 or more")
    command = "python -m icdlib.pipeline.trunk_start " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        if a.run is not None:
            out = publish(a.run, a.out, load_params(a.params), a.factor, command)
        else:
            out = train_trunk_start(a.params, a.out, a.factor, command)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(json.loads(record_path(out).read_text()), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
