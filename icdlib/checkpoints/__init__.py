"""Checkpoints: atomic save, rebuild-and-load, released weights and backbone import.

:func:`save_checkpoint` and :func:`load_model` read and write icdlib's own files;
:func:`load_model` also reads the official CopyNCE release files
(:mod:`icdlib.checkpoints.official`); :func:`load_backbone_weights` imports a DINO, timm or
Hugging Face ViT (``.pth`` or ``.safetensors``) into a descriptor or matcher trunk.
"""

from icdlib.checkpoints.backbone import BackboneLoad, load_backbone_weights, read_weights
from icdlib.checkpoints.io import FORMAT, load_model, save_checkpoint
from icdlib.checkpoints.official import SOURCE, load_release

__all__ = [
    "FORMAT", "SOURCE", "BackboneLoad", "load_backbone_weights", "load_model", "load_release",
    "read_weights", "save_checkpoint",
]
