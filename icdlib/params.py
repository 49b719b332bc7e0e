"""Reading ``params.yaml`` into typed, frozen configs.

Every module owns the dataclass of its ``params.yaml`` section; :func:`section` builds
it and fails loudly, naming the key, on anything it does not know.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read a params file; raise ``FileNotFoundError``/``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    with path.open() as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def build(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys raise ``ValueError``.

    ``where`` names the section in messages, e.g. ``"params.yaml:train"``.
    Nested dataclass fields are built recursively; lists become tuples.
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in values.items():
        ftype = fields[name].type
        sub = _dataclass_type(cls, name, ftype)
        if sub is not None and isinstance(value, dict):
            value = build(sub, value, f"{where}.{name}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e


def section(params: dict[str, Any], name: str, cls: type[T], source: str = "params.yaml") -> T:
    """Build the config of section ``name`` (missing section: all defaults)."""
    return build(cls, params.get(name), f"{source}:{name}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def _dataclass_type(cls, name, ftype):
    import typing

    hints = typing.get_type_hints(cls)
    t = hints.get(name, ftype)
    return t if dataclasses.is_dataclass(t) else None


PARAMS_ENV = "ICDLIB_PARAMS"


def locate(params_file: str | Path = DEFAULT_PARAMS) -> Path:
    """The params file a notebook or CLI should read.

    The environment variable ``ICDLIB_PARAMS``, when set, wins (the test suite uses it to
    run every notebook at tiny scale). Otherwise ``params_file`` is taken as given, or
    looked up in the parent directories (a notebook runs from ``notebooks/``).
    """
    env = os.environ.get(PARAMS_ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"{PARAMS_ENV}={env}: no such params file")
        return p.resolve()
    p = Path(params_file)
    if p.is_file():
        return p.resolve()
    if not p.is_absolute():
        for parent in Path.cwd().resolve().parents:
            if (parent / p).is_file():
                return (parent / p).resolve()
    raise FileNotFoundError(f"params file not found: {params_file} (nor in any parent directory)")


def resolve(params_path: str | Path, value: str | Path) -> Path:
    """A path from params.yaml: relative paths are relative to the params file's folder."""
    value = Path(value).expanduser()
    return value if value.is_absolute() else (Path(params_path).resolve().parent / value)
