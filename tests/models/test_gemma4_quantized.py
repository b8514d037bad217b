"""Group-quantized Gemma 4 (q4f32_1) against transformers running on the same dequantized weights.

The quantized graph (fused dequantize-matmul linears, quantized embeddings, expert weights
dequantized inside the gathered expert products) must compute exactly the float model of the
weights it stores: every weight that :func:`quantize_model` replaces is quantized and dequantized
with the numpy reference, loaded into the transformers model, and the logits compared.
Tolerance: 1e-4 absolute (float32 compute on both sides).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.models.registry import get_family
from pipeline.quantization import get_scheme, quantize_model
from pipeline.quantization.formats import decode, encode
from pipeline.runtime.engine import Engine
from tests.helpers.gemma4 import make_tiny_gemma4
from tests.helpers.packages import GEMMA4_MODEL, build_package

pytestmark = pytest.mark.compile

ATOL = 1e-4
SCHEME = get_scheme("q4f32_1")


@pytest.mark.parametrize("shape", ["e2b", "26b-a4b"])
def test_q4f32_logits_equal_transformers_on_dequantized_weights(shape, tmp_path):
    hf_model = make_tiny_gemma4(tmp_path / "hf", shape)
    engine = Engine(build_package(tmp_path, tmp_path / "hf", name=f"q4-{shape}", quantization=SCHEME.name,
                                  model=GEMMA4_MODEL))

    family = get_family("gemma4")
    ours = family.config_from_hf(hf_model.config.to_dict())
    _, quantized = quantize_model(family.model_cls(ours, SCHEME.model_dtype), SCHEME)
    assert "model.embed_tokens.weight" in quantized
    if shape == "e2b":  # the PLE projection is a linear layer like the others
        assert "model.per_layer_model_projection.weight" in quantized
    else:  # 3-D expert weights, each expert's rows quantized on their own
        experts = {"model.layers.0.experts.gate_up_proj.weight", "model.layers.0.experts.down_proj.weight"}
        assert experts <= set(quantized)
    state = hf_model.state_dict()
    with torch.no_grad():
        for ours in quantized:
            name = ours if ours in state else ours[:-len(".weight")]  # transformers' expert tensors
            weight = state[name].numpy()
            state[name].copy_(torch.from_numpy(decode(encode(weight, quantized[ours]), quantized[ours])))
        hf_model.lm_head.weight.copy_(state["model.embed_tokens.weight"])

    ids = np.random.default_rng(6).integers(4, 96, size=20).tolist()
    with torch.no_grad():
        ref = hf_model(torch.tensor([ids])).logits[0].numpy()
    engine.reset()
    ours_logits = [engine.prefill(ids[:12])] + [engine.decode(t) for t in ids[12:-1]]
    np.testing.assert_allclose(np.stack(ours_logits), ref[11:-1], atol=ATOL, rtol=0)
