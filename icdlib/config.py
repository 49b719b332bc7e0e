"""Every ``params.yaml`` section, built into its owner's config dataclass.

``load_all(params)`` is the one check that a params file (any profile) is complete and
has no unknown key: each section is built by the module that owns it, and every named
arm is resolved into a full training run.
"""

from __future__ import annotations

from typing import Any

from icdlib.params import section

TOP_LEVEL = {"profile", "seed", "paths", "dataset", "data", "edits", "pairs", "descriptor", "matcher",
             "train", "arms", "eval", "ablation", "report", "launch", "viz"}


def load_all(params: dict[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """Build every section; raise ``ValueError`` naming the first bad section or key."""
    from icdlib import chains, data, experiments, models, pairs, retrieval, train

    unknown = sorted(set(params) - TOP_LEVEL)
    if unknown:
        raise ValueError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; known: {', '.join(sorted(TOP_LEVEL))}")
    if not isinstance(params.get("seed", 0), int) or params.get("seed", 0) < 0:
        raise ValueError(f"{source}:seed must be a non-negative integer, got {params.get('seed')!r}")
    out: dict[str, Any] = {
        "paths": section(params, "paths", experiments.PathsConfig, source),
        "dataset": section(params, "dataset", experiments.DatasetConfig, source),
        "data": data.data_config(params, source),
        "edits": section(params, "edits", chains.EditConfig, source),
        "pairs": pairs.pairs_config(params, source),
        "descriptor": section(params, "descriptor", models.DescriptorConfig, source),
        "matcher": section(params, "matcher", models.MatcherConfig, source),
        "train": section(params, "train", train.TrainConfig, source),
        "eval": section(params, "eval", retrieval.EvalConfig, source),
        "ablation": section(params, "ablation", experiments.AblationConfig, source),
        "report": section(params, "report", experiments.ReportConfig, source),
        "launch": section(params, "launch", experiments.LaunchConfig, source),
    }
    arms = dict(params.get("arms") or {})
    for name in sorted(set(arms) | set(out["ablation"].arms)):
        try:
            out[f"arms.{name}"] = train.resolve_run(params, name, {}, source)
        except ValueError as e:
            raise ValueError(f"{source}:arms.{name}: {e}") from e
    return out
