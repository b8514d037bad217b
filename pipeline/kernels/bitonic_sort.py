"""A descending argsort of probability rows as a bitonic sorting network of small GPU kernels.

Why: TVM 0.26's GPU argsort (``topi.gpu.argsort``) emits a 161 KB WGSL shader for WebGPU, which
Chromium's SwiftShader did not finish compiling in 10 minutes (the device was lost).  Here every
step of Batcher's bitonic network (Batcher 1968, "Sorting networks and their applications") is one
launch of the same small kernel, one thread per element: for a row padded to ``width = 2**m``
entries there are ``m (m + 1) / 2`` steps (171 for Gemma's 262,144-entry vocabulary).

Order: larger probability first, the lower token id first among equal ones (a total order, so
the result is deterministic).  Rows are padded with the lowest float32 after the real entries.
``width`` is fixed when the library is built (the model's vocabulary, rounded up to a power of
two); a row longer than that is refused by the padding kernel's host-side check.
"""

from __future__ import annotations

from tvm import relax, tirx
from tvm.script import tirx as T


def sort_width(vocab_size: int) -> int:
    """The padded row length for ``vocab_size`` entries: the next power of two (at least 2)."""
    return max(2, 1 << (max(vocab_size, 1) - 1).bit_length())


def _kernels(width: int, tx: int):
    @T.prim_func(private=True, s_tir=True)
    def pad(var_probs: T.handle, var_keys: T.handle, var_ids: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch, vocab = T.int32(), T.int32()
        probs = T.match_buffer(var_probs, (batch, vocab), "float32")
        keys = T.match_buffer(var_keys, (batch, width), "float32")
        ids = T.match_buffer(var_ids, (batch, width), "int32")
        assert vocab <= width, "argsort_probs: the row is longer than the sort width the library was built for"
        for bx in T.thread_binding((batch * width + tx - 1) // tx, thread="blockIdx.x"):
            for t in T.thread_binding(tx, thread="threadIdx.x"):
                with T.sblock("pad"):
                    if bx * tx + t < batch * width:
                        if (bx * tx + t) % width < vocab:
                            keys[(bx * tx + t) // width, (bx * tx + t) % width] = probs[
                                (bx * tx + t) // width, (bx * tx + t) % width]
                        else:
                            keys[(bx * tx + t) // width, (bx * tx + t) % width] = T.min_value("float32")
                        ids[(bx * tx + t) // width, (bx * tx + t) % width] = (bx * tx + t) % width

    @T.prim_func(private=True, s_tir=True)
    def step(var_keys: T.handle, var_ids: T.handle, k: T.int32, j: T.int32, var_keys_out: T.handle,
             var_ids_out: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch = T.int32()
        keys = T.match_buffer(var_keys, (batch, width), "float32")
        ids = T.match_buffer(var_ids, (batch, width), "int32")
        keys_out = T.match_buffer(var_keys_out, (batch, width), "float32")
        ids_out = T.match_buffer(var_ids_out, (batch, width), "int32")
        for bx in T.thread_binding((batch * width + tx - 1) // tx, thread="blockIdx.x"):
            for t in T.thread_binding(tx, thread="threadIdx.x"):
                with T.sblock("step"):
                    if bx * tx + t < batch * width:
                        row: T.let[T.int32] = (bx * tx + t) // width
                        i: T.let[T.int32] = (bx * tx + t) % width
                        other: T.let[T.int32] = T.bitwise_xor(i, j)
                        # mine goes first: larger key, or equal key and lower id
                        first: T.let[T.bool] = T.Or(keys[row, i] > keys[row, other], T.And(
                            keys[row, i] == keys[row, other], ids[row, i] < ids[row, other]))
                        # this position takes the first of the pair when it is the lower one of a
                        # descending block or the upper one of an ascending block
                        take_first: T.let[T.bool] = (i < other) == (T.bitwise_and(T.min(i, other), k) == 0)
                        if first == take_first:
                            keys_out[row, i] = keys[row, i]
                            ids_out[row, i] = ids[row, i]
                        else:
                            keys_out[row, i] = keys[row, other]
                            ids_out[row, i] = ids[row, other]

    @T.prim_func(private=True, s_tir=True)
    def take(var_keys: T.handle, var_ids: T.handle, var_values: T.handle, var_indices: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch, vocab = T.int32(), T.int32()
        keys = T.match_buffer(var_keys, (batch, width), "float32")
        ids = T.match_buffer(var_ids, (batch, width), "int32")
        values = T.match_buffer(var_values, (batch, vocab), "float32")
        indices = T.match_buffer(var_indices, (batch, vocab), "int32")
        for bx in T.thread_binding((batch * vocab + tx - 1) // tx, thread="blockIdx.x"):
            for t in T.thread_binding(tx, thread="threadIdx.x"):
                with T.sblock("take"):
                    if bx * tx + t < batch * vocab:
                        values[(bx * tx + t) // vocab, (bx * tx + t) % vocab] = keys[
                            (bx * tx + t) // vocab, (bx * tx + t) % vocab]
                        indices[(bx * tx + t) // vocab, (bx * tx + t) % vocab] = ids[
                            (bx * tx + t) // vocab, (bx * tx + t) % vocab]

    return pad, step, take


def emit_bitonic_argsort(bb: relax.BlockBuilder, probs: relax.Expr, batch, vocab, width: int,
                         tx: int) -> tuple[relax.Expr, relax.Expr]:
    """Emit, inside a dataflow block of ``bb``, the sort of ``probs`` ``(batch, vocab)`` float32
    rows (``vocab <= width``, a power of two): returns ``(sorted values, token ids int32)``, both
    ``(batch, vocab)``; ``tx`` threads per block.

    Raises:
        ValueError: ``width`` is not a power of two of at least 2.
    """
    if width < 2 or width & (width - 1):
        raise ValueError(f"width must be a power of two >= 2, got {width}")
    pad, step, take = _kernels(width, tx)
    padded = [relax.TensorType([batch, width], "float32"), relax.TensorType([batch, width], "int32")]
    state = bb.emit(relax.call_tir(bb.add_func(pad, f"bitonic_pad_{width}"), [probs], padded))
    step_gv = bb.add_func(step, f"bitonic_step_{width}")
    k = 2
    while k <= width:
        j = k // 2
        while j >= 1:
            keys, ids = bb.emit(relax.TupleGetItem(state, 0)), bb.emit(relax.TupleGetItem(state, 1))
            state = bb.emit(relax.call_tir(step_gv, [keys, ids, tirx.IntImm("int32", k), tirx.IntImm("int32", j)],
                                           padded))
            j //= 2
        k *= 2
    out = [relax.TensorType([batch, vocab], "float32"), relax.TensorType([batch, vocab], "int32")]
    result = bb.emit(relax.call_tir(bb.add_func(take, f"bitonic_take_{width}"),
                                    [bb.emit(relax.TupleGetItem(state, 0)), bb.emit(relax.TupleGetItem(state, 1))],
                                    out))
    return bb.emit(relax.TupleGetItem(result, 0)), bb.emit(relax.TupleGetItem(result, 1))
