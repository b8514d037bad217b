"""Group quantization: the numpy formulas against their definitions, and the compiled kernels
(GroupQuantLinear, GroupQuantEmbedding) against numpy on the same codes, for every format."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from tvm import relax
from tvm.relax.frontend import nn

from pipeline.quantization.formats import Q4G32_MIN, Q8G16, Q8G32, decode, encode, q4_symmetric
from pipeline.quantization.group_quant import GroupQuantEmbedding, GroupQuantLinear

Q4 = q4_symmetric("float32")
FORMATS = [Q4, Q8G32, Q8G16, Q4G32_MIN]


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.sampled_from([32, 64, 96])),
              elements=st.floats(-100, 100, width=32)), st.sampled_from(FORMATS))
def test_roundtrip_error_is_at_most_half_a_step(weight, fmt):
    stored = encode(weight, fmt)
    per = 1 if fmt.bits == 8 else 8
    assert stored["q_weight"].dtype == np.dtype(fmt.storage_dtype)
    assert stored["q_weight"].shape == (weight.shape[0], weight.shape[1] // per)
    assert stored["q_scale"].shape == (weight.shape[0], weight.shape[1] // fmt.group_size)
    back = decode(stored, fmt)
    step = np.repeat(stored["q_scale"], fmt.group_size, axis=1)
    assert np.all(np.abs(back - weight) <= step / 2 + 1e-5 * np.abs(weight) + 1e-30)


def test_codes_are_packed_low_nibble_first():
    weight = np.zeros((1, 32), np.float32)
    weight[0, :8] = [7, -7, 0, 1, 2, 3, -1, -2]  # max |w| = 7 -> scale 1, code = w + 7
    stored = encode(weight, Q4)
    assert stored["q_scale"][0, 0] == 1.0
    codes = [(int(stored["q_weight"][0, 0]) >> (4 * j)) & 0xF for j in range(8)]
    assert codes == [14, 0, 7, 8, 9, 10, 6, 5]


def test_q4f16_scale_is_stored_in_float16():
    stored = encode(np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32), q4_symmetric("float16"))
    assert stored["q_scale"].dtype == np.float16 and stored["q_weight"].dtype == np.uint32


def test_given_group_scales_keep_the_source_codes_exactly():
    """A source's own scale (and minimum) reproduce its values bit for bit: here values made as
    llama.cpp's Q6_K (d * sc * (q - 32), groups of 16) and Q4_K (d * sc * q - dmin * m) make them."""
    rng = np.random.default_rng(3)
    scale6 = (np.float32(0.01) * rng.integers(-128, 128, (5, 4))).astype(np.float32)
    codes6 = rng.integers(-32, 32, (5, 64)).astype(np.float32)
    values6 = codes6 * np.repeat(scale6, 16, axis=1)
    stored = encode(values6, Q8G16, scale6)
    np.testing.assert_array_equal(stored["q_weight"], codes6.astype(np.int8))
    np.testing.assert_array_equal(decode(stored, Q8G16), values6)
    scale4 = rng.uniform(0.001, 0.1, (5, 2)).astype(np.float32)
    minimum = rng.uniform(0, 0.5, (5, 2)).astype(np.float32)
    codes4 = rng.integers(0, 16, (5, 64)).astype(np.float32)
    values4 = codes4 * np.repeat(scale4, 32, axis=1) - np.repeat(minimum, 32, axis=1)
    stored = encode(values4, Q4G32_MIN, scale4, minimum)
    np.testing.assert_array_equal(decode(stored, Q4G32_MIN), values4)


class _Probe(nn.Module):
    def __init__(self, fmt):
        self.linear = GroupQuantLinear(64, 48, fmt, "float32")
        self.embed = GroupQuantEmbedding(40, 64, fmt, "float32")

    def forward(self, x, ids):
        return self.linear(x), self.embed(ids), self.embed.lm_head_forward(x)


@pytest.mark.compile
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_compiled_kernels_match_numpy(fmt):
    module = _Probe(fmt)
    spec = {"forward": {"x": nn.spec.Tensor([3, 64], "float32"), "ids": nn.spec.Tensor([5], "int32"),
                        "$": {"param_mode": "packed", "effect_mode": "none"}}}
    mod, named = module.export_tvm(spec=spec)
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    rng = np.random.default_rng(1)
    stored, deq = {}, {}
    for base, shape in (("linear", (48, 64)), ("embed", (40, 64))):
        parts = encode(rng.standard_normal(shape).astype(np.float32), fmt)
        deq[base] = decode(parts, fmt)
        stored.update({f"{base}.{suffix}": array for suffix, array in parts.items()})
    params = [tvm.runtime.tensor(stored[n], tvm.cpu()) for n, _ in named]
    x = rng.standard_normal((3, 64)).astype(np.float32)
    ids = np.array([0, 5, 39, 5, 1], np.int32)
    y, e, logits = vm["forward"](tvm.runtime.tensor(x), tvm.runtime.tensor(ids), params)
    np.testing.assert_allclose(y.numpy(), x @ deq["linear"].T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(e.numpy(), deq["embed"][ids])
    np.testing.assert_allclose(logits.numpy(), x @ deq["embed"].T, rtol=1e-5, atol=1e-5)
