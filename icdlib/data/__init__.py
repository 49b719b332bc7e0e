"""Data: procedural sources, the embedded benchmark, DISC21-layout reading, traced training pairs.

* :mod:`icdlib.data.sources`: procedural and photo source images;
* :mod:`icdlib.data.build`: :func:`build_benchmark` (``python -m icdlib.data build``);
* :mod:`icdlib.data.disc21`: :class:`Disc21` and :func:`load_image`, for this benchmark and
  the real DISC21 (``python -m icdlib.data check``);
* :mod:`icdlib.data.raw`: :func:`prepare`, the DISC21 download's nested folders linked into
  the flat layout (``python -m icdlib.data prepare``);
* :mod:`icdlib.data.validation`: parallel image checks with a cache of what was checked
  (``Disc21.validate(workers=, cache=)``);
* :mod:`icdlib.data.pairs`: :class:`TracedPairs` and :class:`MatcherPairs`, the training
  pairs with their PixTrace overlaps;
* :mod:`icdlib.data.loading`: :func:`collate` and ``make_loader``, batching those pairs.
"""

from icdlib.data.disc21 import IMAGE_SUFFIXES, SPLIT_DIRS, Disc21, load_image, read_ground_truth, to_rgb8, worker_errors
from icdlib.data.raw import prepare
from icdlib.data.sources import PROCEDURAL_KINDS, SourceConfig, render
from icdlib.data.build import BuildConfig, build_benchmark, data_config, edit_config
from icdlib.data.loading import collate
from icdlib.data.pairs import MatcherPairs, PairsConfig, TracedPairs, pairs_config

__all__ = [
    "IMAGE_SUFFIXES", "PROCEDURAL_KINDS", "SPLIT_DIRS", "BuildConfig", "Disc21", "MatcherPairs",
    "PairsConfig", "SourceConfig", "TracedPairs", "build_benchmark", "collate", "data_config",
    "edit_config", "load_image", "pairs_config", "prepare", "read_ground_truth", "render", "to_rgb8", "worker_errors",
]
