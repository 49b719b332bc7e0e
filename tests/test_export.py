"""python -m icdlib.export: each exported file, read by its own runtime, gives the model's outputs."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from icdlib.checkpoints import save_checkpoint
from icdlib.export import EXPORT_FORMAT, main
from icdlib.models import build_descriptor, build_matcher

ATOL = 1e-5
DEPLOY_ATOL = 3e-3  # Pillow's resize in the docs' recipe against icdlib's (see the deploy test)
ort = pytest.importorskip("onnxruntime")  # the [export] extra


def _model(kind):
    if kind == "descriptor":
        model = build_descriptor("vit_tiny_cpu", img_size=32, depth=2, desc_dim=24, seed=0)
        with torch.no_grad():  # BN statistics other than the identity
            model.bn.running_mean.normal_(0, 0.1)
            model.bn.running_var.uniform_(0.5, 1.5)
    else:
        model = build_matcher("vit_tiny_cpu", img_size=32, encoder_depth=1, fusion_depth=1, seed=0)
    return model.eval()


def _inputs(kind, batch=3):  # another batch size than the export's example (2)
    g = torch.Generator().manual_seed(7)
    return tuple(torch.randn(batch, 3, 32, 32, generator=g) for _ in range(1 if kind == "descriptor" else 2))


@pytest.fixture(params=["descriptor", "matcher"])
def saved(request, tmp_path):
    model = _model(request.param)
    path = save_checkpoint(tmp_path / f"{request.param}.pt", model)
    with torch.no_grad():
        expected = model(*_inputs(request.param))
    return request.param, path, expected


def _export(path, fmt, out):
    assert main([str(path), "--format", fmt, "--out", str(out)]) == 0
    return out


def test_safetensors_export_rebuilds_the_same_model(saved, tmp_path):
    kind, path, expected = saved
    out = _export(path, "safetensors", tmp_path / "m.safetensors")
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == EXPORT_FORMAT and meta["kind"] == kind
    build = build_descriptor if kind == "descriptor" else build_matcher
    model = build(json.loads(meta["config"]), seed=1)
    model.load_state_dict(load_file(out))
    with torch.no_grad():
        got = model.eval()(*_inputs(kind))
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_torchscript_export_runs_with_torch_jit_load(saved, tmp_path):
    kind, path, expected = saved
    out = _export(path, "torchscript", tmp_path / "m.pt")
    files = {"icdlib.json": ""}
    module = torch.jit.load(str(out), _extra_files=files)
    assert json.loads(files["icdlib.json"])["kind"] == kind
    with torch.no_grad():
        got = module(*_inputs(kind))
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_onnx_export_runs_with_onnxruntime_at_any_batch(saved, tmp_path):
    kind, path, expected = saved
    out = _export(path, "onnx", tmp_path / "m.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == (["images"] if kind == "descriptor" else ["query", "reference"])
    assert session.get_modelmeta().custom_metadata_map["kind"] == kind
    got = session.run(None, {n: x.numpy() for n, x in zip(names, _inputs(kind))})[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=ATOL, rtol=0)
    one = session.run(None, {n: x[:1].numpy() for n, x in zip(names, _inputs(kind))})[0]
    np.testing.assert_allclose(one, expected[:1].numpy(), atol=ATOL, rtol=0)


def test_release_file_exports_too(tmp_path):
    from official_format import descriptor_forward, descriptor_state

    state = descriptor_state()
    torch.save({"model": state, "epoch": 1}, tmp_path / "release.pth.tar")
    out = _export(tmp_path / "release.pth.tar", "torchscript", tmp_path / "d.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = torch.jit.load(str(out))(x)
    torch.testing.assert_close(got, descriptor_forward(x, state, 1)[0], atol=1e-4, rtol=0)


def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys):
    assert main([str(tmp_path / "absent.pt"), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert "absent.pt" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main([str(tmp_path / "junk.pt"), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert "junk.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "junk.pt"), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert e.value.code == 2


def test_docs_deploy_recipe_embeds_and_searches_like_icdlib(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from PIL import Image

    from icdlib.models import preprocess

    page = (Path(__file__).parents[1] / "docs" / "search.md").read_text()
    section = page.split("## Deploy the descriptor", 1)[1]
    recipe = section.split("```python\n", 1)[1].split("```", 1)[0]
    model = _model("descriptor")
    _export(save_checkpoint(tmp_path / "d.pt", model), "onnx", tmp_path / "descriptor.onnx")
    rng = np.random.default_rng(0)
    for folder, n in (("references", 5), ("queries", 3)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((50 + 7 * i, 40), Image.BICUBIC).save(tmp_path / folder / f"{i}.jpg")
    for i in range(3):  # each query is a copy of reference i
        Image.open(tmp_path / "references" / f"{i}.jpg").save(tmp_path / "queries" / f"{i}.jpg", quality=95)
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(recipe, "docs/search.md", "exec"), ns)
    refs = sorted((tmp_path / "references").glob("*.jpg"))
    with torch.no_grad():
        expected = model(preprocess([Image.open(p) for p in refs], 32)).numpy()
    # the recipe resizes with Pillow, icdlib with torch's kernel of the same filter: inputs within
    # two grey levels (tests/test_pixels.py), unit descriptors within 6e-4 here
    np.testing.assert_allclose(ns["embed"](refs), expected, atol=DEPLOY_ATOL, rtol=0)
    assert [hit[0] for hit in ns["ids"]] == [0, 1, 2]
    assert "\n0.jpg 0.jpg " in capsys.readouterr().out
