"""Rewrite each dvc.yaml stage's ``icdlib/`` deps to exactly the code its notebooks run.

Run after changing what a pipeline module imports (``make deps``);
``tests/test_pipeline.py`` fails until the deps match.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_pipeline as tp  # noqa: E402


def stage_body(name: str) -> dict:
    body = tp.DVC["stages"][name]
    if "foreach" not in body:
        return body
    items = body["foreach"]
    key, item = next(iter(items.items() if isinstance(items, dict) else ((i, i) for i in items)))
    return tp._expand(body["do"], key, item)


def main() -> int:
    path = ROOT / "dvc.yaml"
    out, current, written = [], None, False
    for line in path.read_text().split("\n"):
        m = re.match(r"^  ([a-z_]+):\s*$", line)
        if m and m.group(1) in tp.DVC["stages"]:
            current, written = m.group(1), False
        dep = re.match(r"^(\s*)- icdlib/\S+\.py\s*$", line)
        if dep:
            if not written:
                out += [f"{dep.group(1)}- {f}" for f in sorted(tp.stage_code(stage_body(current)))]
                written = True
            continue
        out.append(line)
    path.write_text("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
