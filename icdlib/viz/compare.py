"""Compare two images with a trained model: descriptor similarity, matcher score, patch affinity.

``icdlib.compare(image_a, image_b, descriptor=..., matcher=None)`` (this module's
:func:`compare`) answers "is B a copy of A, and where?" for one pair, without a benchmark:

* ``similarity``: cosine of the two global descriptors, in ``[-1, 1]`` (the score
  ``python -m icdlib.search`` ranks by);
* ``matcher_score``: ``sigmoid(matcher(a, b))``, a copy probability in ``(0, 1)``, when a
  matcher is given;
* ``figure``: the descriptor's patch affinity. Both images are shown as the model sees
  them (resized to ``S x S``); each patch of A is coloured by its best cosine with any
  patch of B (and vice versa), and the third panel is the full ``[N_a, N_b]`` cosine
  matrix of the patch tokens CopyNCE trains (row-major patch order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image
from plotly.subplots import make_subplots

from icdlib.data import load_image
from icdlib.eval.engine import load_checkpoint
from icdlib.models import Descriptor, Matcher, preprocess
from icdlib.viz.figures import OVERLAP_COLORSCALE, image_axes, image_trace, row_heatmap


@dataclass
class Comparison:
    """Result of :func:`compare`.

    Attributes:
        similarity: descriptor cosine of the two images, float in ``[-1, 1]``.
        matcher_score: matcher copy probability in ``(0, 1)``, or None without a matcher.
        affinity: ``float32 [N_a, N_b]`` cosine of every patch-token pair (row-major patches).
        figure: plotly figure of the patch affinity (see the module docstring).
    """

    similarity: float
    matcher_score: float | None
    affinity: np.ndarray
    figure: go.Figure


def _image(image, name: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, Path)):
        return load_image(image)
    raise ValueError(f"compare: {name} must be a PIL image or an image path, got {type(image).__name__}")


def _model(model, kind: str, cls, device: str):
    if isinstance(model, (str, Path)):
        return load_checkpoint(model, kind, device)[0]
    if isinstance(model, cls):
        return model.eval().to(device)
    raise ValueError(f"compare: {kind} must be a checkpoint path or a {cls.__name__}, got {type(model).__name__}")


def affinity_matrix_figure(image_a: Image.Image, image_b: Image.Image, affinity: np.ndarray, patch: int,
                           title: str = "") -> go.Figure:
    """Patch affinity of two ``S x S`` images: A and B overlaid with each patch's best cosine
    in the other image, and the ``[N_a, N_b]`` cosine matrix (negative cosines shown as 0)."""
    a_best, b_best = affinity.max(axis=1), affinity.max(axis=0)
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.05, subplot_titles=[
        "A: best cosine of each patch in B", "B: best cosine of each patch in A", "patch cosine [A, B]"])
    for col, img, best, name in ((1, image_a, a_best, "A"), (2, image_b, b_best, "B")):
        fig.add_trace(image_trace(img, name), row=1, col=col)
        fig.add_trace(go.Heatmap(**row_heatmap(np.clip(best, 0, 1), img.size, patch, label_min=2.0),
                                 zmin=0.0, zmax=1.0, colorscale=OVERLAP_COLORSCALE, showscale=False,
                                 hoverongaps=False, name=name, hovertemplate=f"{name} best cosine %{{z:.3f}}"
                                 "<extra></extra>"), row=1, col=col)
    fig.add_trace(go.Heatmap(z=np.clip(affinity, 0, 1), zmin=0.0, zmax=1.0, colorscale="Viridis",
                             colorbar=dict(title="cosine", len=0.8), name="cosine",
                             hovertemplate="A patch %{y}, B patch %{x}: %{z:.3f}<extra></extra>"), row=1, col=3)
    image_axes(fig, 2)
    fig.update_yaxes(autorange="reversed", title="A patch", row=1, col=3)
    fig.update_xaxes(title="B patch", row=1, col=3)
    # image_axes leaves 40 px above the panels, room for their titles only: the figure title gets 30 more
    fig.update_layout(title=title, showlegend=False, height=410, width=1150, margin=dict(t=70))
    return fig


@torch.inference_mode()
def compare(image_a, image_b, descriptor, matcher=None, device: str = "cpu") -> Comparison:
    """Descriptor similarity, matcher score and patch affinity of one image pair.

    Args:
        image_a, image_b: PIL images or image files (any size; resized to each model's ``S``).
        descriptor: a descriptor checkpoint path or a :class:`icdlib.models.Descriptor`.
        matcher: optional matcher checkpoint path or :class:`icdlib.models.Matcher`.
        device: torch device.

    Returns:
        :class:`Comparison`.
    """
    a, b = _image(image_a, "image_a"), _image(image_b, "image_b")
    desc = _model(descriptor, "descriptor", Descriptor, device)
    size, patch = desc.config.img_size, desc.config.patch_size
    x = preprocess([a, b], size).to(device)  # (2, 3, S, S)
    d, tokens = desc.forward_with_tokens(x)  # (2, D), (2, N, C)
    similarity = float((d[0] * d[1]).sum())
    t = torch.nn.functional.normalize(tokens.float(), dim=-1)
    affinity = (t[0] @ t[1].T).cpu().numpy().astype(np.float32)  # (N_a, N_b)
    score = None
    if matcher is not None:
        m = _model(matcher, "matcher", Matcher, device)
        msize = m.config.img_size
        score = float(torch.sigmoid(m(preprocess([a], msize).to(device), preprocess([b], msize).to(device))).item())
    title = f"descriptor cosine {similarity:.3f}" + (f", matcher {score:.3f}" if score is not None else "")
    shown = [im.resize((size, size), Image.BICUBIC) for im in (a, b)]  # what the model sees
    return Comparison(similarity, score, affinity, affinity_matrix_figure(*shown, affinity, patch, title))
