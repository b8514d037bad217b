"""Inclusive running sums along the rows of a float32 matrix as a scan network of small GPU kernels
(WebGPU's; :func:`emit_running_sum`).

Why: TVM 0.26's GPU scan (``topi.gpu.cumsum``) returned its input unscanned in our WebGPU builds
(Dawn and SwiftShader alike), and its inclusive variant does not build for WebGPU at all, so
``sample_with_top_p`` drew from wrong running sums there.  Here every step is one launch of the
same kernel, one thread per entry, no shared memory and no barrier: after the step with distance
``d`` (1, 2, 4, ...), entry ``i`` holds the sum of entries ``max(0, i - 2d + 1) .. i`` (Hillis and
Steele 1986, "Data parallel algorithms"); ``ceil(log2(width))`` steps cover rows of up to
``width`` entries (18 for Gemma's 262,144-entry vocabulary).  The additions come in another order
than a serial loop's, so sums differ from a serial float32 sum by rounding only.
"""

from __future__ import annotations

from tvm import relax, tirx
from tvm.script import tirx as T


def _step(width: int, tx: int):
    @T.prim_func(private=True, s_tir=True)
    def step(var_x: T.handle, d: T.int32, var_out: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch, vocab = T.int32(), T.int32()
        x = T.match_buffer(var_x, (batch, vocab), "float32")
        out = T.match_buffer(var_out, (batch, vocab), "float32")
        assert vocab <= width, "running sum: the row is longer than the width the library was built for"
        for bx in T.thread_binding((batch * vocab + tx - 1) // tx, thread="blockIdx.x"):
            for t in T.thread_binding(tx, thread="threadIdx.x"):
                with T.sblock("running_sum_step"):
                    if bx * tx + t < batch * vocab:
                        row: T.let[T.int32] = (bx * tx + t) // vocab
                        i: T.let[T.int32] = (bx * tx + t) % vocab
                        if i >= d:
                            out[row, i] = x[row, i] + x[row, i - d]
                        else:
                            out[row, i] = x[row, i]

    return step


def emit_running_sum(bb: relax.BlockBuilder, x: relax.Expr, batch, vocab, width: int, tx: int) -> relax.Expr:
    """Emit, inside a dataflow block of ``bb``, the inclusive running sums along the rows of ``x``
    ``(batch, vocab)`` float32 (``vocab <= width``, checked by the kernel on the host): returns a
    ``(batch, vocab)`` float32 expression; ``tx`` threads per block.

    Raises:
        ValueError: ``width`` < 1.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    step = bb.add_func(_step(width, tx), f"running_sum_step_{width}")
    shape = relax.TensorType([batch, vocab], "float32")
    d = 1
    while d < width:
        x = bb.emit(relax.call_tir(step, [x, tirx.IntImm("int32", d)], shape))
        d *= 2
    return x
