"""The compiled Gemma 4 definition against transformers 5.24 on tiny random models (float32).

One model per released shape (``tests.helpers.gemma4.SHAPES``): E2B-like (per-layer embeddings, KV
sharing, double-wide MLP), E4B-like, 26B-A4B-like (mixture of experts, keys as values) and
31B-like (keys as values, fewer global KV heads).  Each is built end to end from a Hugging Face
directory and checked over a 16-token prefill (twice the sliding window) and 8 decode steps.
Tolerance: 1e-4 absolute on logits (float32 on both sides).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.runtime.engine import Engine
from tests.helpers.gemma4 import SHAPES, make_tiny_gemma4
from tests.helpers.packages import GEMMA4_MODEL, build_package

pytestmark = pytest.mark.compile

ATOL = 1e-4


@pytest.fixture(scope="module", params=sorted(SHAPES))
def built(request, tmp_path_factory):
    """``(engine, transformers model, shape)`` for one tiny shape, built q0f32 for the CPU."""
    root = tmp_path_factory.mktemp(f"gemma4-{request.param}")
    hf_model = make_tiny_gemma4(root / "hf", request.param)
    package = build_package(root, root / "hf", name=f"tiny-{request.param}", model=GEMMA4_MODEL)
    return Engine(package), hf_model, request.param


def reference_logits(hf_model, ids):
    with torch.no_grad():
        return hf_model(torch.tensor([ids], dtype=torch.long)).logits[0].float().numpy()


def test_prefill_16_then_8_decode_steps_match_transformers(built):
    engine, hf_model, _ = built
    ids = np.random.default_rng(1).integers(4, 96, size=16 + 8).tolist()
    ref = reference_logits(hf_model, ids)
    engine.reset()
    ours = [engine.prefill(ids[:16])] + [engine.decode(t) for t in ids[16:-1]]
    np.testing.assert_allclose(np.stack(ours), ref[15:-1], atol=ATOL, rtol=0)
    assert np.abs(ref).max() > 1.0  # logits of a size where 1e-4 is a real check


def test_verify_then_rollback_equals_plain_decoding(built):
    engine, hf_model, _ = built
    rng = np.random.default_rng(2)
    ids, draft = rng.integers(4, 96, size=20).tolist(), rng.integers(4, 96, size=5).tolist()
    engine.reset()
    engine.prefill(ids)
    np.testing.assert_allclose(engine.verify(draft), reference_logits(hf_model, ids + draft)[len(ids):],
                               atol=ATOL, rtol=0)
    engine.rollback(3)
    nxt = engine.decode(draft[2])
    np.testing.assert_allclose(nxt, reference_logits(hf_model, ids + draft[:3])[-1], atol=ATOL, rtol=0)


def test_each_feature_changes_the_result(built):
    """Guard against checks that cannot fail: switching the shape's feature off in transformers
    (same weights) moves the logits by far more than the tolerance."""
    engine, hf_model, shape = built
    cfg = hf_model.config.to_dict()
    if shape == "26b-a4b":
        cfg["top_k_experts"] = 1
    elif shape in ("e2b", "31b"):
        cfg["sliding_window"] = 512
    other = type(hf_model)(type(hf_model.config)(**cfg)).eval()
    other.load_state_dict(hf_model.state_dict())
    if shape == "e4b":  # per-layer embeddings off: their projection back to the stream zeroed
        with torch.no_grad():
            for layer in other.model.layers:
                layer.per_layer_projection.weight.zero_()
    ids = np.random.default_rng(3).integers(4, 96, size=16).tolist()
    engine.reset()
    ours = engine.prefill(ids)
    assert np.abs(ours - reference_logits(other, ids)[-1]).max() > 100 * ATOL
