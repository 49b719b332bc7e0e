"""Replaying an edit chain: :func:`apply` runs validated specs and collects their trace.

It tracks the source's share (blend weight) of every output pixel, so a pixel becomes
untraceable once covered beyond ``EditConfig.occlusion_threshold`` (see
:mod:`icdlib.edits`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image

from icdlib.edits.chains import EditConfig
from icdlib.edits.donors import cover_resize_array, procedural_donor_array
from icdlib.edits.limits import size_bound
from icdlib.edits.raster import rgb_array, rgb_image, size_of, to_rgb8
from icdlib.edits.registry import validate
from icdlib.edits.warps import warp_weight
from icdlib.pixtrace import Step, Trace


@dataclass(frozen=True)
class Context:
    """What an op may use besides its parameters.

    Attributes:
        donors: ``None`` (procedural donors), a callable ``seed -> PIL image``, or a
            sequence of PIL images indexed by ``seed % len``.
        occlusion_threshold: opacity from which covered pixels become untraceable.
    """

    donors: Any = None
    occlusion_threshold: float = 0.5
    state: dict = field(default_factory=dict)  # per-op scratch: "weight", "pending" in, "weight_out" out

    def weight(self) -> np.ndarray:
        """``[H, W]`` float32 share of the source in every pixel of the op's input.

        Built on first use: the weight map is carried through the geometric steps logged
        since it was last needed (``state["pending"]``) only when an op asks for it.
        """
        pending = self.state.get("pending")
        if pending:
            w = self.state["weight"]
            for st in pending:
                w = warp_weight(w, st.matrix, st.out_size)
            self.state["weight"] = w
            pending.clear()
        return self.state["weight"]

    def covered(self, weight_out: np.ndarray, before: np.ndarray | None = None) -> np.ndarray | None:
        """Record the op's output source weight; return the step mask it implies.

        The mask (True = traceable) is ``weight_out > 1 - threshold``, or ``None`` when
        it hides nothing beyond what was already untraceable or off the source.
        ``before``, the same pixels' weight before the op covered them, tells a fully
        covered pixel (weight 0 now, traceable before) from one that never held the
        source; without it, only pixels left with some source weight count.
        """
        self.state["weight_out"] = weight_out
        visible = weight_out > 1.0 - self.occlusion_threshold
        candidates = weight_out > 0
        if before is not None:
            candidates |= before > 1.0 - self.occlusion_threshold
        np.greater(candidates, visible, out=candidates)  # candidates & ~visible, in place
        return visible if candidates.any() else None

    def donor(self, seed: int, size: tuple[int, int]) -> Image.Image:
        """An RGB donor image of exactly ``size`` (w, h), chosen by ``seed``.

        Caller-supplied donors are centre-cropped to the aspect ratio and resized
        (bilinear), so the output geometry never depends on the donor's own size.
        """
        return rgb_image(self.donor_array(seed, size))

    def donor_array(self, seed: int, size: tuple[int, int]) -> np.ndarray:
        """:meth:`donor` as an ``[h, w, 3]`` uint8 array."""
        if self.donors is None:
            return procedural_donor_array(seed, size)
        if callable(self.donors):
            # a callable marked ``sized`` is told the size it will be resized to (it may decode less)
            img = self.donors(seed, size) if getattr(self.donors, "sized", False) else self.donors(seed)
        elif isinstance(self.donors, Sequence) and len(self.donors) > 0:
            img = self.donors[seed % len(self.donors)]
        else:
            raise ValueError(f"donors must be None, a callable or a non-empty sequence, got {self.donors!r}")
        if not isinstance(img, Image.Image):
            raise ValueError(f"donors: seed {seed} gave {type(img).__name__}, expected a PIL image")
        return cover_resize_array(to_rgb8(img) if img.mode != "RGB" else img, size)


def apply(
    image: Image.Image,
    specs: Sequence[dict],
    donors: Any = None,
    config: EditConfig | None = None,
) -> tuple[Image.Image, Trace]:
    """Apply an edit chain and trace it.

    Args:
        image: PIL image, the *source*; converted to 8-bit RGB by
            :func:`icdlib.edits.raster.to_rgb8` (16-bit and float pixels scaled, not clipped).
        specs: list of spec dicts (see the module docstring and :data:`OPS`).
        donors: foreign images for composite ops (see :class:`Context`); default: render
            them procedurally from each spec's ``seed``.
        config: :class:`EditConfig`; only ``occlusion_threshold`` is read here.
    Returns:
        ``(edited RGB image, Trace)`` with ``trace.source_size == image.size`` and
        ``trace.size == edited.size``.
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"apply: image must be a PIL image, got {type(image).__name__}")
    out, trace = _run("apply", image, specs, donors, config)
    return rgb_image(out), trace


def apply_array(
    image,
    specs: Sequence[dict],
    donors: Any = None,
    config: EditConfig | None = None,
) -> tuple[np.ndarray, Trace]:
    """:func:`apply` with arrays: ``image`` is a PIL image or an ``[H, W, 3]`` uint8 array,
    and the edited image comes back as a new ``[H, W, 3]`` uint8 array (the same pixels
    as :func:`apply`'s). The training loader uses it: no PIL image is made at the end."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"apply_array: image must be a uint8 [H, W, 3] array, got {image.dtype} {image.shape}")
    elif not isinstance(image, Image.Image):
        raise ValueError(f"apply_array: image must be a PIL image or an array, got {type(image).__name__}")
    out, trace = _run("apply_array", image, specs, donors, config)
    out = rgb_array(out)
    return (out.copy() if out is image or not out.flags.writeable else out), trace


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a``: ops must never draw on their input."""
    if not a.flags.writeable:
        return a
    v = a.view()
    v.flags.writeable = False
    return v


def _run(who: str, image, specs, donors, config) -> tuple[Any, Trace]:
    """The chain on ``image`` (PIL or array); the result is whichever kind the last op gave.

    Each op gets the kind it was registered for (:class:`~icdlib.edits.registry.Op`):
    between two array ops no PIL image is made, which saves two full-image copies."""
    if isinstance(specs, dict) or not isinstance(specs, Sequence):
        raise ValueError(f"{who}: specs must be a list of dicts, got {type(specs).__name__}")
    cfg = config if config is not None else EditConfig()
    ctx = Context(donors=donors, occlusion_threshold=cfg.occlusion_threshold)
    source_size = size_of(image)
    if source_size[0] * source_size[1] > cfg.max_pixels:
        raise ValueError(f"{who}: source image {source_size[0]}x{source_size[1]} has more than "
                         f"edits.max_pixels={cfg.max_pixels} pixels")
    img = image if isinstance(image, np.ndarray) or image.mode == "RGB" else to_rgb8(image)  # 16-bit: scaled
    steps: list[Step] = []
    # Share of the source in every pixel. Translucent layers compound (two layers at
    # 0.4 leave 0.36 of the source), so occlusion is judged on this running weight.
    weight = np.ones((source_size[1], source_size[0]), np.float32)
    pending: list[Step] = []  # steps the weight map has not been carried through yet (Context.weight)
    for i, spec in enumerate(specs):
        op, params = validate(spec)
        before = size_of(img)
        bw, bh = size_bound(op.name, params, before)
        if bw * bh > cfg.max_pixels:
            raise ValueError(
                f"{who}: edit #{i} ({op.name}) would make a {bw}x{bh} image from {before[0]}x{before[1]}, "
                f"over edits.max_pixels={cfg.max_pixels}; refused before allocating it"
            )
        ctx.state.clear()
        ctx.state["weight"], ctx.state["pending"] = weight, pending
        img, new = op.fn(_read_only(rgb_array(img)) if op.arrays else rgb_image(img), params, ctx)
        if isinstance(img, np.ndarray) and (img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3):
            raise AssertionError(f"{op.name}: returned a {img.dtype} {img.shape} array (edit #{i})")
        if "weight_out" in ctx.state:
            weight, pending = ctx.state["weight_out"], []
        else:
            weight, pending = ctx.state["weight"], ctx.state["pending"] + list(new)
        for st in new:
            if st.in_size != (steps[-1].out_size if steps else source_size):
                raise AssertionError(f"{op.name}: step sizes do not chain (edit #{i})")
        after = size_of(img)
        if not new and after != before:
            raise AssertionError(f"{op.name}: size changed without a step (edit #{i})")
        if after[0] > bw or after[1] > bh:
            raise AssertionError(f"{op.name}: output {after} exceeds its size bound {(bw, bh)} (edit #{i})")
        steps.extend(new)
    trace = Trace(source_size, steps)
    if trace.size != size_of(img):
        raise AssertionError(f"trace size {trace.size} != image size {size_of(img)}")
    return img, trace
