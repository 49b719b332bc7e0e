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
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from icdlib.pipeline.stage import write_text  # noqa: E402
from icdlib.train.telemetry import live_series  # noqa: E402


def _notebooks(folder: Path) -> list[dict]:
    rows = []
    for nb in sorted(folder.glob("*.ipynb")):
        meta = json.loads(nb.read_text()).get("metadata", {}).get("papermill") or {}
        if not meta.get("start_time") or not meta.get("end_time"):
            raise SystemExit(f"run_record: {nb} has no papermill start/end time (not an executed notebook?)")
        rows.append({"name": nb.name, "start": datetime.fromisoformat(meta["start_time"]),
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


def render(root: Path, command: str, machine: str) -> str:
    params = yaml.safe_load((root / "params.yaml").read_text())
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    nbs = _notebooks(root / "reports" / "notebooks")
    wall = (nbs[-1]["end"] - nbs[0]["start"]).total_seconds()
    lines = [
        "# The run behind these reports",
        "",
        f"- command: `{command}` in a fresh clone, profile `{params.get('profile', 'default')}` of `params.yaml`, "
        f"seed {params.get('seed')}, main seeds {params.get('main', {}).get('seeds')}",
        f"- code: commit `{commit}`; the run is recorded stage by stage in `dvc.lock`",
        f"- machine: {machine}",
        f"- wall time from the first notebook's start to the last one's end: {int(wall // 60)} min {int(wall % 60)} s "
        f"(the data stage's build is inside the first notebook)",
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
    a = ap.parse_args(argv)
    root = Path(a.root)
    text = render(root, a.command, a.machine)
    out = Path(a.out) if a.out else root / "reports" / "RUN.md"
    write_text(out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
