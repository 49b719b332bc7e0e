"""Write ``reports/RUN.md``: what made the committed reports, and how long each part took.

Run it in the folder where ``dvc repro`` ran, after the run::

    python tools/run_record.py --command "make repro" --machine "2 CPU cores, no GPU"

It reads only what the run left behind: the executed notebooks' papermill metadata
(start, end, duration), the training runs' DVCLive logs (``runs/*/dvclive``: median
``train/pairs_per_s`` and, where logged, ``train/loader_share``), ``params.yaml`` (profile
and seeds) and git (the commit).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from icdlib.models.precision import describe  # noqa: E402
from icdlib.pipeline.stage import write_text  # noqa: E402
from icdlib.train.telemetry import live_series  # noqa: E402


def _rerun(root: Path, nb: Path) -> bool:
    """Whether this run executed ``nb``: a stage DVC skipped leaves its notebook as committed."""
    rel = str(nb.relative_to(root))
    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", rel],
                            capture_output=True, text=True, check=True).stdout
    return bool(status.strip())


def _notebooks(folder: Path) -> list[dict]:
    rows = []
    for nb in sorted(folder.glob("*.ipynb")):
        meta = json.loads(nb.read_text()).get("metadata", {}).get("papermill") or {}
        if not meta.get("start_time") or not meta.get("end_time"):
            raise SystemExit(f"run_record: {nb} has no papermill start/end time (not an executed notebook?)")
        rows.append({"name": nb.name, "path": nb, "start": datetime.fromisoformat(meta["start_time"]),
                     "end": datetime.fromisoformat(meta["end_time"]), "duration": float(meta["duration"])})
    if not rows:
        raise SystemExit(f"run_record: no executed notebooks in {folder}")
    return sorted(rows, key=lambda r: r["start"])


def _throughput(runs: Path) -> list[dict]:
    out = []
    for live in sorted(runs.glob("**/dvclive")):
        pps = live_series(live, "pairs_per_s")
        if pps is None or len(pps) < 2:
            continue
        share = live_series(live, "loader_share")
        out.append({"run": str(live.parent.relative_to(runs)),
                    "pairs_per_s": float(pps.iloc[1:].median()),  # the first logged step includes start-up
                    "loader_share": None if share is None else float(share.mean())})
    return out


def cpu_model() -> str:
    """The CPU's model name and its bf16 units (which kernels bf16 autocast gets, hence its rounding)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown CPU")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    units = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return f"{name} ({', '.join(units) if units else 'no bf16 units'})"


KEY_PACKAGES = ("torch", "numpy", "pillow", "opencv-python-headless", "timm", "faiss-cpu", "scipy", "numba",
                "scikit-image", "lightly", "pdqhash", "imagehash")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def versions(lock: Path) -> list[str]:
    """Lines naming Python, the key packages' installed versions and how the install compares with ``lock``."""
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    keys = ", ".join(f"{k} {installed[k]}" for k in KEY_PACKAGES if k in installed)
    lines = [f"- Python {platform.python_version()}; {keys}"]
    if lock.is_file():
        pins = {}
        for ln in lock.read_text().splitlines():
            ln = ln.split("#", 1)[0].strip()
            if "==" in ln:
                name, version = ln.split("==", 1)
                pins[_norm(name)] = version
        off = sorted(f"{k} {installed.get(k, 'missing')} (lock {v})" for k, v in pins.items() if installed.get(k) != v)
        lines.append(f"- every package as pinned in `{lock.name}`" if not off else
                     f"- differs from `{lock.name}`: {', '.join(off)}")
    return lines


def render(root: Path, command: str, machine: str, clone_seconds: float | None = None) -> str:
    params = yaml.safe_load((root / "params.yaml").read_text())
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    every = _notebooks(root / "reports" / "notebooks")
    nbs = [r for r in every if _rerun(root, r["path"])]
    skipped = [r["name"] for r in every if r not in nbs]
    if not nbs:
        raise SystemExit(f"run_record: no notebook under {root}/reports/notebooks differs from the commit: nothing ran")
    wall = (nbs[-1]["end"] - nbs[0]["start"]).total_seconds()
    lines = [
        "# The run behind these reports",
        "",
        f"- command: `{command}` in a fresh clone, profile `{params.get('profile', 'default')}` of `params.yaml`, "
        f"seed {params.get('seed')}, main seeds {params.get('main', {}).get('seeds')}",
        f"- code: commit `{commit}`; the run is recorded stage by stage in `dvc.lock`",
        f"- machine: {machine}; CPU: {cpu_model()}",
        f"- precision of the CPU forwards (train.amp_cpu, eval.amp): {describe('cpu')}",
        *versions(root / "requirements-lock.txt"),
        f"- wall time from the first notebook's start to the last one's end: {int(wall // 60)} min {int(wall % 60)} s "
        f"(the data stage's build is inside the first notebook)",
        *([f"- `git clone` to updated `dvc.lock`: {clone_seconds / 60:.1f} min ({clone_seconds:,.0f} s), "
           f"including the `.venv` setup"] if clone_seconds is not None else []),
        *([f"- not re-run, their committed outputs being up to date for this code: "
           f"{', '.join(f'`{n}`' for n in skipped)}"] if skipped else []),
        "",
        "Minutes per executed notebook (papermill's own duration; DVC's work between stages is not in it):",
        "",
        "| notebook | started | min |",
        "|---|---|---|",
    ]
    lines += [f"| `{r['name']}` | {r['start']:%H:%M:%S} | {r['duration'] / 60:.1f} |" for r in nbs]
    rows = _throughput(root / params.get("paths", {}).get("runs", "runs"))
    if rows:
        lines += ["", "Training throughput per run (median DVCLive `train/pairs_per_s` after the first logged step; "
                  "loader share = mean share of step time spent waiting for a batch, where logged):", "",
                  "| run | pairs/s | loader share |", "|---|---|---|"]
        lines += [f"| `{r['run']}` | {r['pairs_per_s']:.1f} | "
                  f"{'' if r['loader_share'] is None else format(r['loader_share'], '.2f')} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=".", help="the folder where dvc repro ran")
    ap.add_argument("--command", default="make repro")
    ap.add_argument("--machine", default="2 CPU cores, no GPU, nothing else running")
    ap.add_argument("--out", default=None, help="default: ROOT/reports/RUN.md")
    ap.add_argument("--clone-seconds", type=float, default=None,
                    help="seconds from `git clone` to the updated dvc.lock, where the caller timed it")
    a = ap.parse_args(argv)
    root = Path(a.root)
    text = render(root, a.command, a.machine, a.clone_seconds)
    out = Path(a.out) if a.out else root / "reports" / "RUN.md"
    write_text(out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
