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


def _dequantize_matmul_gelu(rows, n: int, k: int):
    """A q8g32 dequantize-matmul over ``(1, rows, k)`` with a tanh epilogue, as a PrimFunc."""
    from tvm import te

    from pipeline.quantization.formats import Q8G32, weight_expr

    x = te.placeholder((1, rows, k), "float32", name="x")
    shapes = Q8G32.shapes((n,), k)
    stored = [te.placeholder(shapes[s][0], shapes[s][1], name=s) for s in Q8G32.tensors]
    weight = te.compute((n, k), lambda i, j: weight_expr(stored, (i,), j, Q8G32, "float32"), name="dequantize")
    r = te.reduce_axis((0, k), name="k")
    y = te.compute((1, rows, n), lambda b, i, j: te.sum(x[b, i, r] * weight[j, r], axis=r), name="matmul")
    out = te.compute((1, rows, n), lambda b, i, j: te.tanh(y[b, i, j]), name="epilogue")
    return te.create_prim_func([x, *stored, out])


@pytest.mark.parametrize("rows", [1, 4, 13, 128])
def test_many_row_schedule_matches_numpy(rows):
    """The many-row (prefill) schedule pads a symbolic row count to its tile, stages the
    dequantized weights per task and computes the epilogue with each task's columns: every output
    equals numpy's within float32 summation-order error, whatever the row count."""
    from tvm import te

    from pipeline.compile.cpu_matmul import MANY_ROWS_ATTR
    from pipeline.quantization.formats import Q8G32, decode, encode

    n, k = 64, 96
    func = _dequantize_matmul_gelu(te.var("m", "int64"), n, k).with_attr(MANY_ROWS_ATTR, True)
    target = tvm.target.Target({"kind": "llvm"})
    with target:
        mod = dl.ApplyDefaultSchedule(CPUMatmul())(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}))
    script = mod.script()
    assert "_pad_rf" in script and "T.unroll" in script  # the register-tiled schedule, not the few-row one
    rng = np.random.default_rng(1)
    stored = encode(rng.standard_normal((n, k)).astype(np.float32), Q8G32)
    x = rng.standard_normal((1, rows, k)).astype(np.float32)
    out = tvm.runtime.tensor(np.full((1, rows, n), np.nan, np.float32))
    lib = tvm.compile(mod, target=target)
    lib["main"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(stored[s]) for s in Q8G32.tensors), out)
    want = np.tanh(x.astype(np.float64) @ decode(stored, Q8G32).astype(np.float64).T)
    np.testing.assert_allclose(out.numpy(), want, rtol=0, atol=2e-5)


def test_prefill_gets_its_own_marked_products():
    """A product that both ``prefill`` and ``batch_verify`` call is copied for ``prefill`` and
    marked there; ``batch_verify`` keeps the unmarked original; a function that is no product
    (no reduction) is left alone."""
    from tvm import relax, te

    from pipeline.compile.cpu_matmul import MANY_ROWS_ATTR, mark_many_row_kernels

    n, k = 32, 64
    bb = relax.BlockBuilder()
    product = _dequantize_matmul_gelu(te.var("m", "int64"), n, k)
    for name in ("prefill", "batch_verify"):
        rows = tvm.tirx.Var("seq", "int64")
        x = relax.Var("x", relax.TensorType((1, rows, k), "float32"))
        w = relax.Var("w", relax.TensorType((n, k), "int8"))
        s = relax.Var("s", relax.TensorType((n, k // 32), "float32"))
        with bb.function(name, [x, w, s]):
            gv = bb.add_func(product, "dequantize_matmul")
            out = bb.emit(relax.call_tir(gv, [x, w, s], relax.TensorType((1, rows, n), "float32")))
            bb.emit_func_output(out)
    mod = mark_many_row_kernels(bb.get())
    names = {gv.name_hint: gv for gv in mod.functions}
    assert set(names) == {"prefill", "batch_verify", "dequantize_matmul", "dequantize_matmul_many_rows"}
    assert mod[names["dequantize_matmul_many_rows"]].attrs[MANY_ROWS_ATTR]
    assert MANY_ROWS_ATTR not in (mod[names["dequantize_matmul"]].attrs or {})
    assert "dequantize_matmul_many_rows" in mod[names["prefill"]].script()
    assert "dequantize_matmul_many_rows" not in mod[names["batch_verify"]].script()
