"""Switch ``params.yaml`` between run profiles.

``params.yaml`` is the single source of every knob and holds the default profile (the
embedded benchmark on a CPU). A profile under ``profiles/NAME.yaml`` lists only the keys
it changes; applying it rewrites those keys in ``params.yaml`` in place, keeping comments,
so DVC sees ordinary parameter changes and re-runs only the stages that read them::

    python -m icdlib.profile quick                     # ~10 minute smoke run
    python -m icdlib.profile disc21 --set paths.data=/data/disc21 \
        --set model.init=/weights/dino_deitsmall16_pretrain.pth
    dvc repro

``git checkout params.yaml`` returns to the default profile.
"""

from __future__ import annotations

import argparse
import re
import sys
from io import StringIO
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from icdlib.atomic import write_text
from icdlib.pipeline.config import load_all

PROFILES_DIR = Path("profiles")
PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096  # keep long flow mappings (the arms) on one line
    # write None as `null`, as the file spells it (ruamel's default leaves the value empty)
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML (``3`` -> int, ``true`` -> bool, ``[1, 2]`` -> list)."""
    return _yaml().load(StringIO(text)) if text.strip() else ""


def merge(base: dict, overlay: dict, where: str = "") -> None:
    """Write ``overlay`` into ``base`` in place.

    A top-level section must already exist in ``base`` (a misspelt section fails here);
    inside a section new keys may be added, and the section's config dataclass then
    rejects any it does not know (``icdlib.pipeline.config.load_all``).
    """
    for key, value in overlay.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in base and not where:
            raise KeyError(f"profile sets section {path!r}, which params.yaml does not have")
        if key not in base:
            base[key] = value
            continue
        if isinstance(value, dict) and isinstance(base[key], dict):
            merge(base[key], value, path)
        elif isinstance(base[key], dict) and key != "arms":
            raise ValueError(f"profile sets {path!r} to {value!r}, but it is a section (a mapping)")
        else:
            base[key] = value


def set_dotted(base: dict, dotted: str, value: Any) -> None:
    """``set_dotted(p, "train.steps", 10)``; the key must already exist."""
    node = base
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"--set {dotted}: params.yaml has no key {'.'.join(parts[: i + 1])!r}")
        if i == len(parts) - 1:
            if isinstance(node[part], dict) and not isinstance(value, dict):
                raise ValueError(f"--set {dotted}={value!r}: {dotted!r} is a section, not a value")
            node[part] = value
        else:
            node = node[part]


def apply_profile(params_path: Path, profile: str | None, sets: list[str], profiles_dir: Path = PROFILES_DIR,
                  out_path: Path | None = None) -> dict:
    """Apply profile ``profile`` (None: only ``sets``) to ``params_path``; write ``out_path``."""
    y = _yaml()
    data = y.load(params_path.read_text())
    if profile:
        if not PROFILE_NAME.fullmatch(profile):
            raise ValueError(f"profile name {profile!r}: expected a name under {profiles_dir}/ "
                             "(letters, digits, '_' and '-'), not a path")
        pfile = profiles_dir / f"{profile}.yaml"
        if not pfile.is_file():
            known = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
            raise FileNotFoundError(f"no profile {profile!r} ({pfile}); known: {', '.join(known)}")
        overlay = y.load(pfile.read_text()) or {}
        if not isinstance(overlay, dict):
            raise ValueError(f"{pfile}: a profile must be a mapping of sections, got {type(overlay).__name__}")
        merge(data, overlay)
        if "profile" in data:
            data["profile"] = profile
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        set_dotted(data, key.strip(), parse_value(value))
    load_all(data, str(params_path))  # every key and type checked before anything is written
    target = out_path or params_path
    buf = StringIO()
    y.dump(data, buf)
    write_text(target, buf.getvalue())  # never a half-written params file
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icdlib.profile", description=__doc__.splitlines()[0])
    ap.add_argument("profile", nargs="?", help="profile name under profiles/ (quick, tiny, gpu_smoke, disc21)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key")
    ap.add_argument("--params", default="params.yaml", type=Path)
    ap.add_argument("--profiles-dir", default=PROFILES_DIR, type=Path)
    ap.add_argument("--out", type=Path, help="write here instead of rewriting --params")
    args = ap.parse_args(argv)
    try:
        apply_profile(args.params, args.profile, args.set, args.profiles_dir, args.out)
    except (KeyError, ValueError, OSError, YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
