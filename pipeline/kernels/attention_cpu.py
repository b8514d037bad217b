"""The CPU side of the windowed attention kernels: one task (query row, head) per iteration of a
``T.parallel`` loop, keys one after the other with the online softmax of FlashAttention
(Dao et al. 2022, arXiv 2205.14135, Algorithm 1).
"""

from __future__ import annotations

from tvm.script import tirx as T

from .attention_common import EMPTY_LSE, log2_scale, log2_sum_exp, normalized


@T.macro
def attend_cpu(shape, kv, q, output, lse, sm_scale, row, h, first, last):
    """Write ``output[row, h]`` and ``lse[row, h]`` for query ``q[row, h]`` over keys
    ``first .. last - 1`` of ``kv`` (a :class:`~.attention_common.RaggedKV` or
    :class:`~.attention_common.PagedKV`); ``shape`` is a
    :class:`~pipeline.kernels.attention.KernelShape`."""
    acc = T.sblock_alloc_buffer((shape.d,), "float32")
    state = T.sblock_alloc_buffer((4,), "float32")  # running max, denominator, score, rescale
    state[0] = T.float32(EMPTY_LSE)
    state[1] = T.float32(0)
    for x in T.serial(shape.d):
        acc[x] = T.float32(0)
    for j in T.serial(first, T.max(first, last)):
        state[2] = T.float32(0)
        for x in T.serial(shape.d):
            state[2] += T.Cast("float32", q[row, h, x]) * kv.key(j, x)
        state[2] = state[2] * log2_scale(sm_scale)
        state[3] = T.exp2(state[0] - T.max(state[0], state[2]))
        state[0] = T.max(state[0], state[2])
        state[2] = T.exp2(state[2] - state[0])
        state[1] = state[1] * state[3] + state[2]
        for x in T.serial(shape.d):
            acc[x] = acc[x] * state[3] + state[2] * kv.value(j, x)
    for x in T.serial(shape.d):
        output[row, h, x] = T.Cast(shape.dtype, normalized(acc[x], state[1]))
    lse[row, h] = log2_sum_exp(state[0], state[1])
