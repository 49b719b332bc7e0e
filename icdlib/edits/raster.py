"""Resampling of RGB images with OpenCV, in the pixel-centre convention of :mod:`icdlib.edits`.

Matrices here map continuous *input* points to *output* points, with pixel ``(c, r)``
covering ``[c, c+1) x [r, r+1)`` (centre ``(c + 0.5, r + 0.5)``). OpenCV indexes
pixels by their centres (centre of pixel ``c`` at ``x = c``), so a matrix ``M`` in our
convention is ``T(+1/2) M T(-1/2)`` in OpenCV's (:func:`cv_matrix`). ``cv2.warpAffine`` /
``cv2.warpPerspective`` are handed the output -> input map (``WARP_INVERSE_MAP``) and
sample it at every output pixel centre, exactly as Pillow's ``transform`` does; they
interpolate 8-bit images in fixed point (sub-pixel positions on a 1/32 px grid, results
rounded, not truncated) and blend ``fill`` into pixels whose neighbourhood leaves the
input. ``tests/test_exactness.py`` checks the convention on coordinate-encoded images.

OpenCV runs these ops on its own thread pool, which nothing here configures. A training
DataLoader worker is one core: :func:`icdlib.data.pairs.make_loader` forks its workers with
OpenCV set to one thread and restores the caller's setting afterwards (calling
``cv2.setNumThreads`` inside a forked worker can deadlock once the parent has used the
pool); ``benchmarks/loader.py`` sets one thread for its own process.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Size = tuple[int, int]

_HALF = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
_HALF_INV = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
INTER = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def cv_matrix(matrix: np.ndarray) -> np.ndarray:
    """(3, 3) output -> input map in OpenCV's pixel indexing for ``matrix`` (input ->
    output points, pixel-centre convention), normalised so that ``[2, 2] == 1``."""
    inv = _HALF_INV @ np.linalg.inv(np.asarray(matrix, np.float64)) @ _HALF
    return inv / inv[2, 2]


def _is_affine(m: np.ndarray) -> bool:
    return abs(m[2, 0]) < 1e-12 and abs(m[2, 1]) < 1e-12


def warp_array(a: np.ndarray, matrix: np.ndarray, out_size: Size, resample: str = "bilinear",
               fill=0) -> np.ndarray:
    """Render the ``[H, W(, C)]`` array ``a`` through ``matrix`` (input -> output points)
    onto ``out_size`` (w, h): every output pixel centre samples the input at the mapped
    point (``resample``: nearest, bilinear or bicubic); outside the input, ``fill``
    (a number, or one per channel). Returns the array's dtype."""
    inv = cv_matrix(matrix)
    size = (int(out_size[0]), int(out_size[1]))
    flags = INTER[resample] | cv2.WARP_INVERSE_MAP
    border = tuple(float(v) for v in fill) if np.ndim(fill) else float(fill)
    if _is_affine(inv):
        return cv2.warpAffine(a, inv[:2], size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=border)
    return cv2.warpPerspective(a, inv, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def resize_array(a: np.ndarray, size: Size, resample: str = "bilinear") -> np.ndarray:
    """``a`` (``[H, W(, C)]``) resized to ``size`` (w, h), pixel centres on pixel centres
    (output centre ``c + 0.5`` reads input ``(c + 0.5) W / w``, as Pillow's resize).

    Shrinking both sides, one of them below half, averages pixel areas (``INTER_AREA``:
    antialiased, like Pillow's shrinking filters); otherwise ``resample`` interpolates
    (above half size the interpolation kernel's aliasing is slight, and it is 5x faster
    than area averaging at non-integer ratios).
    """
    h, w = a.shape[:2]
    size = (int(size[0]), int(size[1]))
    if size == (w, h):
        return a.copy()
    if resample == "nearest":  # OpenCV's INTER_NEAREST reads corners, not centres: go through warp
        return warp_array(a, np.diag([size[0] / w, size[1] / h, 1.0]), size, "nearest")
    area = size[0] <= w and size[1] <= h and (2 * size[0] < w or 2 * size[1] < h)
    interp = cv2.INTER_AREA if area else INTER[resample]
    return cv2.resize(a, size, interpolation=interp)


def model_resize_planes(a: np.ndarray, size: int) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> ``[3, size, size]`` uint8 tensor: the model-input resize, training and
    evaluation alike (:func:`model_resize` gives the same pixels as ``[size, size, 3]``).

    Pillow's ``BICUBIC`` filter (cubic kernel a = -0.5, widened by the shrink factor when
    shrinking, so it antialiases; output centre ``c + 0.5`` reads input ``(c + 0.5) W / size``),
    a horizontal pass then a vertical one, each rounded to uint8, run by torch's uint8 kernel
    (``interpolate(mode="bicubic", antialias=True)``): 4x faster than Pillow's. Its
    fixed-point weights are coarser than Pillow's, so up to 1.6 % of pixels differ from
    Pillow's own two passes, by at most two grey levels (``tests/test_pixels.py``). Pillow's
    ``resize`` itself is not one fixed reference: newer releases run the vertical pass first
    for some shapes. A ``size x size`` input is only split into planes.
    """
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"model_resize: need a uint8 [H, W, 3] array, got {getattr(a, 'dtype', type(a))} "
                         f"{getattr(a, 'shape', '')}")
    s = int(size)
    if a.shape[:2] == (s, s):
        return rgb_planes(a)
    x = torch.from_numpy(np.require(a, requirements=["C", "W"])).permute(2, 0, 1)[None]  # channels-last: the fast path
    return F.interpolate(x, size=(s, s), mode="bicubic", antialias=True, align_corners=False)[0]


def model_resize(a: np.ndarray, size: int) -> np.ndarray:
    """:func:`model_resize_planes` as a ``[size, size, 3]`` uint8 array (a new one)."""
    return cv2.merge(list(model_resize_planes(a, size).numpy()))


def to_rgb8(img: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``img``, scaling 16-bit and float pixels instead of clipping them.

    PIL's own ``convert("RGB")`` clips every value above 255 (a 16-bit or float image
    comes out white or black). Here ``I;16*`` modes map 0..65535 to 0..255 (divide by
    257); ``I`` (32-bit int, how some 16-bit files decode) does the same when a value
    passes 255, else it is taken as 8-bit; ``F`` (float) maps 0..1 to 0..255 when no
    value passes 1, else like ``I``. NaN becomes 0. Other modes go through ``convert``.
    Decoded files (:func:`icdlib.data.load_image`) and in-memory sources of
    :func:`icdlib.edits.apply` both come through here.
    """
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        top = float(a.max()) if a.size else 0.0
        if img.mode.startswith("I;16") or top > 255.0:
            a = a / 257.0
        elif img.mode == "F" and top <= 1.0:
            a = a * 255.0
        gray = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB")
    return img.convert("RGB")


def rgb_array(img) -> np.ndarray:
    """``[H, W, 3]`` uint8 array of a PIL image (read-only; other modes through
    :func:`to_rgb8`), or the array itself."""
    if isinstance(img, np.ndarray):
        return img
    return np.asarray(img if img.mode == "RGB" else to_rgb8(img))


def rgb_image(a) -> Image.Image:
    """PIL RGB image of a ``[H, W, 3]`` uint8 array (a PIL image is returned as it is)."""
    if isinstance(a, Image.Image):
        return a
    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def size_of(img) -> Size:
    """``(width, height)`` of a PIL image or of an ``[H, W(, C)]`` array."""
    if isinstance(img, np.ndarray):
        return int(img.shape[1]), int(img.shape[0])
    return img.size


def rgb_planes(a: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 array -> ``[3, H, W]`` uint8 tensor (a new one)."""
    return torch.from_numpy(np.stack(cv2.split(np.ascontiguousarray(a))))


def warp_image(image: Image.Image, matrix: np.ndarray, out_size: Size, resample: str = "bilinear",
               fill=(0, 0, 0)) -> Image.Image:
    """:func:`warp_array` of an RGB PIL image."""
    return rgb_image(warp_array(rgb_array(image), matrix, out_size, resample, tuple(fill)))
