"""Traces: steps, analytic mappings between frames, and copy-vs-copy transfer.

Pixel convention (the same everywhere in icdlib)
-------------------------------------------------
Coordinates are continuous ``(x, y)``: x grows to the right, y grows down.
Pixel (column ``c``, row ``r``) covers ``[c, c+1) x [r, r+1)``, so its centre is
``(c + 0.5, r + 0.5)``. Sizes are ``(width, height)``.

Representation
--------------
An edit chain is a list of :class:`Step` objects. Each step maps its input canvas to
its output canvas with one 3x3 projective matrix (crop, resize, flip, rotation, affine,
perspective, padding and paste placement are all of this form), and may carry a boolean
mask on its output canvas that marks occluded or foreign pixels as untraceable
(overlays, masked objects).

A :class:`Mapping` is the analytic composition of such steps between two frames: one
3x3 matrix, a set of half-plane constraints (every intermediate canvas must contain
the point, and every projective ``w`` must stay positive), and the masks, each with the
matrix that carries a point of the base frame into the mask's frame. Mappings compose
and invert exactly, so copy-vs-copy transfer (query -> source -> reference) has no
rounding and no holes. Dense tables are only built on request (:meth:`Trace.to_dense`).
The half-plane and mask tests themselves are in :mod:`icdlib.pixtrace.region`.

Patch overlap matrices (:func:`~icdlib.pixtrace.overlap`) build on these, in
:mod:`icdlib.pixtrace.patch_overlap`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from icdlib.pixtrace.region import Size, affine_rows, mask_hits, prune_rows, rect_rows, snap


def _check_matrix(matrix: np.ndarray, what: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"{what}: matrix must be 3x3, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{what}: matrix has non-finite entries")
    if abs(np.linalg.det(m)) < 1e-12:
        raise ValueError(f"{what}: matrix is singular (det={np.linalg.det(m):.3g})")
    return snap(m)


def _check_size(size: Sequence[int], what: str) -> Size:
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"{what}: size must be (width>=1, height>=1), got {tuple(size)}")
    return int(size[0]), int(size[1])


@dataclass(frozen=True, eq=False)
class Step:
    """One traced edit step.

    Attributes:
        matrix: (3, 3) float64, maps input-canvas points ``(x, y, 1)`` to output-canvas
            points (projective; divide by the third coordinate).
        in_size: (width, height) of the input canvas.
        out_size: (width, height) of the output canvas.
        mask: optional bool array ``[H_out, W_out]``; False marks output pixels that are
            covered (overlay, foreign content) and therefore untraceable.
        name: the edit op that produced this step (for error messages and display).
    """

    matrix: np.ndarray
    in_size: Size
    out_size: Size
    mask: np.ndarray | None = None
    name: str = "step"

    def __post_init__(self):
        object.__setattr__(self, "matrix", _check_matrix(self.matrix, self.name))
        object.__setattr__(self, "in_size", _check_size(self.in_size, self.name))
        object.__setattr__(self, "out_size", _check_size(self.out_size, self.name))
        if self.mask is not None:
            m = np.asarray(self.mask, dtype=bool)
            if m.shape != (self.out_size[1], self.out_size[0]):
                raise ValueError(
                    f"{self.name}: mask shape {m.shape} does not match out_size "
                    f"(H, W)=({self.out_size[1]}, {self.out_size[0]})"
                )
            object.__setattr__(self, "mask", m)

    @staticmethod
    def occlusion(size: Size, mask: np.ndarray, name: str = "occlusion") -> "Step":
        """A step that keeps geometry and marks ``~mask`` pixels untraceable."""
        return Step(np.eye(3), size, size, mask=mask, name=name)


@dataclass(frozen=True, eq=False)
class Mapping:
    """An exact map between two frames, with its validity region.

    Attributes:
        matrix: (3, 3) float64, base frame -> target frame (projective).
        base_size, target_size: (width, height) of the two frames.
        ge, gt: (K, 3) half-plane rows in homogeneous base coordinates: a base point
            ``p = (x, y, 1)`` is valid iff ``ge @ p >= 0`` and ``gt @ p > 0``.
        masks: tuple of ``(mask [H, W] bool, matrix base -> mask frame)``; a valid point
            must land on a True pixel of every mask.
    """

    matrix: np.ndarray
    base_size: Size
    target_size: Size
    ge: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    gt: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    masks: tuple = ()

    @staticmethod
    def identity(size: Size) -> "Mapping":
        size = _check_size(size, "identity")
        ge, gt = rect_rows(size)
        return Mapping(np.eye(3), size, size, ge, gt).pruned()

    @staticmethod
    def from_steps(source_size: Size, steps: Sequence[Step]) -> "Mapping":
        """Forward mapping source -> output of the last step."""
        size = _check_size(source_size, "source")
        mats, ge_all, gt_all, masks = np.eye(3), [], [], []
        ge0, gt0 = rect_rows(size)
        ge_all.append(ge0)
        gt_all.append(gt0)
        for st in steps:
            if st.in_size != size:
                raise ValueError(
                    f"{st.name}: step input size {st.in_size} does not match the "
                    f"previous output size {size}"
                )
            mats = snap(st.matrix @ mats)
            ge, gt = rect_rows(st.out_size)
            ge_all.append(ge @ mats)
            gt_all.append(gt @ mats)
            if st.mask is not None:
                masks.append((st.mask, mats.copy()))
            size = st.out_size
        m = Mapping(
            mats, source_size, size, np.concatenate(ge_all), np.concatenate(gt_all), tuple(masks)
        )
        return m.pruned()

    def pruned(self) -> "Mapping":
        return Mapping(
            self.matrix,
            self.base_size,
            self.target_size,
            prune_rows(self.ge, self.base_size, strict=False),
            prune_rows(self.gt, self.base_size, strict=True),
            self.masks,
        )

    def inverse(self) -> "Mapping":
        """The exact inverse mapping, target frame -> base frame."""
        inv = snap(np.linalg.inv(self.matrix))
        # a base-frame row r becomes r @ inv in the target frame; the rows already
        # contain every canvas's w > 0, so signs carry over unchanged.
        ge_b, gt_b = rect_rows(self.base_size)
        ge = np.concatenate([self.ge, ge_b]) @ inv
        gt = np.concatenate([self.gt, gt_b]) @ inv
        masks = tuple((mk, snap(mm @ inv)) for mk, mm in self.masks)
        return Mapping(inv, self.target_size, self.base_size, ge, gt, masks).pruned()

    def then(self, other: "Mapping") -> "Mapping":
        """Compose: apply ``self`` (base -> mid), then ``other`` (mid -> target)."""
        if other.base_size != self.target_size:
            raise ValueError(
                f"cannot compose: target size {self.target_size} != next base size "
                f"{other.base_size}"
            )
        a = self.matrix
        ge_t, gt_t = rect_rows(self.target_size)
        ge = np.concatenate([self.ge, ge_t @ a, other.ge @ a])
        gt = np.concatenate([self.gt, gt_t @ a, other.gt @ a])
        masks = self.masks + tuple((mk, snap(mm @ a)) for mk, mm in other.masks)
        m = snap(other.matrix @ a)
        return Mapping(m, self.base_size, other.target_size, ge, gt, masks).pruned()

    # ------------------------------------------------------------------ evaluation
    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Map points of the base frame to the target frame.

        Args:
            xy: ``(..., 2)`` float array of base-frame points (pixel convention above).
        Returns:
            ``(..., 2)`` float64 target-frame points, NaN where the point is invalid.
        """
        xy = np.asarray(xy, dtype=np.float64)
        shape = xy.shape
        p = np.concatenate([xy.reshape(-1, 2), np.ones((xy.size // 2, 1))], 1)
        ok = self._valid(p)
        q = affine_rows(self.matrix, p[:, 0:1], p[:, 1:2])  # (N, 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = q[:, :2] / q[:, 2:3] if (self.matrix[2] != (0, 0, 1)).any() else q[:, :2]
        out[~ok] = np.nan
        return out.reshape(shape)

    def valid(self, xy: np.ndarray) -> np.ndarray:
        """Bool array ``(...)``: which base points map to a valid target point."""
        xy = np.asarray(xy, dtype=np.float64)
        p = np.concatenate([xy.reshape(-1, 2), np.ones((xy.size // 2, 1))], 1)
        return self._valid(p).reshape(xy.shape[:-1])

    def _valid(self, p: np.ndarray) -> np.ndarray:
        x, y = p[:, 0:1], p[:, 1:2]
        ok = np.ones(len(p), dtype=bool)
        if len(self.ge):
            ok &= (affine_rows(self.ge, x, y) >= 0).all(1)
        if len(self.gt):
            ok &= (affine_rows(self.gt, x, y) > 0).all(1)
        if self.masks:
            ok &= mask_hits(self.masks, p[:, 0], p[:, 1])
        return ok

    def to_dense(self, size: Size | None = None) -> np.ndarray:
        """Target coordinates of every base pixel centre, ``[H, W, 2]`` float32, NaN invalid.

        ``size`` gives a reduced (or enlarged) sampling grid ``(W', H')`` spanning the
        whole base frame: sample (c, r) sits at ``((c+0.5) W / W', (r+0.5) H / H')``.
        """
        return self.apply(pixel_centres(self.base_size, size)).astype(np.float32)


def pixel_centres(size: Size, grid: Size | None = None) -> np.ndarray:
    """``[H', W', 2]`` float64 centres of a ``grid`` (default: every pixel) over ``size``."""
    w, h = size
    gw, gh = grid if grid is not None else size
    xs = (np.arange(gw) + 0.5) * (w / gw)
    ys = (np.arange(gh) + 0.5) * (h / gh)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx, gy], -1)


class Trace:
    """Where each pixel of an edited image came from in its source.

    Built from the source size and the chain of :class:`Step` objects the edits logged.
    Evaluation is lazy and analytic; ``to_dense`` materialises a table on request.

    Attributes:
        source_size: (width, height) of the source image.
        size: (width, height) of the edited image.
        steps: the logged steps, in order of application.
    """

    def __init__(self, source_size: Size, steps: Sequence[Step] = ()):
        self.source_size = _check_size(source_size, "source")
        self.steps = tuple(steps)
        self.forward = Mapping.from_steps(self.source_size, self.steps)  # source -> edited
        self.size = self.forward.target_size
        self._backward: Mapping | None = None

    @property
    def backward(self) -> Mapping:
        """The mapping edited -> source (:meth:`Mapping.inverse` of ``forward``, built on
        first use: a trace that is only extended never pays for it)."""
        if self._backward is None:
            self._backward = self.forward.inverse()
        return self._backward

    def then(self, step: Step) -> "Trace":
        """A new trace with one more step appended."""
        return Trace(self.source_size, self.steps + (step,))

    def to_source(self, xy: np.ndarray) -> np.ndarray:
        """Edited-image points ``(..., 2)`` -> source points, NaN where untraceable."""
        return self.backward.apply(xy)

    def from_source(self, xy: np.ndarray) -> np.ndarray:
        """Source points ``(..., 2)`` -> edited-image points, NaN where not visible."""
        return self.forward.apply(xy)

    def to_dense(self, size: Size | None = None) -> np.ndarray:
        """``[H, W, 2]`` float32: source (x, y) of every edited pixel centre, NaN invalid."""
        return self.backward.to_dense(size)

    def valid_mask(self, size: Size | None = None) -> np.ndarray:
        """``[H, W]`` bool: which edited pixels trace back to the source."""
        return self.backward.valid(pixel_centres(self.size, size))

    def __repr__(self) -> str:
        ops = ", ".join(s.name for s in self.steps) or "identity"
        return f"Trace(source_size={self.source_size}, size={self.size}, steps=[{ops}])"


def transfer(query: Trace, reference: Trace) -> Mapping:
    """Exact query-frame -> reference-frame mapping through the shared source.

    Both traces must start from the same source size. A query pixel is valid iff it
    traces to the source and that source point is visible in the reference.
    """
    if query.source_size != reference.source_size:
        raise ValueError(
            f"transfer: query source size {query.source_size} != reference source size "
            f"{reference.source_size}; both must be edits of the same source"
        )
    return query.backward.then(reference.forward)


def patch_grid(size: Size, patch: int) -> tuple[int, int]:
    """``(cols, rows)`` of whole patches, the remainder dropped (as a ViT patch embed)."""
    if isinstance(patch, bool) or int(patch) != patch or patch < 1:
        raise ValueError(f"overlap: patch must be an integer >= 1, got {patch!r}")
    cols, rows = size[0] // patch, size[1] // patch
    if cols < 1 or rows < 1:
        raise ValueError(f"overlap: image size {size} is smaller than one patch of {patch}")
    return cols, rows
