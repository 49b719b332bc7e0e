"""PixTrace: analytic pixel tracing through image edits.

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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

Size = tuple[int, int]  # (width, height)


def _check_matrix(matrix: np.ndarray, what: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"{what}: matrix must be 3x3, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{what}: matrix has non-finite entries")
    if abs(np.linalg.det(m)) < 1e-12:
        raise ValueError(f"{what}: matrix is singular (det={np.linalg.det(m):.3g})")
    return m


def _check_size(size: Sequence[int], what: str) -> Size:
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"{what}: size must be (width>=1, height>=1), got {tuple(size)}")
    return int(size[0]), int(size[1])


def _lin(u, x, off):
    """``u * x + off``: the one expression (two rounded float64 ops, no fused multiply-add)
    every point test uses, so dense and row-segment evaluations agree bit for bit."""
    return u * x + off


def _affine_rows(rows: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(N, K)``: ``rows[k, 0] * x + (rows[k, 1] * y + rows[k, 2])`` for points ``x, y (N, 1)``."""
    return _lin(rows[:, 0], x, _lin(rows[:, 1], y, rows[:, 2]))


def _mask_hits(masks: tuple, p: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: homogeneous base points ``p (N, 3)`` landing on True in every mask."""
    ok = np.ones(len(p), dtype=bool)
    for mk, mm in masks:
        q = p @ mm.T
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.floor(q[:, 0] / q[:, 2])
            y = np.floor(q[:, 1] / q[:, 2])
        h, w = mk.shape
        inside = ok & (q[:, 2] > 0) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
        hit = np.zeros(len(p), dtype=bool)
        hit[inside] = mk[y[inside].astype(np.int64), x[inside].astype(np.int64)]
        ok &= hit
    return ok


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


def _rect_rows(size: Size) -> tuple[np.ndarray, np.ndarray]:
    """Half-planes of the canvas ``[0, W) x [0, H)`` in homogeneous coordinates.

    Returns ``(ge, gt)``: a point ``q`` (homogeneous, 3-vector) lies on the canvas iff
    ``ge @ q >= 0`` and ``gt @ q > 0`` (the ``gt`` set includes ``w > 0``).
    """
    w, h = size
    ge = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    gt = np.array([[-1.0, 0.0, w], [0.0, -1.0, h], [0.0, 0.0, 1.0]])
    return ge, gt


def _prune(rows: np.ndarray, base_size: Size, strict: bool) -> np.ndarray:
    """Drop half-planes that hold on the whole base canvas, and duplicates.

    A row is linear in the base point, so if it holds at the four corners of the base
    canvas (a convex set) it holds everywhere on it.
    """
    if len(rows) == 0:
        return rows.reshape(0, 3)
    w, h = base_size
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64).T
    vals = rows @ corners
    keep = ~((vals > 0).all(1) if strict else (vals >= 0).all(1))
    rows = rows[keep]
    if len(rows) == 0:
        return rows.reshape(0, 3)
    if len(rows) == 1:
        return rows
    # duplicates up to a positive factor: first occurrence of each normalised row
    norm = np.round(rows / np.abs(rows).max(1, keepdims=True), 12).tolist()
    first = dict.fromkeys(map(tuple, norm), -1)
    for i, key in enumerate(map(tuple, norm)):
        if first[key] < 0:
            first[key] = i
    return rows[sorted(first.values())]


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
        ge, gt = _rect_rows(size)
        return Mapping(np.eye(3), size, size, ge, gt).pruned()

    @staticmethod
    def from_steps(source_size: Size, steps: Sequence[Step]) -> "Mapping":
        """Forward mapping source -> output of the last step."""
        size = _check_size(source_size, "source")
        mats, ge_all, gt_all, masks = np.eye(3), [], [], []
        ge0, gt0 = _rect_rows(size)
        ge_all.append(ge0)
        gt_all.append(gt0)
        for st in steps:
            if st.in_size != size:
                raise ValueError(
                    f"{st.name}: step input size {st.in_size} does not match the "
                    f"previous output size {size}"
                )
            mats = st.matrix @ mats
            ge, gt = _rect_rows(st.out_size)
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
            _prune(self.ge, self.base_size, strict=False),
            _prune(self.gt, self.base_size, strict=True),
            self.masks,
        )

    def inverse(self) -> "Mapping":
        """The exact inverse mapping, target frame -> base frame."""
        inv = np.linalg.inv(self.matrix)
        # a base-frame row r becomes r @ inv in the target frame; the rows already
        # contain every canvas's w > 0, so signs carry over unchanged.
        ge_b, gt_b = _rect_rows(self.base_size)
        ge = np.concatenate([self.ge, ge_b]) @ inv
        gt = np.concatenate([self.gt, gt_b]) @ inv
        masks = tuple((mk, mm @ inv) for mk, mm in self.masks)
        return Mapping(inv, self.target_size, self.base_size, ge, gt, masks).pruned()

    def then(self, other: "Mapping") -> "Mapping":
        """Compose: apply ``self`` (base -> mid), then ``other`` (mid -> target)."""
        if other.base_size != self.target_size:
            raise ValueError(
                f"cannot compose: target size {self.target_size} != next base size "
                f"{other.base_size}"
            )
        a = self.matrix
        ge_t, gt_t = _rect_rows(self.target_size)
        ge = np.concatenate([self.ge, ge_t @ a, other.ge @ a])
        gt = np.concatenate([self.gt, gt_t @ a, other.gt @ a])
        masks = self.masks + tuple((mk, mm @ a) for mk, mm in other.masks)
        return Mapping(other.matrix @ a, self.base_size, other.target_size, ge, gt, masks).pruned()

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
        q = _affine_rows(self.matrix, p[:, 0:1], p[:, 1:2])  # (N, 3)
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
            ok &= (_affine_rows(self.ge, x, y) >= 0).all(1)
        if len(self.gt):
            ok &= (_affine_rows(self.gt, x, y) > 0).all(1)
        if self.masks:
            ok &= _mask_hits(self.masks, p)
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
        self.backward = self.forward.inverse()  # edited -> source

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


# ---------------------------------------------------------------------- overlap
@dataclass(frozen=True)
class OverlapConfig:
    """``params.yaml:pixtrace`` -- patch-overlap targets."""

    patch: int = 16  # ViT-S/16 patch size: 14 x 14 = 196 patches at 224 px, as CopyNCE uses
    chunk: int = 32  # pairs evaluated together; ~1 MB float64 temporaries per tensor stay in cache

    def __post_init__(self):
        if int(self.patch) < 1:
            raise ValueError(f"pixtrace: patch must be >= 1, got {self.patch}")
        if int(self.chunk) < 1:
            raise ValueError(f"pixtrace: chunk must be >= 1, got {self.chunk}")


def patch_grid(size: Size, patch: int) -> tuple[int, int]:
    """``(cols, rows)`` of whole patches, the remainder dropped (as a ViT patch embed)."""
    if isinstance(patch, bool) or int(patch) != patch or patch < 1:
        raise ValueError(f"overlap: patch must be an integer >= 1, got {patch!r}")
    cols, rows = size[0] // patch, size[1] // patch
    if cols < 1 or rows < 1:
        raise ValueError(f"overlap: image size {size} is smaller than one patch of {patch}")
    return cols, rows


def overlap(query: Trace, reference: Trace, patch: int, device: str | torch.device = "cpu"):
    """Patch overlap matrix of one query/reference pair.

    Returns:
        ``torch.float32 [Nq, Nr + 1]``: entry (i, j) is the fraction of query patch i's
        pixels (pixel centres) whose traced position falls in reference patch j; the last
        column holds the fraction that traces nowhere (untraceable, or outside the
        reference's patch grid). Patches are numbered row-major over
        ``floor(H/patch) x floor(W/patch)`` grids; rows sum to 1.
    """
    return overlap_batch([(query, reference)], patch, device=device)[0]


def overlap_batch(
    pairs: Sequence[tuple[Trace, Trace]],
    patch: int,
    device: str | torch.device = "cpu",
    chunk: int = OverlapConfig.chunk,
) -> torch.Tensor:
    """Batched :func:`overlap` for pairs whose query sizes and reference sizes agree.

    Returns ``torch.float32 [B, Nq, Nr + 1]`` on ``device``.
    """
    if len(pairs) == 0:
        raise ValueError("overlap_batch: no pairs given")
    maps = [transfer(q, r) for q, r in pairs]
    return overlap_from_mappings(maps, patch, device=device, chunk=chunk)


def overlap_from_mappings(
    maps: Sequence[Mapping],
    patch: int,
    device: str | torch.device = "cpu",
    chunk: int = OverlapConfig.chunk,
) -> torch.Tensor:
    """:func:`overlap_batch` from precomputed query -> reference mappings.

    Mask-free mappings take the exact row-segment path (:func:`_segment_counts`);
    mappings with masks take the per-pixel path (:func:`_dense_counts`). Both give the
    same integer counts of pixel centres.
    """
    if len(maps) == 0:
        raise ValueError("overlap_batch: no pairs given")
    if int(chunk) < 1:
        raise ValueError(f"overlap_batch: chunk must be >= 1, got {chunk}")
    qsize, rsize = maps[0].base_size, maps[0].target_size
    for m in maps:
        if m.base_size != qsize or m.target_size != rsize:
            raise ValueError(
                f"overlap_batch: all pairs need the same sizes; got query {m.base_size} vs "
                f"{qsize}, reference {m.target_size} vs {rsize}"
            )
    qgrid, rgrid = patch_grid(qsize, patch), patch_grid(rsize, patch)
    nq, nr = qgrid[0] * qgrid[1], rgrid[0] * rgrid[1]
    dev = torch.device(device)
    out = torch.zeros(len(maps), nq, nr + 1, dtype=torch.float32, device=dev)
    plain = [i for i, m in enumerate(maps) if not m.masks]
    for s in range(0, len(plain), chunk):
        idx = plain[s : s + chunk]
        mats, rows, strict = _stack([maps[i] for i in idx], dev)
        if idx[-1] - idx[0] == len(idx) - 1:  # contiguous: accumulate in place
            _segment_counts(mats, rows, strict, patch, qgrid, rgrid, out[idx[0] : idx[-1] + 1])
        else:
            part = torch.zeros(len(idx), nq, nr + 1, dtype=torch.float32, device=dev)
            _segment_counts(mats, rows, strict, patch, qgrid, rgrid, part)
            out[torch.as_tensor(idx, device=dev)] = part
    for i, m in enumerate(maps):
        if m.masks:
            mats, rows, strict = _stack([m], dev)
            out[i] = _dense_counts(mats, rows, strict, patch, qgrid, rgrid, m.masks)[0]
    out[..., nr] = 1.0 - out[..., :nr].sum(-1)
    return out


def _stack(maps: Sequence[Mapping], dev: torch.device):
    """Matrices ``(B, 3, 3)`` and zero-padded half-plane rows ``(B, K, 3)`` as float64,
    with ``strict (B, K)`` bool (True: ``> 0``, False: ``>= 0``; padding ``0 >= 0`` holds)."""
    k = max(len(m.ge) + len(m.gt) for m in maps)
    rows = np.zeros((len(maps), max(k, 1), 3))
    strict = np.zeros((len(maps), max(k, 1)), dtype=bool)
    for i, m in enumerate(maps):
        a, b = len(m.ge), len(m.gt)
        rows[i, :a], rows[i, a : a + b] = m.ge, m.gt
        strict[i, a : a + b] = True
    mats = np.stack([m.matrix for m in maps])
    as_t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    return as_t(mats), as_t(rows), as_t(strict)


def _row_offsets(mats: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(B, 3, R)``: ``m[i, 1] * y + m[i, 2]`` for each matrix row i and pixel row y."""
    return _lin(mats[:, :, 1:2], y, mats[:, :, 2:3])


def _project(mats, offs, xc, axis: int, affine: bool):
    """Target coordinate ``axis`` (0: x, 1: y) of query points ``(xc, y)``.

    ``offs`` come from :func:`_row_offsets` and must broadcast with ``xc`` after the
    batch dimension; the same float64 expressions serve every path, so the row-segment
    and per-pixel counts agree exactly.
    """
    shape = (-1,) + (1,) * (offs.dim() - 2)
    num = _lin(mats[:, axis, 0].view(shape), xc, offs[:, axis])
    if affine:
        return num
    return num / _lin(mats[:, 2, 0].view(shape), xc, offs[:, 2])


def _holds(rows_u, off, xc, strict):
    val = _lin(rows_u, xc, off)
    return torch.where(strict, val > 0, val >= 0)


def _root_pixel(x: torch.Tensor, width: int) -> torch.Tensor:
    """Index (float64) of the pixel whose centre is nearest the root ``x``, in [-1, width]."""
    x = torch.nan_to_num(x, nan=-1.0, posinf=float(width), neginf=-1.0)
    return torch.floor(x.clamp(-1.0, float(width)))


def _segment_counts(mats, rows, strict, patch, qgrid, rgrid, out: torch.Tensor) -> None:
    """Add the overlap fractions of mask-free mappings to ``out`` (contiguous float32
    ``(B, Nq, Nr + 1)``, zeros; the last column is left to the caller), row by row.

    Along a query pixel row the validity region is one interval ``[lo, hi)`` (a convex
    polygon cut by a line) and the target x and y are monotone (projective maps with
    ``w > 0``), so the target patch is constant between breakpoints: the pixels where a
    target patch column/row boundary ``k * patch`` or a query patch boundary is crossed.
    Each breakpoint comes from the root of its linear equation and is settled exactly by
    evaluating the pixel nearest the root; the patch state at ``lo`` is evaluated, and a
    cumulative sum of the breakpoints' +-1 steps gives every segment's patch.
    Cost ``O(B * H * (Wq/p + Wr/p + Hr/p + K))`` instead of ``O(B * H * W * K)``.
    """
    dev, f64 = mats.device, torch.float64
    (qc, qr), (rc, rr) = qgrid, rgrid
    b, wg = mats.shape[0], qc * patch
    affine = _is_affine(mats)
    y = torch.arange(qr * patch, device=dev, dtype=f64) + 0.5  # (R,) pixel-row centres

    # validity interval [lo, hi) of pixel columns, per row: (B, R, 1)
    u = rows[:, :, 0:1]  # (B, K, 1)
    off = _lin(rows[:, :, 1:2], y, rows[:, :, 2:3])  # (B, K, R)
    n = _root_pixel(off * (-1.0 / u), wg)
    ok = _holds(u, off, n + 0.5, strict[:, :, None])
    lo = torch.where(u > 0, n + (~ok), torch.where((u == 0) & ~ok, float(wg), 0.0))
    hi = torch.where(u < 0, n + ok, float(wg))
    lo = lo.amax(1).clamp_(0, wg)[..., None]
    hi = torch.maximum(hi.amin(1).clamp_(max=wg)[..., None], lo)

    # patch state at lo: x and y cells clamped to [-1, rc] x [-1, rr]
    offs = _row_offsets(mats, y)[..., None]  # (B, 3, R, 1)
    xc = lo + 0.5
    cx = _project(mats, offs, xc, 0, affine).div_(patch).floor_().nan_to_num_(0).clamp_(-1, rc)
    cy = _project(mats, offs, xc, 1, affine).div_(patch).floor_().nan_to_num_(0).clamp_(-1, rr)
    step_y = rc + 2  # state = (cx + 1) + step_y * (cy + 1)
    state0 = (cx + 1).add_(cy.add_(1).mul_(step_y))

    # target boundaries t = k * patch (x thresholds, then y): first pixel past each, (B, R, T)
    k = torch.cat([torch.arange(rc + 1, device=dev), torch.arange(rr + 1, device=dev)]).to(f64)
    axis = torch.cat([torch.zeros(rc + 1, dtype=torch.long), torch.ones(rr + 1, dtype=torch.long)])
    axis = axis.to(dev)
    t = k * patch
    a0 = mats[:, axis, 0][:, None, :]  # (B, 1, T)
    offa = offs[:, :, :, 0].transpose(1, 2)[:, :, axis]  # (B, R, T)
    slope = a0 - t * mats[:, 2, 0, None, None]  # (B, 1, T): d(num - t den)/dx
    root = (t - offa) if affine else (t * offs[:, 2] - offa)
    n = _root_pixel(root.mul_(1.0 / slope), wg)
    xc = n + 0.5
    proj = _lin(a0, xc, offa)
    if not affine:
        proj = proj.div_(_lin(mats[:, 2, 0, None, None], xc, offs[:, 2]))
    inc = slope > 0
    e = n.add_(proj.div_(patch).floor_().ge_(k) != inc).clamp_(min=lo, max=hi)
    # each event: its pixel and the step it adds to the state (0 when already in state0)
    unit = torch.where(axis == 0, 1.0, float(step_y))
    step = torch.where(e > lo, torch.where(inc, unit, -unit), 0.0)
    qpos = (torch.arange(1, qc, device=dev, dtype=f64) * patch).expand(b, len(y), qc - 1)
    pos = torch.cat([lo, hi, e, torch.minimum(torch.maximum(qpos, lo), hi)], -1)
    step = torch.cat([torch.zeros_like(lo), torch.zeros_like(hi), step, torch.zeros_like(qpos)], -1)
    # sort events by pixel with the step packed in the low bits: key = pos * span + step + step_y
    span = 1 << (2 * step_y + 1).bit_length()
    wide = (wg + 1) * span >= 2**31
    key = _sort_rows(pos.mul_(span).add_(step).add_(step_y).to(torch.int64 if wide else torch.int32))
    pos = torch.div(key, span, rounding_mode="floor")
    state = (key - pos * span - step_y).cumsum(-1).add_(state0.to(key.dtype))
    state = state[..., :-1].clamp_(0, step_y * (rr + 2) - 1)  # guards degenerate rows only
    length = pos[..., 1:] - pos[..., :-1]  # (B, R, E-1) pixels per segment
    qcol = pos[..., :-1].clamp(max=wg - 1).div_(patch, rounding_mode="floor")

    # flat index into out: query patch * (Nr + 1) + reference patch (Nr: outside the grid)
    cxs = torch.arange(-1, rc + 1, device=dev)
    cys = torch.arange(-1, rr + 1, device=dev)
    inside = ((cxs >= 0) & (cxs < rc))[None, :] & ((cys >= 0) & (cys < rr))[:, None]
    ref = torch.where(inside, cys[:, None] * rc + cxs[None, :], rc * rr).reshape(-1)
    qrow = torch.div(torch.arange(len(y), device=dev), patch, rounding_mode="floor")
    base = (torch.arange(b, device=dev)[:, None] * qr + qrow) * qc  # (B, R) first query patch
    flat = (qcol.long() + base[..., None]).mul_(rc * rr + 1).add_(ref[state.long()])
    weight = length.to(torch.float32).div_(patch * patch)
    out.view(-1).index_add_(0, flat.reshape(-1), weight.reshape(-1))


def _sort_rows(key: torch.Tensor) -> torch.Tensor:
    """Sort integer keys along the last axis (numpy's vectorised sort on CPU)."""
    if key.device.type == "cpu":
        return torch.from_numpy(np.sort(key.numpy(), axis=-1))
    return key.sort(-1).values


def _is_affine(mats: torch.Tensor) -> bool:
    """True when every matrix's last row is ``(0, 0, 1)`` (no division needed)."""
    last = torch.tensor([0.0, 0.0, 1.0], device=mats.device, dtype=mats.dtype)
    return bool((mats[:, 2] == last).all())


def _dense_counts(mats, rows, strict, patch, qgrid, rgrid, masks=()) -> torch.Tensor:
    """Overlap fractions ``(B, Nq, Nr + 1)`` float32, evaluated pixel by pixel.

    The path for masked maps, and the reference for :func:`_segment_counts`.

    Evaluates every query pixel centre with the same float64 expressions; ``masks`` (the
    :attr:`Mapping.masks` of a single mapping, B = 1) are looked up pixel by pixel.
    """
    dev, f64 = mats.device, torch.float64
    (qc, qr), (rc, rr) = qgrid, rgrid
    b = mats.shape[0]
    y = torch.arange(qr * patch, device=dev, dtype=f64) + 0.5
    xc = torch.arange(qc * patch, device=dev, dtype=f64) + 0.5  # (Wg,)
    off = _lin(rows[:, :, 1:2], y, rows[:, :, 2:3])[..., None]  # (B, K, R, 1)
    ok = _holds(rows[:, :, 0, None, None], off, xc, strict[:, :, None, None]).all(1)
    if masks:
        if b != 1:
            raise ValueError(f"overlap: masks need one mapping at a time, got {b}")
        gx, gy = torch.meshgrid(xc, y, indexing="xy")
        pts = torch.stack([gx, gy], -1).reshape(-1, 2).cpu().numpy()
        hit = _mask_hits(masks, np.concatenate([pts, np.ones((len(pts), 1))], 1))
        ok &= torch.as_tensor(hit, device=dev).view(1, len(y), len(xc))
    offs = _row_offsets(mats, y)[..., None]  # (B, 3, R, 1)
    affine = _is_affine(mats)
    cx = _project(mats, offs, xc, 0, affine).div_(patch).floor_()
    cy = _project(mats, offs, xc, 1, affine).div_(patch).floor_()
    ok &= (cx >= 0) & (cx < rc) & (cy >= 0) & (cy < rr)
    ridx = torch.where(ok, cy * rc + cx, float(rc * rr)).long()  # (B, R, Wg)
    qr_i = torch.div(torch.arange(len(y), device=dev), patch, rounding_mode="floor")
    qc_i = torch.div(torch.arange(len(xc), device=dev), patch, rounding_mode="floor")
    qidx = qr_i[:, None] * qc + qc_i[None, :]
    flat = (torch.arange(b, device=dev)[:, None, None] * (qr * qc) + qidx) * (rc * rr + 1) + ridx
    n = torch.bincount(flat.reshape(-1), minlength=b * qr * qc * (rc * rr + 1))
    return n.view(b, qr * qc, rc * rr + 1).to(torch.float32) / float(patch * patch)
