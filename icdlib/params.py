"""Reading ``params.yaml`` into typed, frozen configs.

Every module owns the dataclass of its ``params.yaml`` section; :func:`section` builds
it and fails loudly, naming the key, on anything it does not know.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import types
import typing
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
    try:
        with path.open(encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable YAML file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


_MISSING = object()


def lookup(params: dict[str, Any], dotted: str, default: Any = _MISSING) -> Any:
    """The value at a dotted key (``"train.steps"``) of nested params dicts.

    Raises ``KeyError`` naming the key when a part is missing, unless ``default`` is given.
    """
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise KeyError(f"params.yaml has no key {dotted!r}")
        node = node[part]
    return node


def has_key(params: dict[str, Any], dotted: str) -> bool:
    """Whether :func:`lookup` finds ``dotted`` in ``params``."""
    absent = object()
    return lookup(params, dotted, absent) is not absent


def build(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys raise ``ValueError``.

    ``where`` names the section in messages, e.g. ``"params.yaml:train"``.
    Nested dataclass fields are built recursively; every other value is checked against
    its field's annotation by :func:`check_type` (lists become tuples, ints become floats
    where a float is expected), so ``lr: fast`` fails here, naming the key.
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint = hints.get(name, fields[name].type)
        sub = hint if dataclasses.is_dataclass(hint) else None
        if sub is not None and isinstance(value, dict):
            value = build(sub, value, f"{where}.{name}")
        else:
            value = check_type(value, hint, f"{where}.{name}")
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


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_type(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against annotation ``hint``; returns it normalised.

    Handles ``bool``, ``int``, ``float`` (an int, or a numeric string such as YAML's
    ``5e-4``, becomes a float; NaN is refused), ``str``, ``Path``, ``X | None``,
    ``tuple[X, ...]``/``tuple[X, Y]``/``list[X]`` (checked item by item; returned as tuples),
    ``dict``, ``Literal`` and dataclasses (from a mapping); other annotations pass as is
    (a list as a tuple).

    Raises:
        ValueError: naming ``where`` (``params.yaml:train.lr``), the value and the type.
    """
    def fail(extra: str = "") -> ValueError:
        return ValueError(f"{where}: expected {_describe(hint)}, got {value!r}{extra}")

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is None or isinstance(hint, (str, typing.TypeVar)):
        return tuple(value) if isinstance(value, list) else value  # lists become tuples, as always
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return check_type(value, arm, where)
            except ValueError:
                pass
        raise fail()
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise fail(" (write true or false)")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise fail()
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise fail() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        if math.isnan(value):
            raise fail(" (NaN)")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise fail()
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise fail()
        return value
    if hint in (tuple, list) or origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise fail()
        if args and not (len(args) == 2 and args[1] is Ellipsis) and origin is tuple:
            if len(args) != len(value):
                raise fail(f" ({len(value)} items, expected {len(args)})")
            items = [check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        elif args:
            items = [check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            items = list(value)
        return tuple(items)  # configs are frozen: sequences are tuples, whatever the annotation
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise fail()
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        raise fail(" (expected a mapping)")
    return tuple(value) if isinstance(value, list) else value


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


def project_root() -> Path:
    """The folder of the params file in use (:func:`locate`), else the working directory."""
    try:
        return locate().parent
    except FileNotFoundError:
        return Path.cwd().resolve()


def portable(value: Any, root: str | Path | None = None) -> Any:
    """``value`` as a report may keep it: an absolute path inside ``root`` (default
    :func:`project_root`) becomes relative to it, so no machine's folders are written into
    ``reports/``; anything else comes back as it is."""
    if not isinstance(value, (str, Path)) or not os.path.isabs(value):
        return value
    base = Path(root if root is not None else project_root()).resolve()
    try:
        return str(Path(value).resolve().relative_to(base))
    except ValueError:
        return value if isinstance(value, str) else str(value)


def run_commit(folder: str | Path) -> str:
    """The short (7 hex digits) git commit ``folder`` is checked out at; ``"unknown"`` outside a
    git work tree (or without git)."""
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short=7", "HEAD"],
                             capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
