"""Patch overlap counting in torch, on any device: the CUDA path and the reference for the CPU kernel.

Geometry is counted exactly per query pixel row from breakpoints (no per-pixel work,
:func:`_segment_counts`), and pixels hidden by masks are looked up one by one and removed
(:func:`_remove_hidden`). :func:`dense_counts` is the plain per-pixel evaluation both the
row path and the compiled CPU kernel (:mod:`icdlib.pixtrace.kernel`) must equal. Every
point test shares one float64 expression (``u * x + off``, no fused multiply-add), so the
paths agree bit for bit. Conventions as in :mod:`icdlib.pixtrace`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from icdlib.pixtrace.region import lin, mask_hits
from icdlib.pixtrace.trace import Mapping, patch_grid

CPU_CHUNK = 32  # CPU pairs per pass: (32, 224, 47) float64 temps stay in cache


def grids(maps: Sequence[Mapping], patch: int):
    """Query and reference patch grids, checking that every pair has the same sizes."""
    qsize, rsize = maps[0].base_size, maps[0].target_size
    for m in maps:
        if m.base_size != qsize or m.target_size != rsize:
            raise ValueError(
                f"overlap_batch: all pairs need the same sizes; got query {m.base_size} vs "
                f"{qsize}, reference {m.target_size} vs {rsize}"
            )
    return patch_grid(qsize, patch), patch_grid(rsize, patch)


def overlap_torch(maps, patch, dev: torch.device, chunk=None, qgrid=None, rgrid=None):
    """The torch path of :func:`overlap_from_mappings` on any device (the reference for
    the compiled CPU path): geometry through the exact row segments
    (:func:`_segment_counts`), then the pixels that masks hide looked up one by one and
    taken out (:func:`_remove_hidden`). The last column is ``1 - sum`` of the others."""
    if qgrid is None:
        qgrid, rgrid = grids(maps, patch)
    if chunk is None:  # CPU: cache-sized chunks; GPU: one launch sequence for all
        chunk = CPU_CHUNK if dev.type == "cpu" else len(maps)
    nq, nr = qgrid[0] * qgrid[1], rgrid[0] * rgrid[1]
    out = torch.zeros(len(maps), nq, nr + 1, dtype=torch.float32, device=dev)
    for s in range(0, len(maps), chunk):
        part = maps[s : s + chunk]
        mats, rows, strict = _stack(part, dev)
        lo, hi = _segment_counts(mats, rows, strict, patch, qgrid, rgrid, out[s : s + chunk])
        for i, m in enumerate(part):
            if m.masks:
                _remove_hidden(out[s + i], m, mats[i : i + 1], lo[i], hi[i], patch, qgrid, rgrid)
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
    return lin(mats[:, :, 1:2], y, mats[:, :, 2:3])


def _project(mats, offs, xc, axis: int, affine: bool):
    """Target coordinate ``axis`` (0: x, 1: y) of query points ``(xc, y)``.

    ``offs`` come from :func:`_row_offsets` and must broadcast with ``xc`` after the
    batch dimension; the same float64 expressions serve every path, so the row-segment
    and per-pixel counts agree exactly.
    """
    shape = (-1,) + (1,) * (offs.dim() - 2)
    num = lin(mats[:, axis, 0].view(shape), xc, offs[:, axis])
    if affine:
        return num
    return num / lin(mats[:, 2, 0].view(shape), xc, offs[:, 2])


def _holds(rows_u, off, xc, strict):
    """``val >= 0`` (``strict``: ``val > 0``) for ``val = rows_u * xc + off``, float64.

    ``> 0`` is written as ``>= `` the smallest normal double: the same for every value
    except positive subnormals (below 2.2e-308), and robust when denormals are flushed.
    """
    return lin(rows_u, xc, off) >= strict.to(torch.float64) * _TINY


_TINY = float(np.finfo(np.float64).tiny)


def _root_pixel(x: torch.Tensor, width: int) -> torch.Tensor:
    """Index (float64) of the pixel whose centre is nearest the root ``x``, in [-1, width].

    ``x`` must hold no NaN (see :func:`_safe_inverse`); infinities clamp to the ends.
    """
    return x.clamp_(-1.0, float(width)).floor_()


def _safe_inverse(slope: torch.Tensor) -> torch.Tensor:
    """``1 / slope`` with zero slopes replaced by a tiny one: a root then lies far off
    (clamped), never NaN. A zero slope means no crossing along the row."""
    return 1.0 / torch.where(slope == 0, _TINY, slope)


def _segment_counts(mats, rows, strict, patch, qgrid, rgrid, out: torch.Tensor):
    """Add the overlap fractions of the mappings' geometry (masks ignored) to ``out``
    (contiguous float32 ``(B, Nq, Nr + 1)``, zeros; the last column is left to the
    caller), row by row. Returns ``(lo, hi)``, float64 ``(B, R)``: each query pixel row's
    valid columns ``[lo, hi)``.

    Along a query pixel row the validity region is one interval ``[lo, hi)`` (a convex
    polygon cut by a line) and the target x and y are monotone (projective maps with
    ``w > 0``), so the target patch is constant between breakpoints: the pixels where a
    target patch column/row boundary ``k * patch`` or a query patch boundary is crossed.
    Each breakpoint comes from the root of its linear equation and is settled exactly by
    evaluating the pixel nearest the root and the neighbour across it; the step it makes
    (+-1 cell, or 0 where rounding leaves no crossing) is that evaluated change. The patch
    state at ``lo`` is evaluated, and a cumulative sum of the steps over the sorted
    breakpoints gives every segment's patch.
    Cost ``O(B * H * (Wq/p + Wr/p + Hr/p + K))`` instead of ``O(B * H * W * K)``.
    """
    dev, f64 = mats.device, torch.float64
    (qc, qr), (rc, rr) = qgrid, rgrid
    b, wg = mats.shape[0], qc * patch
    affine = _is_affine(mats)
    g = _grid(patch, qgrid, rgrid, str(dev))
    y, k, is_x, unit = g["y"], g["k"], g["is_x"], g["unit"]  # (R,) pixel-row centres; (T,) x3

    # validity interval [lo, hi) of pixel columns, per row: (B, R, 1)
    u = rows[:, :, 0:1]  # (B, K, 1)
    off = lin(rows[:, :, 1:2], y, rows[:, :, 2:3])  # (B, K, R)
    n = _root_pixel(off * -_safe_inverse(u), wg)
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
    # (rows with lo = hi may sit on an invalid pixel: NaN there is harmless, lengths are 0)
    step_y = rc + 2  # state = (cx + 1) + step_y * (cy + 1)
    state0 = (cx + 1).add_(cy.add_(1).mul_(step_y))

    # target boundaries t = k * patch (x thresholds, then y): first pixel past each, (B, R, T)
    t = k * patch
    a0 = torch.where(is_x, mats[:, 0, 0, None], mats[:, 1, 0, None])[:, None, :]  # (B, 1, T)
    shape = (b, len(y), rc + 1)
    offa = torch.cat([offs[:, 0].expand(shape), offs[:, 1].expand(b, len(y), rr + 1)], -1)
    slope = a0 - t * mats[:, 2, 0, None, None]  # (B, 1, T): d(num - t den)/dx
    root = (t - offa) if affine else (t * offs[:, 2] - offa)
    n = _root_pixel(root.mul_(_safe_inverse(slope)), wg)  # (B, R, T)
    inc = slope > 0  # the row crosses t upwards

    def past(xc):  # is the pixel at xc past boundary t (cell >= k)?
        proj = lin(a0, xc, offa)
        if not affine:
            proj = proj.div_(lin(mats[:, 2, 0, None, None], xc, offs[:, 2]))
        return proj.div_(patch).floor_().ge_(k)

    p_n = past(n + 0.5)
    moved = p_n != inc  # the first pixel past the crossing is n + 1, else n
    p_o = past(torch.where(moved, n + 1.5, n - 0.5))  # its other neighbour
    # the change the event makes, evaluated (0 where rounding leaves no crossing)
    delta = (p_o.to(f64) - p_n.to(f64)).mul_(moved.to(f64).mul_(2).sub_(1))
    e = n.add_(moved).clamp_(min=lo, max=hi)
    # each event: its pixel and the step it adds to the state (0 when already in state0)
    step = (e > lo) * delta.mul_(unit)
    qpos = g["qpos"].expand(b, len(y), qc - 1)
    pos = torch.cat([lo, hi, e, torch.minimum(torch.maximum(qpos, lo), hi)], -1)
    step = torch.cat([torch.zeros_like(lo), torch.zeros_like(hi), step, torch.zeros_like(qpos)], -1)
    # sort events by pixel with the step packed in the low bits: key = pos * span + step + step_y
    span = 1 << (2 * step_y + 1).bit_length()
    wide = (wg + 1) * span >= 2**31
    key = pos.mul_(span).add_(step).add_(step_y)
    key = _sort_rows(key.to(torch.int64 if wide else torch.int32))
    pos = key >> (span.bit_length() - 1)
    state = ((key & (span - 1)) - step_y).cumsum(-1).add_(state0.to(torch.int64))
    state = state[..., :-1].clamp_(0, step_y * (rr + 2) - 1)  # guards degenerate rows only
    length = pos[..., 1:] - pos[..., :-1]  # (B, R, E-1) pixels per segment
    qcol = pos[..., :-1].clamp(max=wg - 1).div_(patch, rounding_mode="floor")

    # flat index into out: query patch * (Nr + 1) + reference patch (Nr: outside the grid)
    ref, qrow = g["ref"], g["qrow"]
    base = (torch.arange(b, device=dev)[:, None] * qr + qrow) * qc  # (B, R) first query patch
    flat = (qcol.long() + base[..., None]).mul_(rc * rr + 1).add_(ref[state.long()])
    weight = length.to(torch.float32).div_(patch * patch)
    out.view(-1).index_add_(0, flat.reshape(-1), weight.reshape(-1))
    return lo[..., 0], hi[..., 0]


@functools.lru_cache(maxsize=32)
def _grid(patch: int, qgrid: tuple, rgrid: tuple, device: str) -> dict:
    """Constant tensors of :func:`_segment_counts` for one geometry (never written to)."""
    (qc, qr), (rc, rr) = qgrid, rgrid
    dev, f64 = torch.device(device), torch.float64
    k = torch.cat([torch.arange(rc + 1), torch.arange(rr + 1)]).to(dev, f64)
    is_x = torch.arange(len(k), device=dev) <= rc
    cxs, cys = torch.arange(-1, rc + 1, device=dev), torch.arange(-1, rr + 1, device=dev)
    inside = ((cxs >= 0) & (cxs < rc))[None, :] & ((cys >= 0) & (cys < rr))[:, None]
    return {
        "y": torch.arange(qr * patch, device=dev, dtype=f64) + 0.5,
        "k": k,
        "is_x": is_x,
        "unit": torch.where(is_x, 1.0, float(rc + 2)).to(f64),  # state step of x / y cells
        "qpos": torch.arange(1, qc, device=dev, dtype=f64) * patch,
        # state (cx + 1) + (rc + 2) (cy + 1) -> reference patch, rc * rr outside the grid
        "ref": torch.where(inside, cys[:, None] * rc + cxs[None, :], rc * rr).reshape(-1),
        "qrow": torch.div(torch.arange(qr * patch, device=dev), patch, rounding_mode="floor"),
    }


def _remove_hidden(out, m: Mapping, mats, lo, hi, patch, qgrid, rgrid) -> None:
    """Take the pixels that ``m.masks`` hide out of one pair's overlap ``out (Nq, Nr+1)``.

    Only geometrically valid pixels (``lo <= c < hi`` on their row) were counted, so only
    those are looked up; their reference patch is evaluated with the same expressions as
    :func:`_segment_counts`.
    """
    (qc, qr), (rc, rr) = qgrid, rgrid
    lo, hi = lo.cpu().numpy(), hi.cpu().numpy()
    flat = _hidden_pixels(m.masks, qc * patch, qr * patch, lo, hi)
    if len(flat) == 0:
        return
    r, c = np.divmod(flat, qc * patch)
    dev = out.device
    offs = _row_offsets(mats, torch.as_tensor(r + 0.5, device=dev))  # (1, 3, n)
    xc = torch.as_tensor(c + 0.5, device=dev)
    affine = _is_affine(mats)
    cx = _project(mats, offs, xc, 0, affine).div_(patch).floor_()[0]
    cy = _project(mats, offs, xc, 1, affine).div_(patch).floor_()[0]
    keep = (cx >= 0) & (cx < rc) & (cy >= 0) & (cy < rr)
    q = torch.as_tensor((r // patch) * qc + c // patch, device=dev)
    idx = (q * (rc * rr + 1) + (cy * rc + cx).long())[keep]
    weight = torch.full((len(idx),), -1.0 / (patch * patch), device=dev)
    out.view(-1).index_add_(0, idx, weight)


def _hidden_pixels(masks, width: int, height: int, lo, hi) -> np.ndarray:
    """Sorted flat indices ``r * width + c`` of valid grid pixels that a mask hides.

    Each mask is only evaluated over the query-frame box that its False pixels can
    reach (their bounding box mapped back through the inverse matrix, +-2 px).
    """
    found = []
    for mk, mm in masks:
        box = _query_box(mk, mm, width, height)
        if box is None:
            continue
        c0, c1, r0, r1 = box
        cols, rows = np.arange(c0, c1), np.arange(r0, r1)
        hit = mask_hits(((mk, mm),), cols[None, :] + 0.5, rows[:, None] + 0.5)
        hid = ~hit & (cols >= lo[r0:r1, None]) & (cols < hi[r0:r1, None])
        r, c = np.nonzero(hid)
        found.append((r + r0) * width + (c + c0))
    if not found:
        return np.zeros(0, dtype=np.int64)
    if len(found) == 1:
        return found[0]
    flat = np.sort(np.concatenate(found))  # a pixel hidden by two masks counts once
    if flat.size == 0:  # the masks hide nothing inside the valid region
        return flat
    return flat[np.r_[True, flat[1:] != flat[:-1]]]


def _query_box(mask: np.ndarray, mm: np.ndarray, width: int, height: int):
    """``(c0, c1, r0, r1)`` grid box holding every pixel that may land on a False mask
    pixel, or None when the mask hides nothing."""
    bad = ~mask
    rows, cols = np.flatnonzero(bad.any(1)), np.flatnonzero(bad.any(0))
    if len(rows) == 0:
        return None
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    corners = np.array([[x0, x0, x1, x1], [y0, y1, y0, y1], [1, 1, 1, 1]], dtype=np.float64)
    q = np.linalg.inv(mm) @ corners
    if (q[2] <= 0).any():  # the box reaches past the horizon: take the whole grid
        return 0, width, 0, height
    qx, qy = q[0] / q[2], q[1] / q[2]
    c0, c1 = int(np.floor(qx.min())) - 2, int(np.ceil(qx.max())) + 2
    r0, r1 = int(np.floor(qy.min())) - 2, int(np.ceil(qy.max())) + 2
    c0, c1, r0, r1 = max(c0, 0), min(c1, width), max(r0, 0), min(r1, height)
    return (c0, c1, r0, r1) if c0 < c1 and r0 < r1 else None


def _sort_rows(key: torch.Tensor) -> torch.Tensor:
    """Sort integer keys along the last axis (numpy's vectorised sort on CPU)."""
    if key.device.type == "cpu":
        return torch.from_numpy(np.sort(key.numpy(), axis=-1))
    return key.sort(-1).values


def _is_affine(mats: torch.Tensor) -> bool:
    """True when every matrix's last row is ``(0, 0, 1)`` (no division needed)."""
    last = torch.tensor([0.0, 0.0, 1.0], device=mats.device, dtype=mats.dtype)
    return bool((mats[:, 2] == last).all())


def dense_counts(mats, rows, strict, patch, qgrid, rgrid, masks=()) -> torch.Tensor:
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
    off = lin(rows[:, :, 1:2], y, rows[:, :, 2:3])[..., None]  # (B, K, R, 1)
    ok = _holds(rows[:, :, 0, None, None], off, xc, strict[:, :, None, None]).all(1)
    if masks:
        if b != 1:
            raise ValueError(f"overlap: masks need one mapping at a time, got {b}")
        hit = mask_hits(masks, xc.cpu().numpy()[None, :], y.cpu().numpy()[:, None])
        ok &= torch.as_tensor(hit, device=dev)[None]
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
