"""The explorer's starting state.

The explorer is no pipeline stage and params.yaml has no section for it: these defaults
are the only ones, and the explorer notebook's ``parameters`` cell overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass

from icdlib.data import PROCEDURAL_KINDS


SOURCE_MODES = ("procedural", "disc21", "upload", "benchmark")
BENCHMARKS = ("embedded", "real photos")  # the benchmark roots the "benchmark" source mode chooses between


@dataclass(frozen=True)
class VizConfig:
    """The explorer's starting state (no params.yaml section; see the module docstring)."""

    source_kind: str = "mixed"  # richest procedural family: shapes, 1/f noise and text
    seed: int = 0  # procedural source seed
    size: int = 224  # source side (px); 224 = the paper's reference resolution
    patch: int = 16  # ViT-S/16 patch side, the paper's overlap grid
    patch_choices: tuple = (8, 14, 16, 28, 32)  # ViT patch sizes worth comparing
    chain_seed: int = 0  # seed of the first random edit chain
    random_chain: bool = True  # start with a sampled chain instead of no edits
    correspondence_grid: int = 8  # 8x8 lines: dense enough to read, sparse enough to follow
    affinity_scale: float = 16.0  # CopyNCE's tau, so the affinity is the softmax it trains
    descriptor: str = ""  # descriptor checkpoint path; "" = no model panel
    matcher: str = ""  # matcher checkpoint path; "" = no matcher score
    disc21_root: str = ""  # DISC21-layout folder for the "disc21" source mode
    # built benchmarks (with manifest.json) for the "benchmark" source mode, relative to the project root
    embedded_root: str = ""  # the pipeline's own benchmark (paths.data, e.g. data/mini_disc)
    real_photos_root: str = ""  # stage real_photos' benchmark (runs/real_photos/benchmark)
    select_on_hover: bool = False  # hover selects too; off: every hover would redraw

    def __post_init__(self):
        if self.source_kind not in PROCEDURAL_KINDS:
            raise ValueError(f"viz.source_kind: {self.source_kind!r} not in {PROCEDURAL_KINDS}")
        if self.size < 16:
            raise ValueError(f"viz.size: must be >= 16 px, got {self.size}")
        if self.patch not in self.patch_choices:
            raise ValueError(f"viz.patch: {self.patch} not in patch_choices {self.patch_choices}")
        if self.correspondence_grid < 1:
            raise ValueError(f"viz.correspondence_grid: must be >= 1, got {self.correspondence_grid}")
        if self.affinity_scale <= 0:
            raise ValueError(f"viz.affinity_scale: must be > 0, got {self.affinity_scale}")

    def benchmark_root(self, name: str) -> str:
        """The folder of benchmark ``name`` (one of :data:`BENCHMARKS`), "" when not set."""
        if name not in BENCHMARKS:
            raise ValueError(f"viz: benchmark must be one of {BENCHMARKS}, got {name!r}")
        return self.embedded_root if name == "embedded" else self.real_photos_root
