"""The CPU side of the windowed attention kernels: one task (query row, head) per iteration of a
``T.parallel`` loop, keys one after the other with the online softmax of FlashAttention
(Dao et al. 2022, arXiv 2205.14135, Algorithm 1).  The dot product ``q . k`` runs in ``LANES``
SIMD partial sums over ``head_dim`` and the value update is vectorized (a serial scalar loop
over ``head_dim`` 256 cost 4x the whole decode step's matrix products on a 4-token verify).
The partial sums are ``CHAINS`` vectors, independent FMA chains folded into one after the dot
product (with one chain each FMA waited on the one before: a 128-token prefill's attention
took 127 instead of 89 ms; docs/performance.md).
"""

from __future__ import annotations

from tvm.script import tirx as T

from .attention_common import EMPTY_LSE, log2_scale, log2_sum_exp, normalized

LANES = 8  # float32 lanes of one AVX2 vector; head dims that are not multiples run one lane
CHAINS = 4  # vectors of partial sums of q . k (independent FMA chains) where head_dim allows
SERIAL_DECODE_KEYS = 1024  # decode of one sequence with at most this many cached keys runs serially


def _lanes(d: int) -> int:
    return LANES if d % LANES == 0 else 1


def _chains(d: int) -> int:
    return CHAINS if d % (LANES * CHAINS) == 0 else 1


@T.macro
def attend_cpu(shape, kv, q, output, lse, sm_scale, row, h, first, last):
    """Write ``output[row, h]`` and ``lse[row, h]`` for query ``q[row, h]`` over keys
    ``first .. last - 1`` of ``kv`` (a :class:`~.attention_common.RaggedKV` or
    :class:`~.attention_common.PagedKV`); ``shape`` is a
    :class:`~pipeline.kernels.attention.KernelShape`."""
    acc = T.sblock_alloc_buffer((shape.d,), "float32")
    part = T.sblock_alloc_buffer((_lanes(shape.d) * _chains(shape.d),), "float32")  # partial sums of q . k
    state = T.sblock_alloc_buffer((4,), "float32")  # running max, denominator, score, rescale
    state[0] = T.float32(EMPTY_LSE)
    state[1] = T.float32(0)
    for x in T.serial(shape.d):
        acc[x] = T.float32(0)
    for j in T.serial(first, T.max(first, last)):
        for xi in T.vectorized(_lanes(shape.d) * _chains(shape.d)):
            part[xi] = T.float32(0)
        for xo in T.serial(shape.d // (_lanes(shape.d) * _chains(shape.d))):
            for xi in T.vectorized(_lanes(shape.d) * _chains(shape.d)):
                part[xi] += (T.Cast("float32", q[row, h, xo * _lanes(shape.d) * _chains(shape.d) + xi])
                             * kv.key(j, xo * _lanes(shape.d) * _chains(shape.d) + xi))
        for c in T.serial(1, _chains(shape.d)):  # the chains folded into the first
            for xi in T.vectorized(_lanes(shape.d)):
                part[xi] += part[c * _lanes(shape.d) + xi]
        state[2] = T.float32(0)
        for xi in T.serial(_lanes(shape.d)):
            state[2] += part[xi]
        state[2] = state[2] * log2_scale(sm_scale)
        state[3] = T.exp2(state[0] - T.max(state[0], state[2]))
        state[0] = T.max(state[0], state[2])
        state[2] = T.exp2(state[2] - state[0])
        state[1] = state[1] * state[3] + state[2]
        for xo in T.serial(shape.d // _lanes(shape.d)):
            for xi in T.vectorized(_lanes(shape.d)):
                acc[xo * _lanes(shape.d) + xi] = (acc[xo * _lanes(shape.d) + xi] * state[3]
                                                  + state[2] * kv.value(j, xo * _lanes(shape.d) + xi))
    for x in T.serial(shape.d):
        output[row, h, x] = T.Cast(shape.dtype, normalized(acc[x], state[1]))
    lse[row, h] = log2_sum_exp(state[0], state[1])
