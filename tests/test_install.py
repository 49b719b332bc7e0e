"""Install behaviour: the core library imports without its extras, a missing PDQ package is
reported instead of crashing, and the declared minimums, constraints-min.txt,
environment.yml and the built wheel agree with each other."""

import math
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from icdlib.eval import hashes
from icdlib.eval.cli import main as evaluate_main
from icdlib.pipeline.orderings import prediction_sets
from icdlib.pipeline.report import _main_rows, table_frame, to_markdown

ROOT = Path(__file__).resolve().parents[1]

# Packages of the [pipeline], [viz] and [hashes] extras (import names).
OPTIONAL = ["dvc", "dvclive", "papermill", "jupyterlab", "ipykernel", "nbmake", "ruamel", "nbformat",
            "plotly", "ipywidgets", "anywidget", "IPython", "pdqhash", "imagehash"]
CORE_MODULES = ["icdlib.edits", "icdlib.pixtrace", "icdlib.models", "icdlib.losses", "icdlib.eval.metrics",
                "icdlib.eval.retrieval", "icdlib.data", "icdlib.checkpoints", "icdlib.eval.engine",
                "icdlib.evaluate", "icdlib.metrics"]

BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))

class Blocker(importlib.abc.MetaPathFinder):
    # as if the optional packages were not installed
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Blocker())
"""


def _run_without(blocked, body):
    code = BLOCKER + body
    return subprocess.run([sys.executable, "-c", code, ",".join(blocked)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_core_modules_import_without_any_extra():
    body = f"""
import importlib
for m in {CORE_MODULES!r}:
    importlib.import_module(m)
from icdlib.eval.hashes import missing_reason
print(missing_reason("pdq"))
print(missing_reason("phash"))
leaked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
print("leaked", leaked)
"""
    r = _run_without(OPTIONAL, body)
    assert r.returncode == 0, r.stderr
    pdq, phash, leaked = r.stdout.strip().splitlines()[-3:]
    assert pdq.startswith("PDQ needs the pdqhash package") and "C++ compiler" in pdq
    assert "pip install 'icdlib[hashes]'" in pdq
    assert phash.startswith("pHash needs the imagehash package")
    assert leaked == "leaked []"


def test_blocker_really_blocks():
    # the check above would pass vacuously if the blocker let imports through
    r = _run_without(["numpy"], "import icdlib.pixtrace\n")
    assert r.returncode != 0 and "No module named 'numpy'" in r.stderr


@pytest.fixture
def no_pdqhash(monkeypatch):
    monkeypatch.setitem(sys.modules, "pdqhash", None)  # `import pdqhash` now raises ImportError


def test_pdq_without_its_package_raises_a_clear_error(no_pdqhash):
    assert "pdqhash" in hashes.missing_reason("pdq")
    im = Image.new("RGB", (32, 32), (10, 20, 30))
    with pytest.raises(hashes.HashUnavailable, match=r"PDQ needs the pdqhash package.*icdlib\[hashes\]"):
        hashes.hash_images([im], "pdq")
    with pytest.raises(hashes.HashUnavailable, match="pdqhash"):
        hashes.hash_files([Path("never-read.png")], "pdq")  # fails before opening any file


def test_pdq_baseline_cli_without_pdqhash_exits_2_naming_the_package(no_pdqhash, tmp_path, capsys):
    data = tmp_path / "bench"
    (data / "reference_images").mkdir(parents=True)
    (data / "query_images").mkdir()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(data / "reference_images" / "R000.png")
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(data / "query_images" / "Q000.png")
    assert evaluate_main(["--data", str(data), "--baseline", "pdq", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: PDQ needs the pdqhash package") and "Traceback" not in err


def _result(pdq_row):
    m = lambda u, name: {"metrics": {"uAP": u, "RP90": u / 2, "mAP": u}, "predictions": name}  # noqa: E731
    rows = {"PDQ": {"table": "descriptor", "seed": 0, "config": "c0", **pdq_row},
            "pHash": {"table": "descriptor", "seed": 0, "config": "c1", "plain": m(0.2, "phash.csv")}}
    for label, u in (("InfoNCE descriptor", 0.5), ("CopyNCE descriptor", 0.6)):
        rows[label] = {"table": "descriptor", "seed": 0, "config": "c", "plain": m(u, f"{label}.csv"),
                       "sn": m(u + 0.1, f"{label} sn.csv")}
    return {"rows": rows}


def test_missing_pdq_row_is_listed_with_its_reason_and_ignored_by_the_orderings():
    res = _result({"missing": "PDQ needs the pdqhash package"})
    desc = table_frame(_main_rows(res, "descriptor"), "descriptor")
    pdq = desc.set_index("method").loc["PDQ"]
    assert math.isnan(pdq["uAP"]) and pdq["missing"] == "PDQ needs the pdqhash package"
    md = to_markdown(desc, "t")
    assert "| PDQ (not run: PDQ needs the pdqhash package) |" in md
    sets = prediction_sets(res, {"arms": {}})
    assert "PDQ" not in sets and sets["pHash"] == {None: "phash.csv"}  # the best hash is chosen among those that ran


def test_no_hash_that_ran_leaves_the_hash_claim_missing(tmp_path):
    from icdlib.pipeline.orderings import orderings_frame

    res = _result({"missing": "x"})
    res["rows"]["pHash"] = {"table": "descriptor", "seed": 0, "config": "c1", "missing": "y"}
    sets = prediction_sets(res, {"arms": {}})
    assert not {"PDQ", "pHash"} & set(sets)
    (tmp_path / "gt.csv").write_text("query_id,reference_id\nQ0,R0\n")
    for name in ("InfoNCE descriptor", "CopyNCE descriptor", "InfoNCE descriptor sn", "CopyNCE descriptor sn"):
        (tmp_path / f"{name}.csv").write_text("query_id,reference_id,score\nQ0,R0,0.5\n")
    df = orderings_frame(sets, tmp_path / "gt.csv", lambda p: tmp_path / p, n_boot=100).set_index("claim")
    assert df.loc["infonce>best_hash", "verdict"] == "missing"


def _pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


REQ = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([0-9][0-9A-Za-z.]*)$")


def _declared():
    """name -> minimum for the core dependencies and every extra except the browser test's."""
    p = _pyproject()["project"]
    reqs = list(p["dependencies"])
    for extra, items in p["optional-dependencies"].items():
        if extra != "browser":
            reqs += [r for r in items if not r.startswith("icdlib[")]
    out = {}
    for r in reqs:
        m = REQ.match(r)
        assert m, f"pyproject.toml: {r!r} is not of the form NAME>=VERSION"
        out[m.group(1).lower()] = m.group(3)
    return out


def _release(v):
    """Version as a comparable tuple with trailing zeros dropped (1.9 == 1.9.0)."""
    parts = [int(x) if x.isdigit() else x for x in re.split(r"[.]", v)]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def test_constraints_min_pins_exactly_the_declared_minimums():
    pins = {}
    for line in (ROOT / "constraints-min.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    declared = _declared()
    assert set(pins) == set(declared), f"constraints-min.txt vs pyproject.toml: {set(pins) ^ set(declared)}"
    for name, low in declared.items():
        assert _release(pins[name]) == _release(low), f"{name}: pinned {pins[name]}, declared >={low}"


# conda-forge names where they differ from PyPI's
CONDA_NAMES = {"torch": "pytorch", "opencv-python-headless": "py-opencv"}
# PyPI versions with a 4th, wheel-packaging number that conda-forge's versions lack: compare the first 3
CONDA_RELEASE_PARTS = {"opencv-python-headless": 3}


def test_environment_yml_uses_conda_forge_only_and_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?", dep)
        conda[m.group(1).lower()] = m.group(2)
    pip_mins = {REQ.match(r).group(1).lower(): REQ.match(r).group(3) for r in pip if REQ.match(r)}
    for name, low in _declared().items():
        cname = CONDA_NAMES.get(name, name)
        found = conda.get(cname, pip_mins.get(name))
        assert found is not None, f"environment.yml: {name} (declared >={low} in pyproject.toml) is missing"
        n = CONDA_RELEASE_PARTS.get(name)
        f, lo = (".".join(v.split(".")[:n]) for v in (found, low))
        assert _release(f) == _release(lo), f"environment.yml: {name}>={found}, pyproject.toml: >={low}"
    assert "pip install --no-deps -e ." in (ROOT / "environment.yml").read_text()  # icdlib itself, last


@pytest.mark.slow
def test_wheel_ships_every_subpackage_and_the_license(tmp_path):
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the working tree
    shutil.copytree(ROOT / "icdlib", src / "icdlib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "setuptools" in r.stderr:
        pytest.skip(f"no setuptools>=77 in this environment to build with: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("icdlib-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(str(p.parent.relative_to(ROOT)) for p in (ROOT / "icdlib").rglob("__init__.py"))
    assert len(packages) > 5
    for pkg in packages:
        assert f"{pkg}/__init__.py" in names, f"wheel {wheel.name} lacks {pkg}"
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: MIT" in text
    assert not any("dvc" in line or "plotly" in line or "pdqhash" in line
                   for line in text.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not an exact pin"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_lock_pins_every_declared_dependency_at_or_above_its_minimum_and_setup_installs_from_it():
    pins = _pins(ROOT / "requirements-lock.txt")
    for name, low in _declared().items():
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key == "pdqhash" and key not in pins:  # needs a C++ compiler; the lock's machine may have lacked one
            continue
        assert key in pins, f"requirements-lock.txt: {name} (declared >={low}) is not pinned"
        got = re.match(r"[0-9.]+", pins[key]).group(0).rstrip(".")
        assert _release(got) >= _release(low), f"requirements-lock.txt: {name}=={pins[key]} is below >={low}"
    make = (ROOT / "Makefile").read_text()
    rule = make.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    assert "$(LOCK)" in rule.splitlines()[0] and "-c $(LOCK)" in rule  # rebuilt when the lock changes, installs from it
    assert "LOCK ?= requirements-lock.txt" in make and "repro-latest:" in make
