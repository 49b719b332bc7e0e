"""Checkpoints: atomic save, rebuild-and-load, released weights and backbone import.

:func:`save_checkpoint` and :func:`load_model` read and write icdlib's own files;
:func:`load_model` also reads the official CopyNCE release files
(:mod:`icdlib.checkpoints.official`); :func:`load_backbone_weights` imports a DINO, timm or
Hugging Face ViT (``.pth`` or ``.safetensors``) into a descriptor or matcher trunk. Every
file is read by :func:`read_file` (weights-only torch load or safetensors): nothing a
checkpoint carries is executed, and every error names the file.
"""

from icdlib.checkpoints.backbone import BackboneLoad, load_backbone_weights, read_weights
from icdlib.checkpoints.files import CheckpointError, read_file
from icdlib.checkpoints.io import FORMAT, load_model, read_checkpoint, save_checkpoint, sidecar
from icdlib.checkpoints.official import SOURCE, load_release

__all__ = [
    "FORMAT", "SOURCE", "BackboneLoad", "CheckpointError", "load_backbone_weights", "load_model",
    "load_release", "read_checkpoint", "read_file", "read_weights", "save_checkpoint", "sidecar",
]
