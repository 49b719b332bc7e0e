"""Compiled CPU counting of patch overlaps (numba): the CPU path of :mod:`icdlib.pixtrace.patch_overlap`.

For every pair and every query pixel centre ``(c + 0.5, r + 0.5)`` of the patch grid,
the kernel decides what the torch reference decides, with the same float64 expressions
(``u * x + off``: two rounded operations, no fused multiply-add), so boundary ties
resolve identically:

* the half-plane rows of :attr:`Mapping.ge` (``val >= 0``) and :attr:`Mapping.gt`
  (``val >= tiny``: ``> 0`` for every value but positive subnormals, as the torch path);
* the projective map, divided by ``w`` unless the matrix's last row is ``(0, 0, 1)``;
* the reference patch ``floor(coordinate / patch)`` (``* 2**-k`` for ``patch = 2**k``,
  which is the same number);
* each mask by nearest lookup through its own 3x3 matrix (as :func:`icdlib.pixtrace.region.mask_hits`).

Rounding keeps order: a rounded ``u * x + off`` is monotone in ``x``. Along a pixel row
each half-plane therefore holds on a prefix or suffix of the columns, so the valid
columns are one interval ``[lo, hi)``, found exactly from the root and a few point
tests; for an affine map the reference cell, and an axis-aligned mask's column, are
monotone too, which lets whole spans be settled from their end pixels
(:func:`_count_pair`). Counts are integers, so nothing depends on summation order.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

_TINY = float(np.finfo(np.float64).tiny)


@njit(cache=True, inline="always")
def _holds(u, x, off, th):
    """Half-plane test ``u * x + off >= th`` (float64, the torch path's expression)."""
    return u * x + off >= th


@njit(cache=True)
def _row_interval(rows, th, b, y, width):
    """``(lo, hi)``: pair ``b``'s valid pixel columns ``[lo, hi)`` on the row at centre ``y``."""
    lo, hi = 0, width
    for k in range(rows.shape[1]):
        u = rows[b, k, 0]
        off = rows[b, k, 1] * y + rows[b, k, 2]
        t = th[b, k]
        if u == 0.0:
            if not off >= t:  # constant along the row (0 * x = 0 for x > 0)
                return 0, 0
            continue
        est = -off / u - 0.5  # real-valued column of the root
        c = 0
        if est > width:
            c = width
        elif est > 0.0:
            c = int(np.ceil(est))
        if u > 0.0:  # holds on a suffix: first column that holds
            while c < width and not _holds(u, c + 0.5, off, t):
                c += 1
            while c > 0 and _holds(u, c - 0.5, off, t):
                c -= 1
            lo = max(lo, c)
        else:  # holds on a prefix: first column that fails
            while c < width and _holds(u, c + 0.5, off, t):
                c += 1
            while c > 0 and not _holds(u, c - 0.5, off, t):
                c -= 1
            hi = min(hi, c)
        if lo >= hi:
            return 0, 0
    return lo, hi


@njit(cache=True)
def _cell(u, x, off, pow2, inv, fp):
    """Patch index ``floor((u * x + off) / patch)`` of an affine coordinate, float64."""
    v = u * x + off
    return np.floor(v * inv) if pow2 else np.floor(v / fp)  # x * 2**-k == x / 2**k exactly


@njit(cache=True)
def _ref(fx, fy, rc, rr):
    """Reference patch of cell ``(fx, fy)``; ``rc * rr`` outside the grid."""
    if fx >= 0.0 and fx < rc and fy >= 0.0 and fy < rr:
        return int(fy) * rc + int(fx)
    return rc * rr


@njit(cache=True)
def _count_pair(b, mats, rows, th, mask_ptr, mmat, start, hw, buf,
                patch, qc, qr, rc, rr, out):
    """Overlap fractions of pair ``b`` into ``out[b]`` (``(Nq, Nr + 1)`` float32): integer
    pixel counts, each divided by ``patch**2`` in float32 at the end.

    Each query pixel row is cut into spans (its valid columns within one query patch).
    When the map is affine and every mask axis-aligned, the reference cells and mask
    columns are monotone along a span (rounding keeps order), so a span is settled by its
    two end pixels when they share a cell and every mask is True over the mask columns
    between them (or some mask is False or missed over all of them); other spans are
    bisected (halves of a mask-clean span skip the mask test), and short spans, and
    every span of other pairs, are evaluated pixel by pixel.
    """
    nr = rc * rr
    wg = qc * patch
    counts = np.zeros((qc * qr, nr + 1), dtype=np.int32)  # this pair's pixel counts
    a00, a01, a02 = mats[b, 0, 0], mats[b, 0, 1], mats[b, 0, 2]
    a10, a11, a12 = mats[b, 1, 0], mats[b, 1, 1], mats[b, 1, 2]
    a20, a21, a22 = mats[b, 2, 0], mats[b, 2, 1], mats[b, 2, 2]
    affine = a20 == 0.0 and a21 == 0.0 and a22 == 1.0
    m0, m1 = mask_ptr[b], mask_ptr[b + 1]
    aligned = np.zeros(m1, dtype=np.bool_)
    fast = affine
    for k in range(m0, m1):
        aligned[k] = (mmat[k, 0, 1] == 0.0 and mmat[k, 1, 0] == 0.0 and mmat[k, 2, 0] == 0.0
                      and mmat[k, 2, 1] == 0.0 and mmat[k, 2, 2] == 1.0)
        fast = fast and aligned[k]
    # per mask and pixel row: x, y, w offsets; mask row (axis-aligned), -2 (axis-aligned,
    # the row misses the mask) or -1 (general)
    mrow = np.empty((m1, 4))
    stack = np.empty(384, dtype=np.int64)  # spans (u, v, clean) to settle; depth <= log2(patch) + 1
    fp = float(patch)
    inv, pow2 = 1.0 / fp, (patch & (patch - 1)) == 0
    for r in range(qr * patch):
        y = r + 0.5
        qbase = (r // patch) * qc
        lo, hi = _row_interval(rows, th, b, y, wg)
        ox, oy, ow = a01 * y + a02, a11 * y + a12, a21 * y + a22
        for k in range(m0, m1):
            mrow[k, 0] = mmat[k, 0, 1] * y + mmat[k, 0, 2]
            mrow[k, 1] = mmat[k, 1, 1] * y + mmat[k, 1, 2]
            mrow[k, 2] = mmat[k, 2, 1] * y + mmat[k, 2, 2]
            mrow[k, 3] = -1.0
            if aligned[k]:
                my = np.floor(mmat[k, 1, 1] * y + mmat[k, 1, 2])
                mrow[k, 0] = mmat[k, 0, 2]
                mrow[k, 3] = my if my >= 0.0 and my < hw[k, 0] else -2.0
        for q in range(qc):
            c0, c1 = q * patch, (q + 1) * patch
            i = qbase + q
            s, e = max(c0, lo), min(c1, hi)
            if s >= e:
                counts[i, nr] += patch
                continue
            counts[i, nr] += (s - c0) + (c1 - e)
            stack[0], stack[1], stack[2], sp = s, e, 0, 3
            while sp > 0:
                sp -= 3
                u, v = stack[sp], stack[sp + 1]
                if fast:
                    state = 1  # 1: every mask True over the span; 0: some mask missed; 2: mixed
                    for k in range(m0, m1 if stack[sp + 2] == 0 else m0):  # 1: known clean
                        if mrow[k, 3] < 0.0:
                            state = 0
                            break
                        xa = np.floor(mmat[k, 0, 0] * (u + 0.5) + mrow[k, 0])
                        xb = np.floor(mmat[k, 0, 0] * (v - 0.5) + mrow[k, 0])
                        xl, xh = min(xa, xb), max(xa, xb)
                        if xh < 0.0 or xl >= hw[k, 1]:
                            state = 0
                            break
                        if xl < 0.0 or xh >= hw[k, 1]:
                            state = 2
                        else:  # the mask columns between the end pixels: all True / False?
                            base = start[k] + int(mrow[k, 3]) * hw[k, 1]
                            all_true, any_true = 1, 0
                            for c in range(base + int(xl), base + int(xh) + 1):
                                all_true &= buf[c]
                                any_true |= buf[c]
                            if any_true == 0:
                                state = 0
                                break
                            if all_true == 0:
                                state = 2
                    if state == 0:
                        counts[i, nr] += v - u
                        continue
                    fx = _cell(a00, u + 0.5, ox, pow2, inv, fp)
                    fy = _cell(a10, u + 0.5, oy, pow2, inv, fp)
                    if (state == 1 and fx == _cell(a00, v - 0.5, ox, pow2, inv, fp)
                            and fy == _cell(a10, v - 0.5, oy, pow2, inv, fp)):
                        counts[i, _ref(fx, fy, rc, rr)] += v - u
                        continue
                    if v - u > 2:  # halves of a clean span are clean
                        mid, clean = (u + v) // 2, 1 if state == 1 else 0
                        stack[sp], stack[sp + 1], stack[sp + 2] = mid, v, clean
                        stack[sp + 3], stack[sp + 4], stack[sp + 5] = u, mid, clean
                        sp += 6
                        continue
                run_j, run = nr, 0  # runs of equal j are added at once (no store-load chain)
                for c in range(u, v):
                    x = c + 0.5
                    px = a00 * x + ox
                    py = a10 * x + oy
                    if not affine:
                        w = a20 * x + ow
                        px = px / w
                        py = py / w
                    if pow2:  # x * 2**-k == x / 2**k exactly (both correctly rounded)
                        fx, fy = np.floor(px * inv), np.floor(py * inv)
                    else:
                        fx, fy = np.floor(px / fp), np.floor(py / fp)
                    j = _ref(fx, fy, rc, rr)
                    if j < nr:
                        for k in range(m0, m1):  # nearest mask pixel, as region.mask_hits
                            hit = False
                            if mrow[k, 3] >= 0.0:  # axis-aligned: the mask row is fixed
                                mx = np.floor(mmat[k, 0, 0] * x + mrow[k, 0])
                                if mx >= 0.0 and mx < hw[k, 1]:
                                    hit = buf[start[k] + int(mrow[k, 3]) * hw[k, 1] + int(mx)] != 0
                            elif mrow[k, 3] == -1.0:  # general projective
                                den = mmat[k, 2, 0] * x + mrow[k, 2]
                                mx = np.floor((mmat[k, 0, 0] * x + mrow[k, 0]) / den)
                                my = np.floor((mmat[k, 1, 0] * x + mrow[k, 1]) / den)
                                if (den > 0.0 and mx >= 0.0 and mx < hw[k, 1] and my >= 0.0
                                        and my < hw[k, 0]):
                                    hit = buf[start[k] + int(my) * hw[k, 1] + int(mx)] != 0
                            if not hit:
                                j = nr
                                break
                    if j == run_j:
                        run += 1
                    else:
                        counts[i, run_j] += run
                        run_j, run = j, 1
                counts[i, run_j] += run
    pp = np.float32(patch * patch)
    for i in range(qc * qr):
        for j in range(nr + 1):
            out[b, i, j] = np.float32(counts[i, j]) / pp


@njit(cache=True)
def _count_serial(mats, rows, th, mask_ptr, mask_mats, mask_start, mask_hw, buf,
                  patch, qc, qr, rc, rr, out):
    """All pairs of :func:`pack`'s arrays into ``out``, one after another."""
    for b in range(mats.shape[0]):
        _count_pair(b, mats, rows, th, mask_ptr, mask_mats, mask_start, mask_hw, buf,
                    patch, qc, qr, rc, rr, out)


@njit(cache=True, parallel=True)
def _count_parallel(mats, rows, th, mask_ptr, mask_mats, mask_start, mask_hw, buf,
                    patch, qc, qr, rc, rr, out):
    """As :func:`_count_serial`, pairs spread over numba's threads."""
    for b in prange(mats.shape[0]):
        _count_pair(b, mats, rows, th, mask_ptr, mask_mats, mask_start, mask_hw, buf,
                    patch, qc, qr, rc, rr, out)


def pack(maps) -> tuple:
    """Kernel inputs for a list of :class:`icdlib.pixtrace.Mapping` (numpy, no torch).

    Returns ``(mats (B, 3, 3) f64, rows (B, K, 3) f64, th (B, K) f64,
    mask_ptr (B + 1,) int64, mask_mats (M, 3, 3) f64, mask_start (M,) int64,
    mask_hw (M, 2) int64 (height, width), buf (S,) uint8)``: half-plane rows with their
    thresholds (0 for ``ge``, tiny for ``gt``; zero rows pad to K), and every mask
    flattened row-major into one buffer (pair ``b`` owns masks
    ``mask_ptr[b]:mask_ptr[b + 1]``, starting at ``mask_start``; a mask array shared by
    several pairs is stored once).
    """
    b = len(maps)
    k = max(max(len(m.ge) + len(m.gt) for m in maps), 1)  # zero padding rows hold: 0 >= 0
    rows = np.zeros((b, k, 3))
    th = np.zeros((b, k))
    for i, m in enumerate(maps):
        a, g = len(m.ge), len(m.gt)
        rows[i, :a] = m.ge
        rows[i, a : a + g] = m.gt
        th[i, a : a + g] = _TINY
    mats = np.stack([m.matrix for m in maps]) if b > 1 else maps[0].matrix[None]
    mask_ptr = np.zeros(b + 1, dtype=np.int64)
    mm, hw, start, chunks, seen, size = [], [], [], [], {}, 0
    for i, m in enumerate(maps):
        for mk, mat in m.masks:
            if id(mk) not in seen:
                seen[id(mk)] = size
                chunks.append(np.ascontiguousarray(mk).reshape(-1))
                size += mk.size
            start.append(seen[id(mk)])
            hw.append(mk.shape)
            mm.append(mat)
        mask_ptr[i + 1] = len(mm)
    if mm:
        buf = (chunks[0] if len(chunks) == 1 else np.concatenate(chunks)).view(np.uint8)
        mask_mats = np.stack(mm).astype(np.float64, copy=False)
    else:
        buf, mask_mats = np.zeros(1, np.uint8), np.zeros((0, 3, 3))
    mask_start = np.array(start, dtype=np.int64)
    mask_hw = np.array(hw, dtype=np.int64).reshape(-1, 2)
    return mats, rows, th, mask_ptr, mask_mats, mask_start, mask_hw, buf


def fractions(maps, patch: int, qgrid: tuple[int, int], rgrid: tuple[int, int],
              threads: int = 1) -> np.ndarray:
    """Patch overlap fractions ``(B, Nq, Nr + 1)`` float32 of the mappings.

    ``out[b, i, j]`` is the number of query patch ``i``'s pixel centres that pair ``b``
    traces into reference patch ``j`` (``j = Nr``: nowhere), divided by ``patch**2``
    in float32. ``threads > 1`` spreads pairs over that many numba threads (capped by
    ``numba.config.NUMBA_NUM_THREADS``); 1 runs serially in the calling thread.
    """
    (qc, qr), (rc, rr) = qgrid, rgrid
    args = pack(maps)
    out = np.empty((len(maps), qc * qr, rc * rr + 1), dtype=np.float32)
    threads = min(int(threads), numba.config.NUMBA_NUM_THREADS, len(maps))
    if threads > 1:
        numba.set_num_threads(threads)
        _count_parallel(*args, patch, qc, qr, rc, rr, out)
    else:
        _count_serial(*args, patch, qc, qr, rc, rr, out)
    return out


def count(maps, patch: int, qgrid: tuple[int, int], rgrid: tuple[int, int],
          threads: int = 1) -> np.ndarray:
    """Integer pixel counts ``(B, Nq, Nr + 1)`` int64 (:func:`fractions` times
    ``patch**2``, exact); each row sums to ``patch**2``."""
    out = fractions(maps, patch, qgrid, rgrid, threads).astype(np.float64)
    return np.rint(out * (patch * patch)).astype(np.int64)
