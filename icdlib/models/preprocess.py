"""Model input: PIL images to ImageNet-normalised float tensors."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


_MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_DEFAULT_STD, dtype=torch.float32).view(1, 3, 1, 1)


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
    size = int(size)
    arrays = [
        np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32)
        for im in images
    ]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).div_(255.0)
    return ((x - _MEAN) / _STD).contiguous()
