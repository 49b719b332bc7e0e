"""Traced training pairs: torch Datasets that edit images and return PixTrace overlaps.

Every sample is a pure function of ``(seed, epoch, index)``: the edit chains, the
copy-vs-copy draw and the negatives come from ``numpy.random.default_rng([seed, epoch,
index])``, so the data are reproducible whatever the worker count or order, and no
trace state is shared between samples or workers.

A *pair* (one dict) holds:

- ``query``, ``reference``: ``[3, S, S]`` float32, ImageNet-normalised RGB at the model
  input size ``S`` (bicubic resize of the edited / clean image).
- ``overlap_qr``: ``[N, N + 1]`` float32, row i = where query patch i's pixels trace to
  among the N reference patches, last column = untraceable share
  (:func:`icdlib.pixtrace.overlap_batch`; patches row-major, ``N = (S // patch) ** 2``).
- ``overlap_rq``: ``[N, N + 1]``, the same from reference to query.
- ``copynce``: bool, the traced share of query pixels (mean of ``1 - overlap_qr[:, -1]``)
  is at least ``min_traced`` (0, the released setting: every pair counts in CopyNCE's mean).
- ``traced``: float32, that traced share.
- ``index``: int64, the training image the pair is made from (for MatcherPairs: the
  reference's image; ``query_index`` is the query's image).
- ``label`` (MatcherPairs only): float32, 1 for a copy, 0 for a negative.

Pairs always carry the traced overlaps. The ``pairs.targets`` controls of the ablations
(``"uniform"``, ``"same_position"``) are applied by the loss, weight-matched to the
traced targets (:func:`icdlib.losses.copynce_targets`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from icdlib import edits
from icdlib.edits import raster
from icdlib.data.disc21 import load_image
from icdlib.data.loading import collate, make_loader  # noqa: F401 (re-exported)
from icdlib.data.inputs import (  # noqa: F401 (re-exported)
    IMAGENET_MEAN,
    IMAGENET_STD,
    model_input,
    resize_image,
    to_tensor,
)
from icdlib.params import section
from icdlib.pixtrace import Step, Trace, overlap_batch

TARGETS = ("pixtrace", "uniform", "same_position")


@dataclass(frozen=True)
class PairsConfig:
    """The ``pairs`` section of params.yaml."""

    size: int = 112  # model input S: 7x7 patches of 16 on CPU; 224 for the paper profile
    patch: int = 16  # ViT patch size: the overlap grid must match the tokens
    copy_vs_copy: float = 0.0  # share of pairs whose reference is edited too (released configs: 0)
    targets: str = "pixtrace"  # "uniform" / "same_position": weight-matched no-tracing controls, applied by the loss
    min_traced: float = 0.0  # copynce flag: share of query pixels that must trace (0: every pair counts, released)
    families: tuple[str, ...] | None = None  # edit families of the query chain (None: all)
    reference_families: tuple[str, ...] | None = ("geometric", "photometric")  # copy-vs-copy reference edits: milder
    donors: str = "training"  # composite edits paste other training images ("procedural": drawn ones)
    knn: int = 7  # descriptor: second pair from one of the first 7 neighbours (method s.4)
    # matcher pairs: balanced, uniform negatives at CPU scale (params.yaml says why); the
    # released matcher config (the disc21 profile) draws 0.3 positives and neg_knn_p 0.5
    pos_rate: float = 0.5  # matcher: share of positive pairs
    neg_knn_p: float = 0.0  # matcher negatives: query from a kNN neighbour with this probability
    neg_edit_p: float = 0.5  # matcher negatives: query edited with this probability, else only resized

    def __post_init__(self):
        if self.size < self.patch or self.patch < 1:
            raise ValueError(f"PairsConfig: need size >= patch >= 1, got size={self.size}, patch={self.patch}")
        if self.targets not in TARGETS:
            raise ValueError(f"PairsConfig.targets: unknown {self.targets!r}; known {TARGETS}")
        if self.donors not in ("training", "procedural"):
            raise ValueError(f"PairsConfig.donors: must be 'training' or 'procedural', got {self.donors!r}")
        for name in ("copy_vs_copy", "min_traced", "pos_rate", "neg_knn_p", "neg_edit_p"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"PairsConfig.{name} must be in [0, 1], got {v}")
        if self.knn < 1:
            raise ValueError(f"PairsConfig.knn must be >= 1, got {self.knn}")


def pairs_config(params: dict, source: str = "params.yaml") -> PairsConfig:
    """The :class:`PairsConfig` of a parsed params dict (section ``pairs``)."""
    return section(params, "pairs", PairsConfig, source)


# ---------------------------------------------------------------------- pure helpers
def resize_traced(img: Image.Image, trace: Trace, size: int) -> tuple[Image.Image, Trace]:
    """Resize to ``size x size`` (bicubic) and append the matching scale step to ``trace``.

    Pillow's resize maps output pixel centre ``(c + 0.5)`` to input ``(c + 0.5) * w / S``,
    i.e. the continuous scale ``x' = x * S / w``, ``y' = y * S / h``.
    """
    return resize_image(img, size), resize_trace(trace, size)


_RESIZED_IDENTITY: dict[tuple, Trace] = {}  # (source size, S) -> the clean reference's trace


def resize_trace(trace: Trace, size: int) -> Trace:
    """The trace half of :func:`resize_traced`: ``trace`` plus the scale step to ``size x size``.

    A trace without steps (a clean reference) only depends on its size, so its resized
    trace is built once per (source size, S) and shared: traces are never mutated.
    """
    w, h = trace.size
    key = (trace.source_size, size) if not trace.steps else None
    if key is not None and key in _RESIZED_IDENTITY:
        return _RESIZED_IDENTITY[key]
    out = trace.then(Step(np.diag([size / w, size / h, 1.0]), (w, h), (size, size), name="resize"))
    if key is not None and len(_RESIZED_IDENTITY) < 256:
        out.backward  # noqa: B018  (build the inverse once, for every pair that shares it)
        _RESIZED_IDENTITY[key] = out
    return out


def invalid_overlap(n: int) -> torch.Tensor:
    """``[n, n + 1]``: every pixel untraceable (a negative pair)."""
    o = torch.zeros(n, n + 1)
    o[:, -1] = 1.0
    return o


# ---------------------------------------------------------------------- datasets
class _PairBase(Dataset):
    role: str  # whose numbers ``edits.recipe: released`` follows (icdlib.edits.recipe.ROLES)

    def __init__(self, image_paths: Sequence[str | Path], config: PairsConfig, seed: int,
                 neighbours: np.ndarray | None = None, edit_config: Any = None, timing: bool = False):
        self.paths = [Path(p) for p in image_paths]
        if not self.paths:
            raise ValueError(f"{type(self).__name__}: image_paths is empty")
        if not isinstance(config, PairsConfig):
            raise ValueError(f"{type(self).__name__}: config must be a PairsConfig, got {type(config).__name__}")
        if not isinstance(seed, (int, np.integer)) or int(seed) < 0:
            raise ValueError(f"{type(self).__name__}: seed must be a non-negative int, got {seed!r}")
        self.config, self.seed, self.edit_config = config, int(seed), edit_config
        self.neighbours = None
        if neighbours is not None:
            nb = np.asarray(neighbours)
            if nb.ndim != 2 or nb.shape[0] != len(self.paths) or not np.issubdtype(nb.dtype, np.integer):
                raise ValueError(
                    f"{type(self).__name__}: neighbours must be an int array [n={len(self.paths)}, k], "
                    f"got {nb.dtype} {nb.shape}"
                )
            if nb.size and (nb.min() < 0 or nb.max() >= len(self.paths)):
                raise ValueError(f"{type(self).__name__}: neighbours has indices outside [0, {len(self.paths)})")
            self.neighbours = nb
        self.epoch = 0
        self.n_patches = (config.size // config.patch) ** 2
        self.stats: dict[str, float] | None = defaultdict(float) if timing else None

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh edits: ``dataset[i]`` becomes ``sample(i, epoch)``."""
        self.epoch = int(epoch)

    def __getitem__(self, key):
        """``dataset[i]`` = ``sample(i, self.epoch)``; ``dataset[(i, epoch)]`` = ``sample(i, epoch)``."""
        if isinstance(key, tuple):
            return self.sample(int(key[0]), int(key[1]))
        return self.sample(int(key), self.epoch)

    def _rng(self, index: int, epoch: int) -> np.random.Generator:
        if not 0 <= index < len(self.paths):
            raise IndexError(f"{type(self).__name__}: index {index} outside [0, {len(self.paths)})")
        return np.random.default_rng([self.seed, int(epoch), int(index)])

    def _tick(self, stage: str, t0: float) -> float:
        t1 = time.process_time()
        if self.stats is not None:
            self.stats[stage] += t1 - t0
        return t1

    def _load(self, index: int) -> np.ndarray:
        """Image ``index`` decoded once, as a read-only ``[H, W, 3]`` uint8 array (both views use it)."""
        t0 = time.process_time()
        img = raster.rgb_array(load_image(self.paths[index]))
        self._tick("decode", t0)
        return img

    def _donor(self, seed: int, size: tuple[int, int] | None = None) -> Image.Image:
        """Training image ``seed % n`` as a donor; a JPEG decodes reduced when ``size`` (its size to be) allows."""
        return load_image(self.paths[int(seed) % len(self.paths)], draft=size)

    _donor.sized = True  # icdlib.edits.Context.donor passes the target size

    def _edit(self, img: np.ndarray, rng: np.random.Generator, families) -> tuple[np.ndarray, Trace]:
        """A sampled chain on ``img``; the edited image as an array (no PIL image is made)."""
        t0 = time.process_time()
        specs = edits.sample_chain(int(rng.integers(2**63 - 1)), families=families, config=self.edit_config,
                                   role=self.role)
        donors = self._donor if self.config.donors == "training" else None
        out = edits.apply_array(img, specs, donors=donors, config=self.edit_config)
        self._tick("edit", t0)
        return out

    def _neighbour(self, index: int, rng: np.random.Generator, k: int | None) -> int | None:
        """A random one of the first ``k`` neighbours of ``index`` (itself skipped), or None."""
        row = [int(j) for j in self.neighbours[index] if int(j) != index]
        if k is not None:
            row = row[:k]
        return row[int(rng.integers(len(row)))] if row else None

    def _finish(self, q_img, q_tr, r_img, r_tr, traced_pair: bool) -> dict[str, Any]:
        """Resize both views, compute overlaps and targets, convert to tensors.

        Timed stages: ``trace`` (both traces resized, the transfers and both overlap
        matrices) and ``tensor`` (the model inputs: both images resized to ``S`` and
        normalised)."""
        cfg = self.config
        t0 = time.process_time()
        q_tr, r_tr = resize_trace(q_tr, cfg.size), resize_trace(r_tr, cfg.size)
        if traced_pair:
            o_qr, o_rq = overlap_batch([(q_tr, r_tr), (r_tr, q_tr)], cfg.patch)  # both directions, one call
        else:
            o_qr = o_rq = invalid_overlap(self.n_patches)
        traced = float(1.0 - o_qr[:, -1].mean())
        t0 = self._tick("trace", t0)
        out = {
            "query": model_input(q_img, cfg.size),
            "reference": model_input(r_img, cfg.size),
            "overlap_qr": o_qr,
            "overlap_rq": o_rq,
            "copynce": torch.tensor(traced >= cfg.min_traced),
            "traced": torch.tensor(traced, dtype=torch.float32),
        }
        self._tick("tensor", t0)
        return out


class TracedPairs(_PairBase):
    """Descriptor training pairs: (edited copy, reference) of one training image.

    Args:
        image_paths: training image files; item ``i`` is made from ``image_paths[i]``.
        config: :class:`PairsConfig`.
        seed: run seed; sample ``(i, epoch)`` draws from ``default_rng([seed, epoch, i])``.
        neighbours: optional ``[n, k]`` int kNN table (row i: neighbours of image i; i
            itself is skipped). When given, an item is a list of two pairs: image i's,
            and that of one of its first ``config.knn`` neighbours (hard negatives for
            InfoNCE, method s.4); :func:`collate` flattens them.
        edit_config: ``icdlib.edits.EditConfig`` for ``sample_chain``/``apply`` (None: defaults).
        timing: accumulate CPU seconds (``time.process_time``) per stage (decode, edit,
            trace, tensor) in ``.stats``.

    The reference is the clean image resized to ``S`` (copy-vs-original), except for a
    ``config.copy_vs_copy`` share of pairs where it is edited too (milder families).
    """

    role = "descriptor"  # under edits.recipe: released, every edit follows the descriptor's numbers

    def __init__(self, image_paths, config: PairsConfig = PairsConfig(), seed: int = 0,
                 neighbours=None, edit_config=None, timing: bool = False):
        super().__init__(image_paths, config, seed, neighbours, edit_config, timing)

    def pair(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """One pair made from image ``index`` with draws from ``rng``."""
        src = self._load(index)
        copy_vs_copy = rng.random() < self.config.copy_vs_copy
        q_img, q_tr = self._edit(src, rng, self.config.families)
        if copy_vs_copy:
            r_img, r_tr = self._edit(src, rng, self.config.reference_families)
        else:
            r_img, r_tr = src, Trace(raster.size_of(src))
        out = self._finish(q_img, q_tr, r_img, r_tr, traced_pair=True)
        out["copy_vs_copy"] = torch.tensor(bool(copy_vs_copy))
        out["index"] = torch.tensor(index, dtype=torch.int64)
        return out

    def sample(self, index: int, epoch: int = 0):
        """The item ``index`` of ``epoch``: a pair dict, or a list of two with neighbours."""
        rng = self._rng(index, epoch)
        first = self.pair(index, rng)
        if self.neighbours is None:
            return first
        j = self._neighbour(index, rng, self.config.knn)
        return [first, self.pair(j if j is not None else index, rng)]


class MatcherPairs(_PairBase):
    """Matcher training pairs: positives (edited copy, clean reference) and negatives.

    With probability ``config.pos_rate`` the item is a positive made from image ``i``
    (label 1). Otherwise the reference is image ``i`` and the query another image ``j``
    (label 0): a random one of ``i``'s kNN neighbours (all ``k`` columns) with probability
    ``config.neg_knn_p`` when ``neighbours`` is given, else uniform over the other images;
    the query is edited with probability ``config.neg_edit_p``, else only resized.
    Negatives have every query pixel untraceable: all overlap mass in the last column.
    Arguments as in :class:`TracedPairs`.
    """

    role = "matcher"  # every edit (query, copy-vs-copy reference, negative query): the matcher's numbers

    def __init__(self, image_paths, config: PairsConfig = PairsConfig(), seed: int = 0,
                 neighbours=None, edit_config=None, timing: bool = False):
        super().__init__(image_paths, config, seed, neighbours, edit_config, timing)
        if len(self.paths) < 2:
            raise ValueError("MatcherPairs: need at least 2 images to draw negatives")

    def sample(self, index: int, epoch: int = 0) -> dict[str, Any]:
        cfg = self.config
        rng = self._rng(index, epoch)
        ref = self._load(index)
        if rng.random() < cfg.pos_rate:
            q_img, q_tr = self._edit(ref, rng, cfg.families)
            if rng.random() < cfg.copy_vs_copy:
                r_img, r_tr = self._edit(ref, rng, cfg.reference_families)
            else:
                r_img, r_tr = ref, Trace(raster.size_of(ref))
            out = self._finish(q_img, q_tr, r_img, r_tr, traced_pair=True)
            out["label"], qi = torch.tensor(1.0), index
        else:
            qi = None
            if self.neighbours is not None and rng.random() < cfg.neg_knn_p:
                qi = self._neighbour(index, rng, None)
            if qi is None:
                qi = int(rng.integers(len(self.paths) - 1))
                qi += qi >= index  # uniform over the other images
            q_src = self._load(qi)
            if rng.random() < cfg.neg_edit_p:
                q_img, q_tr = self._edit(q_src, rng, cfg.families)
            else:
                q_img, q_tr = q_src, Trace(raster.size_of(q_src))
            out = self._finish(q_img, q_tr, ref, Trace(raster.size_of(ref)), traced_pair=False)
            out["label"] = torch.tensor(0.0)
        out["index"] = torch.tensor(index, dtype=torch.int64)
        out["query_index"] = torch.tensor(qi, dtype=torch.int64)
        return out
