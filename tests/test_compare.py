"""icdlib.viz.compare.compare: one image pair through a descriptor (and matcher)."""

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from icdlib.checkpoints import save_checkpoint
from icdlib.models import build_descriptor, build_matcher
from icdlib.viz.compare import compare

SMALL = dict(img_size=32, patch_size=8, depth=1, embed_dim=24, num_heads=2, desc_dim=8)


def _img(seed, size=(40, 30)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)


@pytest.fixture(scope="module")
def models():
    return (build_descriptor("vit_tiny_cpu", seed=0, **SMALL),
            build_matcher("vit_tiny_cpu", seed=0, img_size=32, patch_size=8, embed_dim=24, num_heads=2,
                          encoder_depth=1, fusion_depth=1))


def test_an_image_against_itself_is_its_own_best_match(models):
    desc, _ = models
    res = compare(_img(1), _img(1), descriptor=desc)
    assert res.similarity == pytest.approx(1.0, abs=1e-5) and res.matcher_score is None
    assert res.affinity.shape == (16, 16) and res.affinity.dtype == np.float32  # 4x4 patches of 8 px
    np.testing.assert_allclose(np.diag(res.affinity), 1.0, atol=1e-5)
    np.testing.assert_allclose(res.affinity, res.affinity.T, atol=1e-5)
    kinds = [type(t).__name__ for t in res.figure.data]
    assert kinds.count("Image") == 2 and kinds.count("Heatmap") == 3
    assert isinstance(res.figure, go.Figure) and "descriptor cosine 1.000" in res.figure.layout.title.text
    assert res.figure.layout.margin.t >= 70  # the title sits above the panels' titles, not on them


def test_matcher_score_is_a_symmetric_probability_and_paths_load(models, tmp_path):
    desc, match = models
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    _img(1).save(a)
    _img(2, (50, 50)).save(b)
    d, m = save_checkpoint(tmp_path / "d.pt", desc), save_checkpoint(tmp_path / "m.pt", match)
    ab = compare(a, b, descriptor=d, matcher=m)
    ba = compare(Image.open(b), Image.open(a), descriptor=desc, matcher=match)
    assert 0.0 < ab.matcher_score < 1.0 and ab.matcher_score == pytest.approx(ba.matcher_score, abs=1e-5)
    assert ab.similarity == pytest.approx(ba.similarity, abs=1e-5) and ab.similarity < 0.9999
    np.testing.assert_allclose(ab.affinity, ba.affinity.T, atol=1e-5)


def test_bad_inputs_are_named(models, tmp_path):
    desc, match = models
    with pytest.raises(ValueError, match="image_a must be a PIL image or an image path"):
        compare(np.zeros((4, 4, 3)), _img(1), descriptor=desc)
    with pytest.raises(ValueError, match="descriptor must be a checkpoint path or a Descriptor"):
        compare(_img(1), _img(2), descriptor=match)
    with pytest.raises(FileNotFoundError, match="image not found"):
        compare(tmp_path / "nope.png", _img(2), descriptor=desc)
    m = save_checkpoint(tmp_path / "m.pt", match)
    with pytest.raises(ValueError, match="holds a 'matcher' model, expected 'descriptor'"):
        compare(_img(1), _img(2), descriptor=m)


def test_icdlib_compare_gives_the_viz_result_and_import_icdlib_stays_light(models):
    import subprocess
    import sys

    import icdlib

    desc, match = models
    top, inner = icdlib.compare(_img(1), _img(2), descriptor=desc, matcher=match), \
        compare(_img(1), _img(2), descriptor=desc, matcher=match)
    assert top.similarity == inner.similarity and top.matcher_score == inner.matcher_score
    code = "import sys, icdlib; print(any(m.startswith(('torch', 'icdlib.viz')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
