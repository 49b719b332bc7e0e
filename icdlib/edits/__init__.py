"""DISC21-style image edits that log exact PixTrace steps.

An edit chain is a list of plain, JSON-serialisable dicts (*specs*)::

    [{"op": "rotate", "degrees": 30, "expand": True},
     {"op": "text", "text": "lol", "x": 0.1, "y": 0.7, "size": 0.12, ...}]

:func:`apply` replays a chain on a PIL RGB image and returns the edited image together
with a :class:`icdlib.pixtrace.Trace` from the input frame to the output frame;
:func:`apply_array` does the same on and to ``[H, W, 3]`` uint8 arrays (the training
loader's path: the same pixels, no PIL image at either end).
Every op is registered in :data:`OPS` (:mod:`icdlib.edits.registry`) with a typed parameter table (:class:`Param`):
the table validates specs (bad input raises ``ValueError`` naming the op and the
parameter) and lets user interfaces build controls generically. An op takes a PIL
image, or, registered with ``arrays=True``, a read-only array; the engine converts
between the two only where consecutive ops differ (most built-in ops take arrays).

Conventions
-----------
* Pixels: continuous ``(x, y)``, pixel (col c, row r) covers ``[c, c+1) x [r, r+1)``,
  centre ``(c + 0.5, r + 0.5)``; sizes are ``(width, height)``. Rotations, affine,
  perspective and object warps go through :func:`icdlib.edits.raster.warp_array`, which
  hands OpenCV the exact inverse of the logged matrix, sampled at output pixel centres
  (``tests/test_exactness.py`` checks it); crops, pastes and paddings use whole-pixel
  offsets and resizes the exact size ratio.
* Relative parameters: positions, lengths and areas are fractions of the current
  image size, so a chain means the same thing at any resolution.
* Randomness an op needs (donor images, polygon shapes, noise) comes from an integer
  ``seed`` stored in the spec; replaying a spec gives identical bytes.
* Occlusion: :func:`apply` tracks the source's share (blend weight) of every output
  pixel through the chain; a pixel is untraceable once that share is
  <= 1 - ``EditConfig.occlusion_threshold``. A single layer of opacity >= threshold
  hides what it covers; translucent layers compound (0.4 over 0.4 leaves 0.36).
* Families: ``geometric``, ``composite``, ``overlay`` and ``photometric``; photometric
  ops change appearance only and log no step.
"""

from icdlib.edits.registry import (
    FAMILIES, OPS, Op, Param, color_param, complete, list_ops, opacity_param, register, validate,
)
from icdlib.edits.engine import Context, apply, apply_array
from icdlib.edits.chains import EditConfig, sample_chain
from icdlib.edits.samplers import SAMPLERS
# Importing the op families fills OPS.
from icdlib.edits import composites, overlays, photometric, warps  # noqa: F401,E402

__all__ = [
    "FAMILIES", "OPS", "SAMPLERS", "Context", "EditConfig", "Op", "Param", "apply", "apply_array", "color_param",
    "complete", "list_ops", "opacity_param", "register", "sample_chain", "validate",
]
