"""Every ``params.yaml`` section, built into its owner's config dataclass.

``load_all(params)`` is the one check that a params file (any profile) is complete and
has no unknown key: each section is built by the module that owns it, and every named
arm is resolved into a full training run.
"""

from __future__ import annotations

from typing import Any

from icdlib.data import data_config, pairs_config
from icdlib.data.photo_bench import photo_config
from icdlib.edits import EditConfig
from icdlib.eval.retrieval import EvalConfig
from icdlib.models import DescriptorConfig, MatcherConfig
from icdlib.params import section
from icdlib.pipeline.real_photos import RealPhotosConfig
from icdlib.pipeline.stage import AblationConfig, DatasetConfig, LaunchConfig, MainConfig, PathsConfig, ReportConfig
from icdlib.train import TrainConfig, resolve_run
from icdlib.train.pretrain import PretrainConfig

TOP_LEVEL = {"profile", "seed", "paths", "dataset", "data", "edits", "pairs", "descriptor", "matcher",
             "train", "main", "arms", "eval", "ablation", "report", "launch", "pretrain", "photos", "real_photos"}


def load_all(params: dict[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """Build every section; raise ``ValueError`` naming the first bad section or key."""
    unknown = sorted(set(params) - TOP_LEVEL)
    if unknown:
        raise ValueError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(TOP_LEVEL))}")
    if not isinstance(params.get("seed", 0), int) or params.get("seed", 0) < 0:
        raise ValueError(f"{source}:seed must be a non-negative integer, got {params.get('seed')!r}")
    out: dict[str, Any] = {
        "paths": section(params, "paths", PathsConfig, source),
        "dataset": section(params, "dataset", DatasetConfig, source),
        "data": data_config(params, source),
        "edits": section(params, "edits", EditConfig, source),
        "pairs": pairs_config(params, source),
        "descriptor": section(params, "descriptor", DescriptorConfig, source),
        "matcher": section(params, "matcher", MatcherConfig, source),
        "train": section(params, "train", TrainConfig, source),
        "main": section(params, "main", MainConfig, source),
        "eval": section(params, "eval", EvalConfig, source),
        "ablation": section(params, "ablation", AblationConfig, source),
        "report": section(params, "report", ReportConfig, source),
        "launch": section(params, "launch", LaunchConfig, source),
        "pretrain": section(params, "pretrain", PretrainConfig, source),
        "photos": photo_config(params, source),
        "real_photos": section(params, "real_photos", RealPhotosConfig, source),
    }
    arms = dict(params.get("arms") or {})
    listed = set(out["ablation"].arms) if "ablation" in params else set()  # the arms the ablation stage runs
    for name in sorted(set(arms) | listed):
        try:
            out[f"arms.{name}"] = resolve_run(params, name, {}, source)
        except ValueError as e:
            raise ValueError(f"{source}:arms.{name}: {e}") from e
    return out
