"""Static plotly figures of PixTrace: images, traces, correspondences, patch overlaps.

Every function here is pure (arrays and traces in, a ``plotly.graph_objects.Figure``
out), so it works in papermill runs and reports without a live kernel; the
interactive :mod:`icdlib.viz` explorer builds its widgets from the same figures.

Pixel convention (as in :mod:`icdlib.pixtrace`): continuous ``(x, y)``, x right, y
down; pixel (column c, row r) covers ``[c, c+1) x [r, r+1)``. Images are drawn with
their top-left corner at ``(0, 0)`` and one unit per pixel, so figure coordinates *are*
image coordinates. Patches are numbered row-major over ``floor(H/p) x floor(W/p)``.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots
from skimage.color import hsv2rgb

from icdlib.pixtrace import Mapping, Trace, patch_grid, pixel_centres

INVALID_LABEL = "nowhere"
# see-through near 0, then yellow -> red: weak cells leave the reference visible
OVERLAP_COLORSCALE = [
    [0.0, "rgba(255,255,0,0.0)"],
    [0.03, "rgba(255,255,0,0.35)"],
    [0.5, "rgba(255,140,0,0.65)"],
    [1.0, "rgba(220,0,0,0.85)"],
]
_CLEAR = [[0.0, "rgba(0,0,0,0)"], [1.0, "rgba(0,0,0,0)"]]
SELECT_COLOR = "#00e5ff"


# ---------------------------------------------------------------------- image helpers
def to_rgb_array(image) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB array of a PIL image or an ``[H, W]``/``[H, W, 3]`` array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"to_rgb_array: expected [H, W] or [H, W, 3], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"to_rgb_array: expected uint8 pixels, got dtype {arr.dtype}")
    return arr


def png_data_uri(image) -> str:
    """Lossless ``data:image/png;base64,...`` URI of an RGB image (PIL or uint8 array)."""
    buf = io.BytesIO()
    Image.fromarray(to_rgb_array(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_data_uri(uri: str) -> np.ndarray:
    """Inverse of :func:`png_data_uri`: ``uint8 [H, W, 3]``."""
    head, sep, payload = uri.partition(",")
    if not sep or not head.startswith("data:image/"):
        raise ValueError(f"decode_data_uri: not an image data URI: {uri[:40]!r}")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB"))


def image_trace(image, name: str, x0: float = 0.0) -> go.Image:
    """A ``go.Image`` drawing ``image`` with its top-left pixel corner at ``(x0, 0)``."""
    return go.Image(source=png_data_uri(image), x0=x0 + 0.5, y0=0.5, dx=1, dy=1, name=name,
                    hovertemplate=f"{name}<br>x=%{{x}} y=%{{y}}<extra></extra>")


def image_axes(fig: go.Figure, ncols: int, nrows: int = 1) -> None:
    """Image-style axes: y down, square pixels, no ticks clutter."""
    for r in range(1, nrows + 1):
        for c in range(1, ncols + 1):
            fig.update_xaxes(showgrid=False, zeroline=False, constrain="domain", row=r, col=c)
            fig.update_yaxes(showgrid=False, zeroline=False, autorange="reversed",
                             scaleanchor=_anchor(fig, r, c), constrain="domain", row=r, col=c)
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white")


def _anchor(fig: go.Figure, row: int, col: int) -> str:
    ref = fig.get_subplot(row, col)
    return ref.xaxis.plotly_name.replace("axis", "")


# ---------------------------------------------------------------------- images
def images_figure(images: Sequence, titles: Sequence[str]) -> go.Figure:
    """Images side by side (e.g. source | edited), one subplot each, pixel axes.

    Args:
        images: PIL images or ``uint8 [H, W, 3]`` arrays; sizes may differ.
        titles: one title per image.
    """
    if len(images) != len(titles) or not images:
        raise ValueError(f"images_figure: need one title per image, got {len(images)} images "
                         f"and {len(titles)} titles")
    fig = make_subplots(rows=1, cols=len(images), subplot_titles=list(titles),
                        horizontal_spacing=0.03)
    for k, (img, title) in enumerate(zip(images, titles)):
        fig.add_trace(image_trace(img, title), row=1, col=k + 1)
    image_axes(fig, len(images))
    return fig


# ---------------------------------------------------------------------- trace map
def coordinate_colours(xy: np.ndarray, source_size: tuple[int, int]) -> np.ndarray:
    """Colour-code source coordinates: hue from x, saturation and value from y.

    Args:
        xy: ``float [..., 2]`` source ``(x, y)`` in pixels, NaN where untraceable.
        source_size: ``(width, height)`` of the source.
    Returns:
        ``uint8 [..., 3]`` RGB; untraceable points are black (callers shade them).
    """
    w, h = source_size
    u = np.clip(xy[..., 0] / w, 0.0, 1.0)
    v = np.clip(xy[..., 1] / h, 0.0, 1.0)
    # hue covers 0..0.8 of the circle so the left and right edges stay distinct
    hsv = np.stack([0.8 * u, 0.3 + 0.7 * v, 1.0 - 0.45 * v], axis=-1)
    rgb = (hsv2rgb(np.nan_to_num(hsv)) * 255.0 + 0.5).astype(np.uint8)
    rgb[~np.isfinite(xy).all(-1)] = 0
    return rgb


def hatch(valid: np.ndarray, period: int = 8) -> np.ndarray:
    """``uint8 [H, W, 3]`` grey diagonal stripes, drawn where ``valid`` is False (else 0)."""
    r, c = np.indices(valid.shape)
    stripes = np.where(((r + c) // max(period // 2, 1)) % 2 == 0, 70, 110).astype(np.uint8)
    out = np.repeat(stripes[..., None], 3, axis=2)
    out[valid] = 0
    return out


def trace_map(trace: Trace) -> np.ndarray:
    """``uint8 [H, W, 3]``: the edited image's pixels coloured by their source position.

    Untraceable pixels are shaded with grey stripes.
    """
    xy = trace.to_dense()
    valid = np.isfinite(xy).all(-1)
    return np.where(valid[..., None], coordinate_colours(xy, trace.source_size), hatch(valid))


def trace_figure(trace: Trace, title: str = "edited") -> go.Figure:
    """The trace as a coordinate map, next to the colour key in the source frame.

    Left: the source frame coloured by position (the key). Right: each edited pixel
    takes the colour of the source point it came from; untraceable area is hatched grey.
    """
    key = coordinate_colours(pixel_centres(trace.source_size), trace.source_size)
    valid_share = float(trace.valid_mask().mean())
    fig = images_figure(
        [key, trace_map(trace)],
        ["source position (key)", f"{title}: source position ({valid_share:.0%} traceable)"],
    )
    return fig


# ---------------------------------------------------------------------- correspondences
def correspondence_points(mapping: Mapping, grid: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Matched points of a ``grid x grid`` lattice of base-frame cell centres.

    Returns:
        ``(src, dst)``, each ``float64 [K, 2]`` (x, y) pixels: base points that map to a
        valid target point, and those target points.
    """
    if grid < 1:
        raise ValueError(f"correspondence_points: grid must be >= 1, got {grid}")
    src = pixel_centres(mapping.base_size, (grid, grid)).reshape(-1, 2)
    dst = mapping.apply(src)
    ok = np.isfinite(dst).all(1)
    return src[ok], dst[ok]


def correspondence_figure(query, reference, mapping: Mapping, grid: int = 8,
                          gap: int = 20) -> go.Figure:
    """Query and reference side by side, with lines between traced points.

    Args:
        query, reference: images (PIL or ``uint8 [H, W, 3]``); ``mapping`` maps the
            query frame to the reference frame (e.g. :func:`icdlib.pixtrace.transfer`).
        grid: lattice of ``grid x grid`` query points; untraceable ones are dropped.
        gap: pixels between the two images.
    """
    q, r = to_rgb_array(query), to_rgb_array(reference)
    if (q.shape[1], q.shape[0]) != mapping.base_size or (r.shape[1], r.shape[0]) != mapping.target_size:
        raise ValueError(
            f"correspondence_figure: image sizes {(q.shape[1], q.shape[0])}, {(r.shape[1], r.shape[0])} "
            f"do not match mapping sizes {mapping.base_size}, {mapping.target_size}"
        )
    off = q.shape[1] + gap
    src, dst = correspondence_points(mapping, grid)
    xs, ys = [], []
    for (x0, y0), (x1, y1) in zip(src, dst):
        xs += [x0, x1 + off, None]
        ys += [y0, y1, None]
    colours = coordinate_colours(src, mapping.base_size)
    fig = go.Figure()
    fig.add_trace(image_trace(q, "query"))
    fig.add_trace(image_trace(r, "reference", x0=off))
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(255,255,255,0.8)", width=1),
                             hoverinfo="skip", name="correspondence"))
    for pts, shift, name in ((src, 0, "query point"), (dst, off, "reference point")):
        fig.add_trace(go.Scatter(
            x=pts[:, 0] + shift, y=pts[:, 1], mode="markers", name=name,
            marker=dict(size=7, color=[f"rgb({a},{b},{c})" for a, b, c in colours],
                        line=dict(color="black", width=1)),
            hovertemplate=f"{name}<br>x=%{{x:.1f}} y=%{{y:.1f}}<extra></extra>"))
    fig.update_xaxes(showgrid=False, zeroline=False, visible=False)
    fig.update_yaxes(showgrid=False, zeroline=False, visible=False, autorange="reversed",
                     scaleanchor="x")
    fig.update_layout(title=f"{len(src)} of {grid * grid} query points trace into the reference",
                      showlegend=False, margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white")
    return fig


# ---------------------------------------------------------------------- patch overlap
def grid_lines(size: tuple[int, int], patch: int) -> tuple[list, list]:
    """Scatter ``x, y`` lists (None-separated) drawing the patch grid of an image."""
    cols, rows = patch_grid(size, patch)
    xs, ys = [], []
    for c in range(cols + 1):
        xs += [c * patch, c * patch, None]
        ys += [0, rows * patch, None]
    for r in range(rows + 1):
        xs += [0, cols * patch, None]
        ys += [r * patch, r * patch, None]
    return xs, ys


def patch_outline(index: int, size: tuple[int, int], patch: int) -> tuple[list, list]:
    """Closed outline ``x, y`` of patch ``index`` (row-major) of an image."""
    cols, rows = patch_grid(size, patch)
    if not 0 <= index < cols * rows:
        raise ValueError(f"patch_outline: patch index {index} outside 0..{cols * rows - 1}")
    x0, y0 = (index % cols) * patch, (index // cols) * patch
    return [x0, x0 + patch, x0 + patch, x0, x0], [y0, y0, y0 + patch, y0 + patch, y0]


def patch_of_point(x: float, y: float, size: tuple[int, int], patch: int) -> int | None:
    """Row-major index of the patch containing pixel point ``(x, y)``, or None off-grid."""
    cols, rows = patch_grid(size, patch)
    c, r = int(np.floor(x / patch)), int(np.floor(y / patch))
    if 0 <= c < cols and 0 <= r < rows:
        return r * cols + c
    return None


def row_heatmap(row: np.ndarray, size: tuple[int, int], patch: int, label_min: float = 0.005) -> dict:
    """Heatmap arrays of one value per reference patch, laid over the reference image.

    Args:
        row: ``float [Nr]`` values per reference patch (row-major), e.g. an overlap row
            without its last (untraceable) entry.
    Returns:
        dict with ``x``, ``y`` (patch centres, pixels), ``z`` (``[rows, cols]``, NaN where
        the value is 0 so the image shows through) and ``text`` (ratios with two
        decimals, '' below ``label_min`` so tiny shares do not read as "0.00").
    """
    cols, rows = patch_grid(size, patch)
    row = np.asarray(row, dtype=np.float64)
    if row.shape != (cols * rows,):
        raise ValueError(f"row_heatmap: expected {cols * rows} values for a {cols}x{rows} grid, "
                         f"got shape {row.shape}")
    z = row.reshape(rows, cols)
    text = np.where(z >= label_min, np.char.mod("%.2f", z), "")
    return dict(x=(np.arange(cols) + 0.5) * patch, y=(np.arange(rows) + 0.5) * patch,
                z=np.where(z > 0, z, np.nan), text=text)


def patch_overlap_figure(query, reference, overlap: np.ndarray, patch: int,
                         selected: int = 0) -> go.Figure:
    """Query and reference patch grids; the selected query patch's overlap row as a heatmap.

    Args:
        query, reference: images (PIL or ``uint8 [H, W, 3]``).
        overlap: ``float [Nq, Nr + 1]`` overlap matrix (:func:`icdlib.pixtrace.overlap`).
        patch: patch side in pixels.
        selected: row-major index of the highlighted query patch.

    Trace order (the explorer updates them in place): 0 query image, 1 query patch
    picker (transparent heatmap, z = patch index), 2 query grid, 3 selected outline,
    4 reference image, 5 reference grid, 6 overlap heatmap with ratio labels.
    """
    q, r = to_rgb_array(query), to_rgb_array(reference)
    qsize, rsize = (q.shape[1], q.shape[0]), (r.shape[1], r.shape[0])
    overlap = np.asarray(overlap, dtype=np.float64)
    qc, qr = patch_grid(qsize, patch)
    rc, rr = patch_grid(rsize, patch)
    if overlap.shape != (qc * qr, rc * rr + 1):
        raise ValueError(f"patch_overlap_figure: overlap shape {overlap.shape} does not match "
                         f"the grids ({qc * qr}, {rc * rr} + 1) at patch {patch}")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.03,
                        subplot_titles=["query patches", overlap_title(overlap, selected)])
    fig.add_trace(image_trace(q, "query"), row=1, col=1)
    fig.add_trace(go.Heatmap(
        x=(np.arange(qc) + 0.5) * patch, y=(np.arange(qr) + 0.5) * patch,
        z=np.arange(qc * qr).reshape(qr, qc), colorscale=_CLEAR, showscale=False,
        name="query patch", hovertemplate="query patch %{z}<extra></extra>"), row=1, col=1)
    gx, gy = grid_lines(qsize, patch)
    fig.add_trace(go.Scatter(x=gx, y=gy, mode="lines", hoverinfo="skip", name="grid",
                             line=dict(color="rgba(255,255,255,0.5)", width=1)), row=1, col=1)
    ox, oy = patch_outline(selected, qsize, patch)
    fig.add_trace(go.Scatter(x=ox, y=oy, mode="lines", fill="toself", hoverinfo="skip",
                             name="selected", line=dict(color=SELECT_COLOR, width=3),
                             fillcolor="rgba(0,229,255,0.25)"), row=1, col=1)
    fig.add_trace(image_trace(r, "reference"), row=1, col=2)
    gx, gy = grid_lines(rsize, patch)
    fig.add_trace(go.Scatter(x=gx, y=gy, mode="lines", hoverinfo="skip", name="grid",
                             line=dict(color="rgba(255,255,255,0.5)", width=1)), row=1, col=2)
    fig.add_trace(go.Heatmap(
        **row_heatmap(overlap[selected, :-1], rsize, patch), zmin=0.0, zmax=1.0,
        colorscale=OVERLAP_COLORSCALE, showscale=False, hoverongaps=False, name="overlap",
        texttemplate="%{text}", textfont=dict(size=9, color="black"),
        hovertemplate="reference patch (%{x:.0f}, %{y:.0f})<br>overlap %{z:.3f}<extra></extra>"),
        row=1, col=2)
    image_axes(fig, 2)
    fig.update_layout(showlegend=False)
    return fig


def overlap_title(overlap: np.ndarray, selected: int) -> str:
    """Subplot title: the selected patch and its untraceable share."""
    return (f"overlap of query patch {selected}<br>"
            f"({float(overlap[selected, -1]):.0%} traces nowhere)")


def overlap_matrix_figure(overlap: np.ndarray, selected: int | None = None) -> go.Figure:
    """The full overlap matrix ``[Nq, Nr + 1]`` as a heatmap; last column = untraceable.

    ``selected`` outlines that query row.
    """
    overlap = np.asarray(overlap, dtype=np.float64)
    if overlap.ndim != 2 or overlap.shape[1] < 2:
        raise ValueError(f"overlap_matrix_figure: expected [Nq, Nr + 1], got shape {overlap.shape}")
    nq, nr1 = overlap.shape
    fig = go.Figure(go.Heatmap(
        z=overlap, zmin=0.0, zmax=1.0, colorscale="Viridis", name="overlap",
        colorbar=dict(title="share"),
        hovertemplate="query %{y} -> reference %{x}<br>%{z:.3f}<extra></extra>"))
    fig.add_shape(type="rect", x0=nr1 - 1.5, x1=nr1 - 0.5, y0=-0.5, y1=nq - 0.5,
                  line=dict(color="white", width=1, dash="dot"))
    if selected is not None:
        fig.add_shape(type="rect", x0=-0.5, x1=nr1 - 0.5, y0=selected - 0.5, y1=selected + 0.5,
                      line=dict(color=SELECT_COLOR, width=2), name="selected")
    fig.update_yaxes(autorange="reversed", title="query patch")
    fig.update_xaxes(title=f"reference patch (last column {nr1 - 1}: {INVALID_LABEL})")
    fig.update_layout(title=f"overlap matrix [{nq}, {nr1 - 1} + 1]",
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


# ---------------------------------------------------------------------- model affinity
def affinity_figure(reference, affinity: np.ndarray, target: np.ndarray, patch: int,
                    selected: int, subtitle: str = "") -> go.Figure:
    """Model patch affinity next to PixTrace's ground truth, both over the reference.

    Args:
        reference: the reference image as the model sees it (PIL or ``uint8 [S, S, 3]``).
        affinity: ``float [Nr]`` softmax over reference patches of the selected query
            patch's scaled cosine similarities (:func:`icdlib.viz.patch_affinity`).
        target: ``float [Nr + 1]`` the ground-truth overlap row (last entry untraceable).
        patch: the model's patch size in pixels; ``selected``: the query patch index.
    """
    r = to_rgb_array(reference)
    rsize = (r.shape[1], r.shape[0])
    target = np.asarray(target, dtype=np.float64)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.03, subplot_titles=[
        f"model affinity of query patch {selected}" + (f" ({subtitle})" if subtitle else ""),
        f"PixTrace overlap ({target[-1]:.0%} traces nowhere)"])
    for col, row, name in ((1, np.asarray(affinity, dtype=np.float64), "affinity"),
                           (2, target[:-1], "overlap")):
        fig.add_trace(image_trace(r, "reference"), row=1, col=col)
        fig.add_trace(go.Heatmap(
            **row_heatmap(row, rsize, patch, label_min=0.01), zmin=0.0,
            zmax=max(float(np.nanmax(row)), 1e-6),
            colorscale=OVERLAP_COLORSCALE, showscale=False, hoverongaps=False, name=name,
            texttemplate="%{text}", textfont=dict(size=8, color="black"),
            hovertemplate=f"{name} %{{z:.3f}}<extra></extra>"), row=1, col=col)
    image_axes(fig, 2)
    fig.update_layout(showlegend=False)
    return fig
