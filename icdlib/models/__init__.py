"""ViT copy-detection models on timm's ``VisionTransformer``: descriptor and pairwise matcher.

Both models start from random initialisation (no hub downloads); a local DINO checkpoint
can be loaded with :func:`icdlib.checkpoints.load_backbone_weights`, and trained models
are saved and loaded with :mod:`icdlib.checkpoints`.

Image input: float ``[B, 3, S, S]`` ImageNet-normalised (see :func:`preprocess`), ``S`` the
config's ``img_size``. Patch tokens are ``[B, N, C]`` with ``N = (S // p) ** 2`` patches
numbered row-major (the numbering of :func:`icdlib.pixtrace.overlap`), the remainder of
``S / p`` dropped, as a ViT patch embedding does.

Presets (``PRESETS``): ``vit_tiny_cpu`` (width 192, depth 6, 3 heads, patch 16, 112 px,
the CPU profile), ``vit_small`` (ViT-S/16 at 224, the paper's) and ``vit_base`` (ViT-B/16).
"""

from icdlib.models.config import CONFIGS, PRESETS, DescriptorConfig, MatcherConfig, Preset, config_from_dict
from icdlib.models.preprocess import preprocess
from icdlib.models.vit import Descriptor, Matcher, build_descriptor, build_matcher, build_model, gem

__all__ = [
    "CONFIGS", "PRESETS", "Descriptor", "DescriptorConfig", "Matcher", "MatcherConfig", "Preset",
    "build_descriptor", "build_matcher", "build_model", "config_from_dict", "gem", "preprocess",
]
