"""What every benchmark build writes the same way: ids, seeds, the query plan, ground truth, markers.

Both builders, the embedded one (:mod:`icdlib.data.build`) and the one from a photo folder
(:mod:`icdlib.data.photo_bench`), write the DISC21 layout (:mod:`icdlib.data.disc21`)
through these functions, so their ids, seed streams, positive/distractor plans,
ground-truth CSVs and completion protocol agree:

* ids: ``T000000`` (training), ``R000000`` (reference), ``Q00000`` (query; final query
  ids continue after dev);
* seeds: one stream per role (:data:`ROLES`), each image's seed a pure function of
  ``(seed, role, index)`` (:func:`derive_seed`);
* completion: :func:`start_build` writes the in-progress marker first, :func:`finish_build`
  the manifest last (atomically) and removes the marker, so a folder with
  ``manifest.json`` and no marker is a complete build.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from icdlib.atomic import write_json
from icdlib.data.disc21 import BUILDING, SPLIT_DIRS

# seed streams: one per role, so roles never share a source
ROLES = {"training": 0, "reference": 1, "distractor": 2, "donor": 3, "edit": 4, "plan": 5}
ID_PREFIX = {"training": ("T", 6), "reference": ("R", 6), "query": ("Q", 5)}
SPLITS = ("training", "reference", "dev_queries", "final_queries")


def derive_seed(seed: int, role: str, index: int) -> int:
    """A 63-bit int seed for image ``index`` of ``role``, a pure function of its inputs."""
    ss = np.random.SeedSequence([int(seed), ROLES[role], int(index)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def image_id(kind: str, index: int) -> str:
    prefix, digits = ID_PREFIX[kind]
    return f"{prefix}{index:0{digits}d}"


def plan_split_queries(counts: dict[str, int], positive_rate: float, seed: int) -> list[tuple]:
    """Query tasks ``("query", index, split, reference_index | None, distractor_index | None)``.

    ``counts`` gives ``dev_queries``, ``final_queries`` and ``reference``. Each query split
    gets ``round(n * positive_rate)`` positives at random positions. Positives copy
    distinct references while there are enough, and reuse them otherwise; distractors are
    numbered 0, 1, ... in query order.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), ROLES["plan"]]))
    flags = []
    for split in ("dev_queries", "final_queries"):
        n = counts[split]
        pos = np.zeros(n, dtype=bool)
        pos[rng.permutation(n)[: int(round(n * positive_rate))]] = True
        flags += [(split, bool(p)) for p in pos]
    n_pos, n_ref = sum(p for _, p in flags), counts["reference"]
    refs = rng.permutation(n_ref)[:n_pos] if n_pos <= n_ref else rng.integers(0, n_ref, n_pos)
    tasks, r, d = [], 0, 0
    for q, (split, pos) in enumerate(flags):
        if pos:
            tasks.append(("query", q, split, int(refs[r]), None))
            r += 1
        else:
            tasks.append(("query", q, split, None, d))
            d += 1
    return tasks


def write_ground_truth(path: Path, rows: list[tuple[str, str | None]]) -> None:
    """Write a ground-truth CSV: header ``query_id,reference_id``, one row per query (empty: distractor)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["query_id", "reference_id"])
        for q, r in rows:
            w.writerow([q, r or ""])


def start_build(out_dir: str | Path, who: str) -> Path:
    """Make ``out_dir`` ready for a build and return it as a ``Path``.

    Refuses (``ValueError`` naming ``who`` and the folder) split folders with images but
    no manifest: icdlib did not build them. Then writes the in-progress marker
    (:data:`icdlib.data.disc21.BUILDING`), removes the old manifest and the split folders.
    """
    out = Path(out_dir)
    foreign = [SPLIT_DIRS[s] for s in SPLITS if (out / SPLIT_DIRS[s]).is_dir() and any((out / SPLIT_DIRS[s]).iterdir())]
    if foreign and not (out / "manifest.json").is_file() and not (out / BUILDING).exists():
        raise ValueError(
            f"{who}: {out} holds image folders ({', '.join(foreign)}) that icdlib did not "
            "build (no manifest.json); refusing to replace them, choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    # completion is marked last: the marker goes first, the manifest last (atomically)
    (out / BUILDING).write_text("icdlib data build in progress; rebuild if no process is writing here\n")
    (out / "manifest.json").unlink(missing_ok=True)
    for split in SPLITS:
        shutil.rmtree(out / SPLIT_DIRS[split], ignore_errors=True)
    return out


def finish_build(out: Path, manifest: dict) -> None:
    """Write ``manifest.json`` (sorted keys) atomically, then remove the in-progress marker."""
    write_json(out / "manifest.json", manifest, indent=1, sort_keys=True)
    (out / BUILDING).unlink()
