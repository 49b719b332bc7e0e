"""Procedural source images: natural-like pictures from noise, shapes and text.

The families follow Baradad et al. (2021), "Learning to See by Looking at Noise":
images with natural-image statistics (occlusion, 1/f spectra, smooth shading, sharp
edges, glyphs) that need no download. Each image is a pure function of
``(kind, seed, size)``: the same arguments give the same pixels on every machine.

Kinds
-----
``dead_leaves``  occluding discs, ellipses and rectangles with scale-invariant radii
                 and striped or speckled fills.
``spectral``     coloured noise with a ``1/f^alpha`` amplitude spectrum.
``gradient``     linear or radial multi-stop colour ramps with soft bands.
``text``         a composition of shapes and random strings on a textured background.
``mixed``        dead leaves over a spectral background, sometimes with text.
``photo``        a random crop of a photograph (needs a :class:`PhotoPool`).

Sizes are ``(width, height)`` (an int means a square); outputs are ``PIL.Image`` RGB.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from icdlib.data.disc21 import load_image

PROCEDURAL_KINDS = ("dead_leaves", "spectral", "gradient", "text", "mixed")
KINDS = PROCEDURAL_KINDS + ("photo",)

# colour sample photographs shipped inside scikit-image (no download needed)
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class SourceConfig:
    """Mix of source kinds (nested in the ``data`` section of params.yaml as ``sources``).

    Attributes:
        kinds: procedural kinds to draw from (names in :data:`PROCEDURAL_KINDS`).
        weights: relative frequency of each kind, same length as ``kinds``.
        photo_share: fraction of images that are photo crops instead (0 disables photos).
        photo_dir: optional folder of the user's photos (searched recursively).
        skimage_photos: also use the sample photographs of ``skimage.data``.
    """

    kinds: tuple[str, ...] = PROCEDURAL_KINDS  # every family: the more varied, the better (Baradad et al.)
    weights: tuple[float, ...] = (0.3, 0.2, 0.1, 0.15, 0.25)  # occlusion-rich families weigh most
    photo_share: float = 0.0  # purely procedural by default: reproducible with no data at all
    photo_dir: str | None = None  # no user photos unless given
    skimage_photos: bool = True  # six bundled photos are always available offline

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in PROCEDURAL_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"SourceConfig.kinds: unknown or empty {bad or self.kinds}; known {PROCEDURAL_KINDS}")
        if len(self.weights) != len(self.kinds) or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(
                f"SourceConfig.weights: need {len(self.kinds)} non-negative weights with a positive sum, "
                f"got {self.weights}"
            )
        if not 0.0 <= self.photo_share <= 1.0:
            raise ValueError(f"SourceConfig.photo_share must be in [0, 1], got {self.photo_share}")


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and int(seed) >= 0:
        return np.random.default_rng(int(seed))
    raise ValueError(f"sources: seed must be a non-negative int or numpy Generator, got {seed!r}")


def _size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    if len(size) != 2 or int(size[0]) < 8 or int(size[1]) < 8:
        raise ValueError(f"sources: size must be an int or (width, height), each >= 8, got {size!r}")
    return int(size[0]), int(size[1])


def _colour(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """``[n, 3]`` float32 RGB in [0, 1], biased towards natural (desaturated, mid) tones."""
    grey = rng.uniform(0.05, 0.95, (n, 1))
    chroma = rng.normal(0.0, 0.22, (n, 3))
    return np.clip(grey + chroma, 0.0, 1.0).astype(np.float32)


def _to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------------- families
def _spectral(rng, w, h) -> np.ndarray:
    """``[h, w, 3]`` float32 in [0, 1]: colour noise with a 1/f^alpha spectrum."""
    alpha = rng.uniform(1.0, 2.6)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    # random anisotropy: stretch one axis of the frequency plane
    theta, stretch = rng.uniform(0, np.pi), rng.uniform(1.0, 3.0)
    u = fx * np.cos(theta) + fy * np.sin(theta)
    v = -fx * np.sin(theta) + fy * np.cos(theta)
    f = np.sqrt((u * stretch) ** 2 + v**2)
    f[0, 0] = 1.0
    amp = f ** (-alpha)
    amp[0, 0] = 0.0
    noise = rng.standard_normal((3, h, w)).astype(np.float32)
    field = np.fft.irfft2(np.fft.rfft2(noise) * amp, s=(h, w)).transpose(1, 2, 0)
    field /= field.std(axis=(0, 1), keepdims=True) + 1e-8
    # correlate the channels as natural colour does, then squash to [0, 1]
    mix = np.eye(3) * rng.uniform(0.2, 1.0) + rng.uniform(0.0, 1.0, (3, 3))
    field = field @ mix.T.astype(np.float32)
    field /= field.std(axis=(0, 1), keepdims=True) + 1e-8
    base = _colour(rng)[0]
    return np.clip(base + field * rng.uniform(0.12, 0.3), 0.0, 1.0).astype(np.float32)


def _gradient(rng, w, h) -> np.ndarray:
    """``[h, w, 3]`` float32: multi-stop linear or radial ramp with soft bands."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs, ys = (xs + 0.5) / w, (ys + 0.5) / h
    if rng.random() < 0.6:
        th = rng.uniform(0, 2 * np.pi)
        t = xs * np.cos(th) + ys * np.sin(th)
    else:
        cx, cy = rng.uniform(-0.2, 1.2, 2)
        t = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
    t = (t - t.min()) / (np.ptp(t) + 1e-8)
    n_stops = int(rng.integers(2, 5))
    stops = np.sort(rng.uniform(0, 1, n_stops))
    stops[0], stops[-1] = 0.0, 1.0
    cols = _colour(rng, n_stops)
    out = np.stack([np.interp(t, stops, cols[:, c]) for c in range(3)], -1)
    if rng.random() < 0.5:  # soft bands, like shading on a curved surface
        freq, phase = rng.uniform(2, 12), rng.uniform(0, 2 * np.pi)
        out *= (1.0 - rng.uniform(0.05, 0.3) * (0.5 + 0.5 * np.sin(2 * np.pi * freq * t + phase)))[..., None]
    return out.astype(np.float32)


def _fill(rng, hh, ww, colour) -> np.ndarray:
    """Fill texture ``[hh, ww, 3]`` for one shape: flat, striped or speckled."""
    r = rng.random()
    if r < 0.45:
        return np.broadcast_to(colour, (hh, ww, 3))
    if r < 0.8:
        ys, xs = np.ogrid[0:hh, 0:ww]
        th, period = rng.uniform(0, np.pi), rng.uniform(2.5, 12.0)
        wave = 0.5 + 0.5 * np.sin((xs * np.cos(th) + ys * np.sin(th)) * (2 * np.pi / period))
        other = _colour(rng)[0]
        return colour + (other - colour) * wave[..., None]
    speck = rng.standard_normal((hh, ww, 1)).astype(np.float32) * rng.uniform(0.03, 0.15)
    return np.clip(colour + speck, 0.0, 1.0)


def _dead_leaves(rng, w, h, canvas=None, n_max: int = 160) -> np.ndarray:
    """``[h, w, 3]`` float32: occluding shapes painted back to front."""
    out = np.empty((h, w, 3), np.float32) if canvas is None else canvas.copy()
    if canvas is None:
        out[:] = _colour(rng)[0]
    n = int(rng.integers(n_max // 3, n_max))
    side = min(w, h)
    rmin, rmax = side * 0.03, side * 0.6
    # radii with density ~ r^-2.5 (near scale invariance), by inverse CDF
    u = rng.random(n)
    radii = (u * rmin**-1.5 + (1 - u) * rmax**-1.5) ** (-1 / 1.5)
    radii = np.sort(radii)[::-1]  # large first so small ones stay visible
    for r in radii:
        cx, cy = rng.uniform(-r, w + r), rng.uniform(-r, h + r)
        kind = rng.random()
        ar = rng.uniform(0.4, 1.0) if kind >= 0.4 else 1.0
        x0, x1 = int(max(0, np.floor(cx - r))), int(min(w, np.ceil(cx + r)))
        y0, y1 = int(max(0, np.floor(cy - r))), int(min(h, np.ceil(cy + r)))
        if x1 <= x0 or y1 <= y0:
            continue
        ys, xs = np.ogrid[y0:y1, x0:x1]
        dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
        if kind < 0.7:  # disc or rotated ellipse
            th = rng.uniform(0, np.pi)
            u_ = dx * np.cos(th) + dy * np.sin(th)
            v_ = -dx * np.sin(th) + dy * np.cos(th)
            mask = (u_ / r) ** 2 + (v_ / (r * ar)) ** 2 <= 1.0
        else:  # rotated rectangle
            th = rng.uniform(0, np.pi)
            u_ = dx * np.cos(th) + dy * np.sin(th)
            v_ = -dx * np.sin(th) + dy * np.cos(th)
            mask = (np.abs(u_) <= r * 0.8) & (np.abs(v_) <= r * 0.8 * rng.uniform(0.3, 1.0))
        tex = _fill(rng, y1 - y0, x1 - x0, _colour(rng)[0])
        region = out[y0:y1, x0:x1]
        region[mask] = tex[mask]
    return out


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


_ALPHABET = string.ascii_letters + string.digits + "      .,!?&%#@"


def _draw_text(rng, img: Image.Image, n_min: int, n_max: int) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(n_min, n_max + 1))):
        size = int(rng.integers(max(6, min(w, h) // 14), max(8, min(w, h) // 3)))
        length = int(rng.integers(2, 14))
        txt = "".join(rng.choice(list(_ALPHABET), length)).strip() or "A"
        xy = (float(rng.uniform(-0.2 * w, 0.9 * w)), float(rng.uniform(-0.1 * h, 0.9 * h)))
        col = tuple(int(c) for c in (_colour(rng)[0] * 255))
        draw.text(xy, txt, fill=col, font=_font(size))


def _text(rng, w, h) -> Image.Image:
    """Background, a few flat shapes and random strings in the default font."""
    bg = _gradient(rng, w, h) if rng.random() < 0.5 else _spectral(rng, w, h)
    img = _to_image(bg)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = rng.uniform(-0.2, 0.9) * w, rng.uniform(-0.2, 0.9) * h
        bw, bh = rng.uniform(0.1, 0.7) * w, rng.uniform(0.1, 0.7) * h
        col = tuple(int(c) for c in (_colour(rng)[0] * 255))
        box = [float(x0), float(y0), float(x0 + bw), float(y0 + bh)]
        (draw.ellipse if rng.random() < 0.4 else draw.rectangle)(box, fill=col)
    _draw_text(rng, img, 1, 5)
    return img


def _mixed(rng, w, h) -> Image.Image:
    bg = _spectral(rng, w, h) if rng.random() < 0.7 else _gradient(rng, w, h)
    arr = _dead_leaves(rng, w, h, canvas=bg, n_max=int(rng.integers(6, 60)))
    img = _to_image(arr)
    if rng.random() < 0.4:
        _draw_text(rng, img, 1, 3)
    return img


# ---------------------------------------------------------------------- photos
class PhotoPool:
    """Photographs to crop sources from: a user folder and/or the skimage samples.

    The pool is ordered (skimage names in :data:`SKIMAGE_PHOTOS` order, then files sorted
    by relative path) so that an index always names the same photo. Photos are decoded
    lazily and kept as ``[H, W, 3]`` uint8 arrays.
    """

    def __init__(self, folder: str | Path | None = None, use_skimage: bool = True):
        self.names: list[str] = []
        self._loaders: list = []
        if use_skimage:
            import skimage.data

            for name in SKIMAGE_PHOTOS:
                self.names.append(f"skimage:{name}")
                self._loaders.append(getattr(skimage.data, name))
        if folder is not None:
            folder = Path(folder)
            if not folder.is_dir():
                raise FileNotFoundError(f"PhotoPool: photo folder not found: {folder}")
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
            if not files:
                raise ValueError(f"PhotoPool: no images ({', '.join(PHOTO_SUFFIXES)}) under {folder}")
            for p in files:
                self.names.append(str(p.relative_to(folder)))
                self._loaders.append(lambda p=p: np.asarray(load_image(p)))
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.names)

    def get(self, i: int) -> np.ndarray:
        """Photo ``i`` as ``[H, W, 3]`` uint8."""
        if i not in self._cache:
            arr = np.asarray(self._loaders[i]())
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, -1)
            self._cache[i] = np.ascontiguousarray(arr[..., :3].astype(np.uint8))
        return self._cache[i]

    def crop(self, rng: np.random.Generator, size: tuple[int, int], allowed: Sequence[int] | None = None):
        """A random crop (area 5-60 %, aspect near the output's) resized to ``size``.

        Returns ``(PIL RGB image, photo index)``; ``allowed`` restricts which photos are used.
        """
        if len(self) == 0:
            raise ValueError("PhotoPool.crop: the pool is empty (no folder and skimage photos off)")
        idx = int(rng.choice(np.asarray(allowed if allowed is not None else range(len(self)))))
        arr = self.get(idx)
        ph, pw = arr.shape[:2]
        w, h = size
        area = rng.uniform(0.05, 0.6) * pw * ph
        aspect = (w / h) * np.exp(rng.uniform(-0.2, 0.2))
        cw = int(min(pw, max(8, round(np.sqrt(area * aspect)))))
        ch = int(min(ph, max(8, round(np.sqrt(area / aspect)))))
        x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        img = Image.fromarray(arr[y0 : y0 + ch, x0 : x0 + cw]).resize((w, h), Image.BICUBIC)
        return img, idx


# ---------------------------------------------------------------------- public
def render(kind: str, seed, size=128, photos: PhotoPool | None = None) -> Image.Image:
    """Render one source image.

    Args:
        kind: one of :data:`KINDS`.
        seed: non-negative int (or a numpy Generator, consumed) fixing every random draw.
        size: ``(width, height)`` in pixels, or an int for a square.
        photos: the :class:`PhotoPool` to crop from; required for ``kind="photo"``.
    Returns:
        ``PIL.Image`` in mode RGB of the given size; the same arguments give the same pixels.
    """
    w, h = _size(size)
    rng = _rng(seed)
    if kind == "dead_leaves":
        return _to_image(_dead_leaves(rng, w, h))
    if kind == "spectral":
        return _to_image(_spectral(rng, w, h))
    if kind == "gradient":
        return _to_image(_gradient(rng, w, h))
    if kind == "text":
        return _text(rng, w, h)
    if kind == "mixed":
        return _mixed(rng, w, h)
    if kind == "photo":
        if photos is None:
            raise ValueError("render: kind 'photo' needs a PhotoPool (photos=...)")
        return photos.crop(rng, (w, h))[0]
    raise ValueError(f"render: unknown kind {kind!r}; known kinds {KINDS}")


def pick_kind(rng: np.random.Generator, config: SourceConfig = SourceConfig()) -> str:
    """Draw a kind from ``config`` (``"photo"`` with probability ``photo_share``)."""
    if config.photo_share > 0 and rng.random() < config.photo_share:
        return "photo"
    p = np.asarray(config.weights, dtype=np.float64)
    return str(config.kinds[int(rng.choice(len(p), p=p / p.sum()))])
