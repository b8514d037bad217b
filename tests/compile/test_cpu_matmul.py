"""The CPU reduction schedule (pipeline/compile/cpu_matmul.py) keeps every output element of a
fused function whose epilogue writes more than the reduction's loop covers: Gemma 4's K norm fused
with ``pad_kv_heads`` (head_dim 16 padded to the cache's 32) once left columns 16-31 unwritten."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.s_tir import dlight as dl
from tvm.script import tirx as T

from pipeline.compile.cpu_matmul import CPUMatmul

pytestmark = pytest.mark.compile

EPS = 1e-6


@T.prim_func(private=True, s_tir=True)
def norm_then_pad(x: T.Buffer((T.int64(3), T.int64(2), T.int64(16)), "float32"),
                  weight: T.Buffer((T.int64(16),), "float32"),
                  out: T.Buffer((T.int64(3), T.int64(2), T.int64(32)), "float32")):
    T.func_attr({"tirx.noalias": True})
    squares = T.alloc_buffer((T.int64(3), T.int64(2)), "float32")
    normed = T.alloc_buffer((T.int64(3), T.int64(2), T.int64(16)), "float32")
    for i, h, k in T.grid(T.int64(3), T.int64(2), T.int64(16)):
        with T.sblock("squares"):
            vi, vh, vk = T.axis.remap("SSR", [i, h, k])
            with T.init():
                squares[vi, vh] = T.float32(0)
            squares[vi, vh] = squares[vi, vh] + x[vi, vh, vk] * x[vi, vh, vk]
    for i, h, k in T.grid(T.int64(3), T.int64(2), T.int64(16)):
        with T.sblock("norm"):
            vi, vh, vk = T.axis.remap("SSS", [i, h, k])
            normed[vi, vh, vk] = x[vi, vh, vk] * T.rsqrt(squares[vi, vh] / T.float32(16) + T.float32(EPS)) * weight[vk]
    for i, h, k in T.grid(T.int64(3), T.int64(2), T.int64(32)):
        with T.sblock("pad"):
            vi, vh, vk = T.axis.remap("SSS", [i, h, k])
            out[vi, vh, vk] = T.if_then_else(vk < T.int64(16), normed[vi, vh, vk], T.float32(0))


def test_a_padding_epilogue_writes_its_whole_output():
    target = tvm.target.Target({"kind": "llvm"})
    with target:
        main = norm_then_pad.with_attr("global_symbol", "main")
        mod = dl.ApplyDefaultSchedule(CPUMatmul())(tvm.IRModule({"main": main}))
    assert mod["main"].attrs["tirx.is_scheduled"]  # the rule took the function
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((3, 2, 16)).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    out = tvm.runtime.tensor(np.full((3, 2, 32), np.nan, np.float32))
    tvm.compile(mod, target=target)["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(weight), out)
    got = out.numpy()
    want = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + EPS) * weight
    np.testing.assert_array_equal(got[..., 16:], 0)
    np.testing.assert_allclose(got[..., :16], want, rtol=0, atol=1e-6)
