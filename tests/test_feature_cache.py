"""Embeddings kept per model and image set (Benchmark.feature_cache): a second evaluation reads them
and scores exactly as embedding again; anything they depend on changes the key."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from icdlib.eval.engine import Benchmark, embedding_key
from icdlib.eval.retrieval import EvalConfig
from icdlib.models import DescriptorConfig, build_descriptor

SIZE = 32


def _bench(root: Path) -> list[tuple[str, Path]]:
    rng = np.random.default_rng(1)
    for d in ("reference_images", "dev_queries", "aux"):
        (root / d).mkdir(parents=True)
    for i in range(4):
        arr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "reference_images" / f"R{i:06d}.png")
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (44, 36, 3), dtype=np.uint8)).save(root / "dev_queries" / f"Q{i:05d}.png")
    (root / "dev_queries_groundtruth.csv").write_text("query_id,reference_id\nQ00000,R000001\nQ00001,\nQ00002,\n")
    aux = []
    for i in range(8):
        p = root / "aux" / f"T{i:06d}.png"
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(p)
        aux.append((p.stem, p))
    return aux


def _model(seed=0):
    return build_descriptor(DescriptorConfig(img_size=SIZE, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                                             desc_dim=16), seed=seed)


def test_a_second_evaluation_reads_the_kept_embeddings_and_scores_exactly_as_embedding(tmp_path, monkeypatch):
    cfg = EvalConfig(k=2, num_workers=0, batch_size=2, amp=False, pixel_cache_mb=0)
    aux = _bench(tmp_path)
    plain = Benchmark(tmp_path, "dev_queries", cfg, auxiliary=aux)
    cached = Benchmark(tmp_path, "dev_queries", cfg, auxiliary=aux)
    cached.feature_cache = tmp_path / "cache"
    model = _model()
    want = plain.descriptor(model, SIZE)["sn"]
    pd.testing.assert_frame_equal(cached.descriptor(model, SIZE)["sn"], want, check_exact=True)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3  # references, queries, auxiliary images
    embedded = []
    real = Benchmark.embed
    monkeypatch.setattr(Benchmark, "embed", lambda self, m, s, items, desc, views=None:
                        embedded.append(desc) or real(self, m, s, items, desc, views))
    again = Benchmark(tmp_path, "dev_queries", cfg, auxiliary=aux)
    again.feature_cache = tmp_path / "cache"
    pd.testing.assert_frame_equal(again.descriptor(model, SIZE)["sn"], want, check_exact=True)
    assert not embedded  # the references, the queries and the auxiliary set: read, not embedded
    for f in (tmp_path / "cache").glob("*.npy"):
        f.write_bytes(b"damaged")
    pd.testing.assert_frame_equal(again.descriptor(model, SIZE)["sn"], want, check_exact=True)
    assert sorted(d.split(": ")[1] for d in embedded) == ["auxiliary", "dev_queries", "references"]  # embedded again
    embedded.clear()  # another model: nothing of the first is read for it
    other = _model(seed=1)
    pd.testing.assert_frame_equal(again.descriptor(other, SIZE)["sn"], plain.descriptor(other, SIZE)["sn"],
                                  check_exact=True)
    assert len([d for d in embedded if d.startswith("descriptor: ")]) == 6  # 3 sets, embedded by both benchmarks


def test_the_key_names_the_precision_the_forwards_run_in_not_the_amp_flag(tmp_path, monkeypatch):
    from icdlib.eval import engine
    aux = _bench(tmp_path)
    model = _model()
    for bf16 in (False, True):  # a CPU without AMX (amp stays float32), and one with it
        monkeypatch.setattr(engine, "bf16_enabled", lambda device, bf16=bf16: bf16)
        on, off = (embedding_key(model, SIZE, EvalConfig(amp=amp), aux) for amp in (True, False))
        assert (on != off) is bf16


def test_the_key_changes_with_the_weights_the_side_the_settings_and_the_images(tmp_path):
    aux = _bench(tmp_path)
    cfg = EvalConfig(amp=False)
    model = _model()
    key = embedding_key(model, SIZE, cfg, aux)
    assert embedding_key(_model(), SIZE, cfg, aux) == key  # the same weights built again
    other = _model()
    with torch.no_grad():
        other.vit.blocks[0].attn.qkv.weight[0, 0] += 1e-3
    assert embedding_key(other, SIZE, cfg, aux) != key
    assert embedding_key(model, 48, cfg, aux) != key
    assert embedding_key(model, SIZE, cfg, aux[:-1]) != key
    st = os.stat(aux[0][1])
    os.utime(aux[0][1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # an image rewritten in place
    assert embedding_key(model, SIZE, cfg, aux) != key
