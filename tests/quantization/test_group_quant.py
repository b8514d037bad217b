"""Group quantization: the numpy formula against its definition, and the compiled kernels
(GroupQuantLinear, GroupQuantEmbedding) against numpy on the same codes."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from tvm import relax
from tvm.relax.frontend import nn

from pipeline.quantization import get_scheme
from pipeline.quantization.group_quant import GroupQuantEmbedding, GroupQuantLinear, dequantize_array, quantize_array

Q4F32 = get_scheme("q4f32_1")


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.sampled_from([32, 64, 96])),
              elements=st.floats(-100, 100, width=32)))
def test_roundtrip_error_is_at_most_half_a_step(weight):
    q_weight, q_scale = quantize_array(weight, Q4F32)
    assert q_weight.dtype == np.uint32 and q_weight.shape == (weight.shape[0], weight.shape[1] // 8)
    assert q_scale.shape == (weight.shape[0], weight.shape[1] // 32)
    back = dequantize_array(q_weight, q_scale, Q4F32)
    step = np.repeat(q_scale, 32, axis=1)
    assert np.all(np.abs(back - weight) <= step / 2 + 1e-6 * np.abs(weight) + 1e-30)


def test_codes_are_packed_low_nibble_first():
    weight = np.zeros((1, 32), np.float32)
    weight[0, :8] = [7, -7, 0, 1, 2, 3, -1, -2]  # max |w| = 7 -> scale 1, code = w + 7
    q_weight, q_scale = quantize_array(weight, Q4F32)
    assert q_scale[0, 0] == 1.0
    codes = [(int(q_weight[0, 0]) >> (4 * j)) & 0xF for j in range(8)]
    assert codes == [14, 0, 7, 8, 9, 10, 6, 5]


def test_q4f16_scale_is_stored_in_float16():
    q_weight, q_scale = quantize_array(np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32),
                                       get_scheme("q4f16_1"))
    assert q_scale.dtype == np.float16 and q_weight.dtype == np.uint32


class _Probe(nn.Module):
    def __init__(self):
        self.linear = GroupQuantLinear(64, 48, Q4F32)
        self.embed = GroupQuantEmbedding(40, 64, Q4F32)

    def forward(self, x, ids):
        return self.linear(x), self.embed(ids), self.embed.lm_head_forward(x)


@pytest.fixture(scope="module")
def probe():
    module = _Probe()
    spec = {"forward": {"x": nn.spec.Tensor([3, 64], "float32"), "ids": nn.spec.Tensor([5], "int32"),
                        "$": {"param_mode": "packed", "effect_mode": "none"}}}
    mod, params = module.export_tvm(spec=spec)
    target = tvm.target.Target({"kind": "llvm"})
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    return vm, [name for name, _ in params]


@pytest.mark.compile
def test_compiled_kernels_match_numpy(probe):
    vm, names = probe
    rng = np.random.default_rng(1)
    w_lin = rng.standard_normal((48, 64)).astype(np.float32)
    w_emb = rng.standard_normal((40, 64)).astype(np.float32)
    stored = {}
    for base, w in (("linear", w_lin), ("embed", w_emb)):
        stored[f"{base}.q_weight"], stored[f"{base}.q_scale"] = quantize_array(w, Q4F32)
    params = [tvm.runtime.tensor(stored[n], tvm.cpu()) for n in names]
    x = rng.standard_normal((3, 64)).astype(np.float32)
    ids = np.array([0, 5, 39, 5, 1], np.int32)
    y, e, logits = vm["forward"](tvm.runtime.tensor(x), tvm.runtime.tensor(ids), params)
    deq_lin = dequantize_array(stored["linear.q_weight"], stored["linear.q_scale"], Q4F32)
    deq_emb = dequantize_array(stored["embed.q_weight"], stored["embed.q_scale"], Q4F32)
    np.testing.assert_allclose(y.numpy(), x @ deq_lin.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(e.numpy(), deq_emb[ids])
    np.testing.assert_allclose(logits.numpy(), x @ deq_emb.T, rtol=1e-5, atol=1e-5)
