"""One source for every default: params.yaml.

Each config dataclass built with no arguments must hold exactly params.yaml's values for
every key its section lists (so code and file can never disagree about a default), and
every params.yaml key must be read: by a stage (a ``params`` entry or a ``${...}`` in
dvc.yaml) and by the code (an attribute of that name is read somewhere in icdlib).
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from icdlib.data.build import BuildConfig
from icdlib.data.photo_bench import PhotoBuildConfig
from icdlib.data.pairs import PairsConfig
from icdlib.edits.chains import EditConfig
from icdlib.eval.retrieval import EvalConfig
from icdlib.models.config import DescriptorConfig, MatcherConfig
from icdlib.params import load_params
from icdlib.pipeline.config import TOP_LEVEL
from icdlib.pipeline.real_photos import RealPhotosConfig
from icdlib.pipeline.stage import AblationConfig, DatasetConfig, LaunchConfig, MainConfig, PathsConfig, ReportConfig
from icdlib.train.pretrain import PretrainConfig
from icdlib.train.runs import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")

# params.yaml section -> the dataclass that owns it
SECTIONS = {
    "paths": PathsConfig,
    "dataset": DatasetConfig,
    "data": BuildConfig,
    "edits": EditConfig,
    "pairs": PairsConfig,
    "descriptor": DescriptorConfig,
    "matcher": MatcherConfig,
    "train": TrainConfig,
    "main": MainConfig,
    "launch": LaunchConfig,
    "eval": EvalConfig,
    "ablation": AblationConfig,
    "report": ReportConfig,
    "pretrain": PretrainConfig,
    "photos": PhotoBuildConfig,
    "real_photos": RealPhotosConfig,
}
# Top-level keys that are not a dataclass section, and who reads them.
NOT_SECTIONS = {
    "profile": "icdlib.pipeline.stage.Stage.profile (the report's config tags)",
    "seed": "icdlib.pipeline.stage.Stage.seed and train.seed (icdlib.train.resolve_run)",
    "arms": "icdlib.train.resolve_run: the only definition of the arms",
}
# Config dataclasses that own no params.yaml section, and why.
NOT_PARAMS = {
    "RunConfig": "a resolved run (train + model + pairs), built by resolve_run",
    "SourceConfig": "nested in data (data.sources), compared with it",
    "VizConfig": "the explorer notebook's own parameters; no pipeline stage reads it",
}


def _norm(value):
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    if dataclasses.is_dataclass(value):
        return {f.name: _norm(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def default_differences(cls, values: dict, where: str) -> list[str]:
    """``["where.key: code default X, params.yaml Y", ...]`` for ``cls()`` against ``values``."""
    cfg, out = cls(), []
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, want in values.items():
        if key not in fields:
            out.append(f"{where}.{key}: no field of {cls.__name__}")
            continue
        have = getattr(cfg, key)
        if dataclasses.is_dataclass(have) and isinstance(want, dict):
            sub = type(have)
            out += [d for d in _nested(sub, have, want, f"{where}.{key}")]
        elif _norm(have) != _norm(want) or type(have) is bool and not isinstance(want, bool):
            out.append(f"{where}.{key}: code default {have!r}, params.yaml {want!r}")
    return out


def _nested(cls, have, values: dict, where: str) -> list[str]:
    return [f"{where}.{k}: code default {getattr(have, k)!r}, params.yaml {v!r}"
            for k, v in values.items() if _norm(getattr(have, k)) != _norm(v)]


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_config_built_with_no_arguments_holds_params_yaml_values(name):
    assert name in PARAMS, f"params.yaml has no section {name!r}"
    diffs = default_differences(SECTIONS[name], PARAMS[name], name)
    assert not diffs, "code defaults differ from params.yaml:\n" + "\n".join(diffs)


def test_a_differing_default_is_reported_by_key():
    @dataclasses.dataclass(frozen=True)
    class Toy:
        steps: int = 250
        lr: float = 0.5
        on: bool = True

    assert default_differences(Toy, {"steps": 250, "lr": 0.5, "on": True}, "train") == []
    assert default_differences(Toy, {"steps": 450}, "train") == ["train.steps: code default 250, params.yaml 450"]
    assert default_differences(Toy, {"on": 1}, "train") == ["train.on: code default True, params.yaml 1"]
    assert default_differences(Toy, {"stepz": 1}, "train") == ["train.stepz: no field of Toy"]


def test_every_top_level_key_has_an_owner():
    owned = set(SECTIONS) | set(NOT_SECTIONS)
    assert set(PARAMS) <= owned, f"params.yaml keys with no owner: {sorted(set(PARAMS) - owned)}"
    assert TOP_LEVEL == owned, f"load_all's TOP_LEVEL differs: {sorted(TOP_LEVEL ^ owned)}"


def test_every_config_dataclass_owns_a_params_section_or_says_why_not():
    found = {}
    for path in sorted((ROOT / "icdlib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
                found[node.name] = path.relative_to(ROOT)
    owned = {cls.__name__ for cls in SECTIONS.values()}
    loose = sorted(f"{n} ({p})" for n, p in found.items() if n not in owned and n not in NOT_PARAMS)
    assert not loose, f"config dataclasses with no params.yaml section: {loose}"


# ----------------------------------------------------------------------- no unused keys
def _stage_reads() -> tuple[set[str], str]:
    """Params keys listed by dvc.yaml stages, and dvc.yaml's text (for ``${...}`` uses)."""
    text = (ROOT / "dvc.yaml").read_text()
    listed = set()
    for stage in yaml.safe_load(text)["stages"].values():
        body = stage.get("do", stage)
        for entry in body.get("params", []):
            listed |= set(entry) if isinstance(entry, dict) else {entry}
    return listed, text


def _attributes_read() -> set[str]:
    """Every attribute name icdlib reads: ``x.name`` in a load context, or a string passed
    to ``getattr`` or to ``Stage.path`` (``st.path("features", ...)`` reads ``paths.features``)."""
    names = set()
    for path in (ROOT / "icdlib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                names.add(node.attr)
            elif isinstance(node, ast.Call) and (
                isinstance(node.func, ast.Name) and node.func.id == "getattr"
                or isinstance(node.func, ast.Attribute) and node.func.attr == "path"
            ):
                names |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return names


def _leaves() -> list[tuple[str, str]]:
    """``(section, key)`` for every key of every dataclass section."""
    return [(s, k) for s in SECTIONS for k in PARAMS[s]]


def test_every_params_key_reruns_a_stage_when_changed():
    listed, text = _stage_reads()
    used = {m.strip() for m in re.findall(r"\$\{([^}]+)\}", text)}
    missing = []
    for s, k in _leaves():
        key = f"{s}.{k}"
        if not ({s, key} & listed or key in used):
            missing.append(key)
    for top in NOT_SECTIONS:
        if top not in listed and not any(e.startswith(top + ".") for e in listed):
            missing.append(top)
    assert not missing, f"params.yaml keys no dvc.yaml stage reads: {missing}"


def test_every_params_key_is_read_by_the_code():
    read = _attributes_read()
    unread = [f"{s}.{k}" for s, k in _leaves() if k not in read]
    assert not unread, f"params.yaml keys whose config field icdlib never reads: {unread}"


def test_dotted_lookup_names_the_missing_key():
    from icdlib.params import has_key, lookup

    params = {"train": {"steps": 3, "snapshots": None}}
    assert lookup(params, "train.steps") == 3
    assert lookup(params, "train.snapshots") is None and has_key(params, "train.snapshots")
    assert not has_key(params, "train.steps.x") and not has_key(params, "eval")
    assert lookup(params, "eval.k", default=10) == 10
    with pytest.raises(KeyError, match="'train.lr'"):
        lookup(params, "train.lr")
