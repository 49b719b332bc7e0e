"""dvc.yaml, params.yaml, profiles and notebooks agree with each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from _imports import closure, imported_modules, source_file
from icdlib.params import has_key, load_params, lookup
from icdlib.pipeline.profile import apply_profile

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _stage_params(stage: dict) -> list[str]:
    keys = []
    for entry in stage.get("params", []):
        if isinstance(entry, dict):  # {other_file.yaml: [keys]}
            for v in entry.values():
                keys += list(v)
        else:
            keys.append(entry)
    return keys


def _expand(body, key: str, item) -> dict:
    """A foreach stage body with ``${key}``/``${item}``/``${item.x}`` substituted."""
    text = yaml.safe_dump(body)
    text = text.replace("${key}", str(key))
    if isinstance(item, dict):
        for k, v in item.items():
            text = text.replace(f"${{item.{k}}}", str(v))
    else:
        text = text.replace("${item}", str(item))
    return yaml.safe_load(text)


def _stages():
    """(name, body) of every stage, foreach stages expanded per item."""
    for name, stage in DVC["stages"].items():
        if "foreach" not in stage:
            yield name, stage
            continue
        items = stage["foreach"]
        pairs = items.items() if isinstance(items, dict) else ((i, i) for i in items)
        for key, item in pairs:
            yield f"{name}@{key}", _expand(stage["do"], key, item)


def _notebooks_run(cmd: str) -> list[str]:
    """Input notebooks of a papermill command (the output path sits under reports/)."""
    return re.findall(r"(?:^|\s)(notebooks/\S+\.ipynb)", cmd)


def test_every_param_a_stage_names_exists_in_params_yaml():
    missing = [(n, k) for n, s in _stages() for k in _stage_params(s) if not has_key(PARAMS, k)]
    assert not missing, f"stages name params that params.yaml lacks: {missing}"


def test_every_templated_variable_in_dvc_yaml_exists_in_params_yaml():
    text = (ROOT / "dvc.yaml").read_text()
    names = set(re.findall(r"\$\{([^}]+)\}", text))
    names = {n.strip() for n in names if not n.strip().startswith(("item", "key"))}
    missing = sorted(n for n in names if not has_key(PARAMS, n))
    assert not missing, f"dvc.yaml uses ${{...}} variables missing from params.yaml: {missing}"


def test_every_notebook_is_a_stage_and_exists():
    run = {nb for _, s in _stages() for nb in _notebooks_run(str(s.get("cmd", "")))}
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.name}" in run, f"{nb.name} is not run by any dvc.yaml stage"
    for nb in run:
        assert (ROOT / nb).is_file(), f"a stage runs missing notebook {nb}"


def test_each_stage_depends_on_its_notebook():
    for name, s in _stages():
        for nb in _notebooks_run(str(s.get("cmd", ""))):
            assert nb in s.get("deps", []), f"stage {name} runs {nb} but does not list it in deps"


def notebook_modules(nb: str) -> set[str]:
    """The icdlib modules a notebook's code cells import."""
    cells = nbformat.read(ROOT / nb, as_version=4).cells
    return imported_modules(ast.walk(ast.parse("\n".join(c.source for c in cells if c.cell_type == "code"))))


def stage_code(stage: dict) -> set[str]:
    """The icdlib files a stage runs: everything importing its notebooks' icdlib modules executes, and
    the modules its command runs with ``python -m`` (but icdlib.pipeline.slim, which changes no result)."""
    cmd = str(stage.get("cmd", ""))
    used = set().union(*[notebook_modules(nb) for nb in _notebooks_run(cmd)])
    used |= {m for m in re.findall(r"-m (icdlib[\w.]*)", cmd) if m != "icdlib.pipeline.slim"}
    return {source_file(m) for m in closure(used)}


@pytest.mark.parametrize("name,stage", list(_stages()), ids=[n for n, _ in _stages()])
def test_stage_deps_are_exactly_the_icdlib_code_it_runs(name, stage):
    """Editing a module a stage runs re-runs it (no missing dep), and editing any other
    module does not (no extra dep): the report's formatting re-runs only the report."""
    listed = {d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith("icdlib/")}
    runs = stage_code(stage)
    assert not runs - listed, f"dvc.yaml stage {name}: add deps {sorted(runs - listed)}"
    assert not listed - runs, f"dvc.yaml stage {name}: drop deps it never runs {sorted(listed - runs)}"


def test_report_stage_runs_no_training_or_model_code():
    """The report re-scores recorded predictions (metrics, intervals); it never loads a model."""
    report = dict(_stages())["report"]
    heavy = ("icdlib/train/", "icdlib/models/", "icdlib/checkpoints/", "icdlib/eval/retrieval.py",
             "icdlib/eval/engine.py")
    assert not {f for f in stage_code(report) if f.startswith(heavy)}


def _parameters_cell(nb) -> dict:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    tree = ast.parse(cells[0].source)
    out = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign), "the parameters cell holds only literal assignments"
        out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_markdown_and_holds_no_definitions(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown", "a notebook opens with a markdown cell saying what it produces"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse("\n".join(line for line in cell.source.splitlines()
                                   if not line.lstrip().startswith(("%", "!"))))
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
        assert not defs, f"{path.name}: notebooks hold no def/class (found {[d.name for d in defs]})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_parameter_has_a_source(path):
    """Each parameter is either the params file itself or set by dvc.yaml (-p NAME ...)."""
    params = _parameters_cell(nbformat.read(path, as_version=4))
    assert params.get("params_file") == "params.yaml"
    cmds = [str(s.get("cmd", "")) for _, s in _stages()
            if f"notebooks/{path.name}" in _notebooks_run(str(s.get("cmd", "")))]
    for name in params:
        if name == "params_file":
            continue
        assert any(re.search(rf"-[py] {name}\b|-y ['\"]?{name}:", c) for c in cmds), (
            f"{path.name}: parameter {name!r} is not set by its dvc.yaml stage"
        )


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_profiles_only_set_existing_keys_and_build_valid_configs(profile, tmp_path):
    out = tmp_path / "params.yaml"
    apply_profile(ROOT / "params.yaml", profile, [], profiles_dir=ROOT / "profiles", out_path=out)
    from icdlib.pipeline.config import load_all

    load_all(load_params(out))  # raises, naming the key, on anything invalid


def test_default_params_build_valid_configs():
    from icdlib.pipeline.config import load_all

    cfgs = load_all(PARAMS)
    assert cfgs  # every section parsed


def test_unknown_param_key_is_rejected_with_its_name():
    from icdlib.pipeline.config import load_all

    bad = yaml.safe_load((ROOT / "params.yaml").read_text())
    bad["train"]["stpes"] = 3
    with pytest.raises(ValueError, match="stpes"):
        load_all(bad)


MATCHER_ONLY_PAIRS = {"pos_rate", "neg_knn_p", "neg_edit_p"}  # read by icdlib.data.pairs.MatcherPairs alone


@pytest.mark.parametrize("name,stage", [(n, s) for n, s in _stages()
                                        if n.startswith(("train_trunk", "train_descriptor", "ablations"))])
def test_descriptor_stages_read_every_descriptor_pairs_key_and_no_matcher_one(name, stage):
    keys = set(_stage_params(stage))
    assert "pairs" not in keys, f"{name}: list the pairs keys it reads, not the whole section"
    wanted = {f"pairs.{k}" for k in PARAMS["pairs"] if k not in MATCHER_ONLY_PAIRS}
    assert wanted <= keys, f"{name}: missing {sorted(wanted - keys)}"
    assert not keys & {f"pairs.{k}" for k in MATCHER_ONLY_PAIRS}


def _out_paths(stage: dict) -> list[str]:
    outs = [o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])]
    return [re.sub(r"\$\{([^}]+)\}", lambda m: str(lookup(PARAMS, m.group(1))), o) for o in outs]


def test_a_fresh_clone_runs_the_data_stage():
    """The images (``paths.data``) are no DVC output and git does not keep them, while the
    fingerprint the later stages read is committed. Without an output that a fresh clone
    lacks, `dvc repro` there would skip the data stage as unchanged and the next stage would
    find no images: the stage also writes the fingerprint where git ignores it."""
    import subprocess

    outs = _out_paths(DVC["stages"]["data"])
    ignored = [o for o in outs if subprocess.run(["git", "check-ignore", "-q", o], cwd=ROOT).returncode == 0]
    assert ignored, f"every output of stage data is kept by git: {outs}"
    assert f"{PARAMS['paths']['runs']}/data/images.json" in ignored


def test_the_data_stage_writes_its_fingerprint_in_both_places(tmp_path):
    from icdlib.pipeline.prepare import prepare_data

    p = tmp_path / "params.yaml"
    apply_profile(ROOT / "params.yaml", "tiny", ["data.image_size=48"], profiles_dir=ROOT / "profiles", out_path=p)
    prepare_data(p, progress=False)
    kept, local = tmp_path / "reports/data/images.json", tmp_path / "runs/data/images.json"
    assert kept.is_file() and local.read_text() == kept.read_text()


def test_reports_keep_paths_relative_to_the_project(tmp_path, monkeypatch):
    from icdlib.params import PARAMS_ENV, portable, project_root

    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.setenv(PARAMS_ENV, str(tmp_path / "params.yaml"))
    assert project_root() == tmp_path.resolve()
    assert portable(str(tmp_path / "models" / "trunk.pt")) == "models/trunk.pt"
    assert portable(tmp_path / "runs" / "pairs") == "runs/pairs"
    assert portable("/elsewhere/weights.pth") == "/elsewhere/weights.pth"  # outside the project: as given
    assert portable("runs/knn") == "runs/knn" and portable(3) == 3 and portable(None) is None
