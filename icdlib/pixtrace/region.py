"""The validity region of a mapping: half-plane rows, masks, and the point tests on them.

A :class:`~icdlib.pixtrace.trace.Mapping` keeps a base point ``p = (x, y, 1)`` only where
every half-plane row holds (``ge @ p >= 0``, ``gt @ p > 0``) and every mask has a True
pixel under it. Every path that evaluates these tests (the dense NumPy form in
:mod:`icdlib.pixtrace.trace`, the torch row segments in :mod:`icdlib.pixtrace.torch_counts`,
the compiled kernel in :mod:`icdlib.pixtrace.kernel`) uses the one float64 expression
:func:`lin` (``u * x + off``, no fused multiply-add), so they agree bit for bit.
Conventions as in :mod:`icdlib.pixtrace`: continuous ``(x, y)``, sizes ``(width, height)``.
"""

from __future__ import annotations

import numpy as np

Size = tuple[int, int]  # (width, height)


def snap(m: np.ndarray, rel: float = 1e-13) -> np.ndarray:
    """A float64 copy of ``m`` (``(..., K)``, e.g. a 3x3 matrix or ``(K, 3)`` rows) with the entries
    below ``rel`` x their row's largest magnitude set to zero: rounding residue such as
    cos(90 deg) = 6e-17, which would otherwise tilt an exact grid by 1e-15 px and make pixel
    centres that sit exactly on a patch boundary fall on either side."""
    m = np.array(m, dtype=np.float64)
    a = np.abs(m)
    m[a < rel * a.max(-1, keepdims=True)] = 0.0
    return m


def lin(u, x, off):
    """``u * x + off`` (NumPy arrays, torch tensors or floats, broadcast): the one expression (two
    rounded float64 ops, no fused multiply-add) every point test uses, so dense and
    row-segment evaluations agree bit for bit."""
    return u * x + off


def affine_rows(rows: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(N, K)``: ``rows[k, 0] * x + (rows[k, 1] * y + rows[k, 2])`` for points ``x, y (N, 1)``."""
    return lin(rows[:, 0], x, lin(rows[:, 1], y, rows[:, 2]))


def mask_hits(masks: tuple, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bool array (``x``, ``y`` broadcast): base points landing on True in every mask.

    ``masks`` holds ``(mask [H, W] bool, matrix base -> mask frame)`` pairs; a point hits
    mask pixel ``(floor(mx), floor(my))``. Axis-aligned matrices are evaluated per row and
    per column, with the same float64 values as the general per-point form.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.ones(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    for mk, mm in masks:
        h, w = mk.shape
        with np.errstate(divide="ignore", invalid="ignore"):
            if mm[0, 1] == 0 and mm[1, 0] == 0 and (mm[2] == (0, 0, 1)).all():
                mx = np.floor(lin(mm[0, 0], x, mm[0, 2]))
                my = np.floor(lin(mm[1, 1], y, mm[1, 2]))
                den = np.ones(())
            else:
                den = lin(mm[2, 0], x, lin(mm[2, 1], y, mm[2, 2]))
                mx = np.floor(lin(mm[0, 0], x, lin(mm[0, 1], y, mm[0, 2])) / den)
                my = np.floor(lin(mm[1, 0], x, lin(mm[1, 1], y, mm[1, 2])) / den)
        okx, oky = (mx >= 0) & (mx < w), (my >= 0) & (my < h)
        inside = okx & oky & (den > 0)
        col = np.where(okx, mx, 0).astype(np.int64)
        row = np.where(oky, my, 0).astype(np.int64)
        ok &= inside & mk[row, col]
    return ok


def rect_rows(size: Size) -> tuple[np.ndarray, np.ndarray]:
    """Half-planes of the canvas ``[0, W) x [0, H)`` in homogeneous coordinates.

    Returns ``(ge, gt)``: a point ``q`` (homogeneous, 3-vector) lies on the canvas iff
    ``ge @ q >= 0`` and ``gt @ q > 0`` (the ``gt`` set includes ``w > 0``).
    """
    w, h = size
    ge = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    gt = np.array([[-1.0, 0.0, w], [0.0, -1.0, h], [0.0, 0.0, 1.0]])
    return ge, gt


def prune_rows(rows: np.ndarray, base_size: Size, strict: bool) -> np.ndarray:
    """``rows`` (``(K, 3)`` float64 half-planes of the base frame) less those that hold on the
    whole ``base_size`` canvas (``> 0`` with ``strict``, else ``>= 0``) and duplicates: ``(K', 3)``.

    A row is linear in the base point, so if it holds at the four corners of the base
    canvas (a convex set) it holds everywhere on it.
    """
    if len(rows) == 0:
        return rows.reshape(0, 3)
    rows = snap(rows)
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
    first: dict[tuple, int] = {}
    for i, key in enumerate(map(tuple, norm)):
        first.setdefault(key, i)
    if len(first) == len(rows):  # no duplicates: every row, in order
        return rows
    return rows[sorted(first.values())]
