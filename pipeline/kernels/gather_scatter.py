"""Row gather and scatter kernels: MLC LLM's speculative-decoding helpers.

MLC's engine moves probability rows and hidden-state rows between its batch buffers with
``gather_probs`` / ``scatter_probs`` (TIR functions, float32) and ``gather_hidden_states`` /
``scatter_hidden_states`` (Relax functions, the model dtype), all ``(src, indices, dst)`` with
``dst`` written in place and returned by the Relax ones (read from mlc-llm
``python/mlc_llm/compiler_pass/attach_spec_decode_aux_funcs.py`` and ``cpp/serve/model.cc``):

- gather: ``src (m, n)``, ``indices (b,)`` int32, ``dst (b, n)``: ``dst[i] = src[indices[i]]``;
- scatter: ``src (b, n)``, ``indices (b,)`` int32, ``dst (m, n)``: ``dst[indices[i]] = src[i]``.

The kernels take any row counts (``b`` is the length of ``indices``).  On a GPU one thread per
element of the ``b x n`` moved (blocks of :func:`~.logit_processor.threads_per_block`); on the
CPU serial loops.
"""

from __future__ import annotations

from tvm import relax, tirx
from tvm.script import tirx as T
from tvm.target import Target

from ..presets import is_gpu_kind
from .logit_processor import threads_per_block


def row_copy(kind: str, dtype: str, target: Target, global_symbol: str | None = None) -> tirx.PrimFunc:
    """The gather (``kind="gather"``) or scatter (``"scatter"``) kernel of ``dtype`` rows for
    ``target`` (module docstring); ``global_symbol``: the name the library exports it under, or
    None for a kernel called only from Relax.

    Raises:
        ValueError: ``kind`` is neither.
    """
    if kind not in ("gather", "scatter"):
        raise ValueError(f"kind {kind!r}, expected 'gather' or 'scatter'")
    gather = kind == "gather"
    gpu, tx = is_gpu_kind(target.kind.name), threads_per_block(target)
    attrs = {"tirx.noalias": True, "tirx.is_scheduled": True}

    @T.macro
    def move(src, indices, dst, n, flat):
        if gather:
            dst[flat // n, flat % n] = src[indices[flat // n], flat % n]
        else:
            dst[indices[flat // n], flat % n] = src[flat // n, flat % n]

    @T.prim_func(private=True, s_tir=True)
    def gpu_func(var_src: T.handle, var_indices: T.handle, var_dst: T.handle):
        T.func_attr(attrs)
        b, src_rows, dst_rows, n = T.int32(), T.int32(), T.int32(), T.int32()
        src = T.match_buffer(var_src, (src_rows, n), dtype)
        indices = T.match_buffer(var_indices, (b,), "int32")
        dst = T.match_buffer(var_dst, (dst_rows, n), dtype)
        for bx in T.thread_binding((b * n + tx - 1) // tx, thread="blockIdx.x"):
            for t in T.thread_binding(tx, thread="threadIdx.x"):
                with T.sblock("move"):
                    if bx * tx + t < b * n:
                        move(src, indices, dst, n, bx * tx + t)

    @T.prim_func(private=True, s_tir=True)
    def cpu_func(var_src: T.handle, var_indices: T.handle, var_dst: T.handle):
        T.func_attr(attrs)
        b, src_rows, dst_rows, n = T.int32(), T.int32(), T.int32(), T.int32()
        src = T.match_buffer(var_src, (src_rows, n), dtype)
        indices = T.match_buffer(var_indices, (b,), "int32")
        dst = T.match_buffer(var_dst, (dst_rows, n), dtype)
        for flat in T.serial(b * n):
            with T.sblock("move"):
                move(src, indices, dst, n, flat)

    func = gpu_func if gpu else cpu_func
    return func.with_attr("global_symbol", global_symbol) if global_symbol else func


def attach_hidden_state_moves(bb: relax.BlockBuilder, dtype: str, target: Target) -> list[str]:
    """Add the Relax functions ``gather_hidden_states`` and ``scatter_hidden_states`` over
    ``dtype`` rows (module docstring) to the module ``bb`` builds; returns their names."""
    names = []
    for kind in ("gather", "scatter"):
        b, m, n = (tirx.Var(name, "int64") for name in ("batch_size", "m", "n"))
        src = relax.Var("src", relax.TensorType([m, n] if kind == "gather" else [b, n], dtype))
        indices = relax.Var("indices", relax.TensorType([b], "int32"))
        dst = relax.Var("dst", relax.TensorType([b, n] if kind == "gather" else [m, n], dtype))
        name = f"{kind}_hidden_states"
        with bb.function(name, [src, indices, dst]):
            with bb.dataflow():
                kernel = bb.add_func(row_copy(kind, dtype, target), f"{kind}_rows_{dtype}")
                out = bb.emit_output(relax.op.call_tir_inplace(kernel, [src, indices, dst], 2, dst.ty))
            bb.emit_func_output(out)
        names.append(name)
    return names
