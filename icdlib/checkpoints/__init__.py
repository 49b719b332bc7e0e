"""Checkpoints: atomic save, rebuild-and-load, and backbone weights from other formats.

:func:`save_checkpoint` and :func:`load_model` read and write icdlib's own files;
:func:`load_backbone_weights` imports a DINO-format ViT into a descriptor or matcher.
Every file is read by :func:`read_file` (weights-only torch load or safetensors): nothing
a checkpoint carries is executed, and every error names the file.
"""

from icdlib.checkpoints.files import CheckpointError, read_file
from icdlib.checkpoints.io import (
    FORMAT,
    BackboneLoad,
    load_backbone_weights,
    load_model,
    read_checkpoint,
    save_checkpoint,
    sidecar,
)

__all__ = ["FORMAT", "BackboneLoad", "CheckpointError", "load_backbone_weights", "load_model",
           "read_checkpoint", "read_file", "save_checkpoint", "sidecar"]
