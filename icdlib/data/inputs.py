"""Model inputs: images resized to the model's input size and ImageNet-normalised.

The resize is :func:`icdlib.edits.raster.model_resize` (Pillow's bicubic filter, run by
torch), pixel for pixel the one evaluation uses (:func:`icdlib.models.preprocess.resized_pixels`):
a model sees the same inputs in training and at evaluation (``tests/test_matcher_diag.py``).
Output pixel centre ``c + 0.5`` samples input ``(c + 0.5) * w / S``, the continuous scale
``x' = x * S / w`` that :func:`icdlib.data.pairs.resize_trace` logs.
"""

from __future__ import annotations

import torch
from PIL import Image

from icdlib.edits import raster

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the statistics DINO/timm ViTs were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def to_tensor(img) -> torch.Tensor:
    """PIL RGB image or ``[H, W, 3]`` uint8 array -> ``[3, H, W]`` float32, ImageNet-normalised.

    ``(x / 255 - mean) / std``: the channels are moved first while still uint8 (``cv2.split``), and the float ops
    run in place (the same float32 operations, in the same order, as the out-of-place form).
    """
    return _normalised(raster.rgb_planes(raster.rgb_array(img)))


def _normalised(planes: torch.Tensor) -> torch.Tensor:
    return planes.to(torch.float32).div_(255.0).sub_(_MEAN).div_(_STD)


def resize_image(img: Image.Image, size: int) -> Image.Image:
    """The image half of :func:`icdlib.data.pairs.resize_traced`: ``size x size`` by
    :func:`icdlib.edits.raster.model_resize` (an image already that size comes back as is)."""
    if img.size == (size, size):
        return img
    return raster.rgb_image(raster.model_resize(raster.rgb_array(img), size))


def model_input(img: Image.Image, size: int) -> torch.Tensor:
    """``to_tensor(resize_image(img, size))``: the model input of one image (resized as planes,
    never interleaved in between)."""
    return _normalised(raster.model_resize_planes(raster.rgb_array(img), size))
