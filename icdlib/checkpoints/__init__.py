"""Checkpoints: atomic save, rebuild-and-load, and backbone weights from other formats.

:func:`save_checkpoint` and :func:`load_model` read and write icdlib's own files;
:func:`load_backbone_weights` imports a DINO-format ViT into a descriptor or matcher.
"""

from icdlib.checkpoints.io import FORMAT, BackboneLoad, load_backbone_weights, load_model, save_checkpoint

__all__ = ["FORMAT", "BackboneLoad", "load_backbone_weights", "load_model", "save_checkpoint"]
