"""Does the data stage depend on the CPU? The benchmark built under each SIMD path -> reports/data/cpu_paths.json

    python experiments/cpu_paths.py [--training 300] [--reference 300] [--queries 600]

Two machines with the same package versions differ in which SIMD kernels NumPy, OpenCV and torch
dispatch to (AVX-512, AVX2, baseline SSE). Each library lets its dispatch be narrowed by an
environment variable, so one machine can stand in for older CPUs: this builds the same benchmark
(the default profile's generator and edit chains, seed 0, smaller counts) in a child process under
each setting, and compares every file's sha256 with the build on the full instruction set. Equal
bytes mean the data stage, for a fixed lock, gives the same benchmark on any x86 CPU these settings
stand for; a difference names the files and the setting. Training is another matter: bf16 autocast
on CPUs with bf16 units rounds differently from float32 elsewhere (``reports/RUN.md`` names the CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

NUMPY_AVX512 = "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
SETTINGS = {  # name -> environment of the child that builds
    "native": {},
    "numpy_avx2": {"NPY_DISABLE_CPU_FEATURES": NUMPY_AVX512},
    "opencv_avx2": {"OPENCV_CPU_DISABLE": "AVX512-SKX,AVX512-CLX"},  # OpenCV's own feature names
    "opencv_sse4": {"OPENCV_CPU_DISABLE": "AVX512-SKX,AVX512-CLX,AVX_VNNI,AVX2,FP16,AVX"},
    "torch_avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "torch_default": {"ATEN_CPU_CAPABILITY": "default"},
}
OUT = Path("reports") / "data" / "cpu_paths.json"
CHILD = """
import json, sys
import cv2, numpy, torch
from icdlib.data import BuildConfig, build_benchmark
cfg = BuildConfig(size="default", training={t}, reference={r}, dev_queries={q}, final_queries={q} // 4, workers=1)
build_benchmark(sys.argv[1], cfg, seed=0, progress=False)
feats = numpy._core._multiarray_umath.__cpu_features__  # OpenCV ids: 11 AVX2, 256 AVX512-SKX
print(json.dumps({{"numpy_avx512f": bool(feats.get("AVX512F")), "numpy_avx2": bool(feats.get("AVX2")),
                   "opencv_avx512": bool(cv2.checkHardwareSupport(256)),
                   "opencv_avx2": bool(cv2.checkHardwareSupport(11)),
                   "torch": torch.backends.cpu.get_cpu_capability()}}))
"""


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--training", type=int, default=300)
    ap.add_argument("--reference", type=int, default=300)
    ap.add_argument("--queries", type=int, default=600, help="dev queries (final: a quarter as many)")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    code = CHILD.format(t=a.training, r=a.reference, q=a.queries)
    names = [n for n in a.settings.split(",") if n]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"cpu_paths: unknown setting(s) {unknown}; known: {list(SETTINGS)}")
    builds, paths = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            root = Path(tmp) / name
            done = subprocess.run([sys.executable, "-c", code, str(root)], check=True, capture_output=True, text=True,
                                  env={**os.environ, **SETTINGS[name]})
            paths[name] = json.loads(done.stdout.strip().splitlines()[-1])  # the kernels the child dispatched to
            builds[name] = digests(root)
            print(f"{name}: {len(builds[name])} files", flush=True)
    base = builds[names[0]]
    result = {"counts": {"training": a.training, "reference": a.reference, "dev_queries": a.queries,
                         "final_queries": a.queries // 4},
              "settings": {n: SETTINGS[n] for n in names}, "dispatch": paths, "baseline": names[0],
              "files": len(base),
              "differs": {n: sorted(k for k in set(base) | set(d) if base.get(k) != d.get(k))
                          for n, d in builds.items()}}
    result["identical"] = {n: not diff for n, diff in result["differs"].items()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["identical"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
