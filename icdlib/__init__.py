"""icdlib: PixTrace (exact pixel tracing through image edits) and CopyNCE (patch-level
contrastive training on traced overlaps) for image copy detection.

Packages by concept (see docs/architecture.md): ``icdlib.pixtrace``, ``icdlib.edits``,
``icdlib.data``, ``icdlib.models``, ``icdlib.losses``, ``icdlib.checkpoints``,
``icdlib.eval``, ``icdlib.train``, ``icdlib.pipeline``, ``icdlib.viz``. Importing
``icdlib`` loads none of them.
"""


def compare(image_a, image_b, descriptor, matcher=None, device: str = "cpu"):
    """Descriptor similarity, matcher score and patch-affinity figure of one image pair.

    See :func:`icdlib.viz.compare.compare`; imported on first call, so ``import icdlib``
    stays light.
    """
    from icdlib.viz.compare import compare as _compare

    return _compare(image_a, image_b, descriptor, matcher=matcher, device=device)
