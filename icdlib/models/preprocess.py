"""Model input: PIL images to ImageNet-normalised float tensors."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from icdlib.edits import raster


_MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_DEFAULT_STD, dtype=torch.float32).view(1, 3, 1, 1)


def resized_pixels(image: Image.Image, size: int) -> np.ndarray:
    """The uint8 ``[size, size, 3]`` RGB pixels :func:`preprocess` normalises: bicubic resize
    (:func:`icdlib.edits.raster.model_resize`, the one training inputs get too)."""
    return raster.model_resize(raster.rgb_array(image), int(size))


def from_pixels(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, S, S, 3]`` pixels (:func:`resized_pixels`) -> ``[B, 3, S, S]`` float32 model input.

    The single definition of the normalisation: :func:`preprocess` calls it, and images
    decoded once and kept as pixels (:mod:`icdlib.eval.pixels`) go through it too, so both
    paths give bit-identical inputs.
    """
    x = torch.as_tensor(pixels)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"from_pixels: need uint8 [B, S, S, 3], got {x.dtype} {tuple(x.shape)}")
    x = x.to(torch.float32).permute(0, 3, 1, 2).div_(255.0)
    return ((x - _MEAN) / _STD).contiguous()


def preprocess(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """PIL images -> model input: RGB, bicubic resize to ``size x size``, ImageNet-normalised.

    Returns:
        ``[B, 3, size, size]`` float32 (channels R, G, B).
    """
    if isinstance(images, Image.Image):
        images = [images]
    if len(images) == 0:
        raise ValueError("preprocess: no images given")
    if int(size) < 1:
        raise ValueError(f"preprocess: size must be >= 1, got {size}")
    return from_pixels(np.stack([resized_pixels(im, size) for im in images]))
