"""The GPU side of the windowed attention kernels: generic GPU TIR (thread bindings, shared
memory, barriers), with no vendor intrinsics, so one kernel serves CUDA, Metal, WebGPU and OpenCL.

Work split: one thread block per (query row, query head) with ``shape.threads`` threads.  Keys go
in tiles of ``shape.threads`` keys; per tile

1. scores: thread ``t`` computes ``q . k`` for key ``tile + t`` (the query, pre-scaled to log2
   units, sits in shared memory, read by all threads at the same address);
2. the tile's maximum and the sum of its ``exp2(score - max)`` are tree reductions in shared
   memory (``log2(threads)`` steps each), and the running maximum and denominator are updated
   as in FlashAttention's online softmax (Dao et al. 2022, arXiv 2205.14135, Algorithm 1);
3. ``P . V``: thread ``t`` owns output dimensions ``t, t + threads, ...`` and adds the tile's
   values weighted by their probabilities (neighbouring threads read neighbouring dimensions).

Barriers sit only where every thread of the block reaches them (the tile count is the same for
the whole block).

Flash-decoding (``paged_decode(..., split=True)``): the same loop over a share of a query's keys
in each of several blocks, into partial states that :func:`merge_splits` combines by their lse.
"""

from __future__ import annotations

from tvm.script import tirx as T

from .attention_common import EMPTY_LSE, log2_scale, log2_sum_exp, normalized

MAX_THREADS = 128  # threads per block, capped by the target's max_num_threads


def block_threads(max_num_threads: int) -> int:
    """Threads per block for a target allowing ``max_num_threads``: the largest power of two not
    above ``min(MAX_THREADS, max_num_threads)`` (the reductions halve the active threads).

    Raises:
        ValueError: ``max_num_threads`` below 1.
    """
    if max_num_threads < 1:
        raise ValueError(f"max_num_threads must be positive, got {max_num_threads}")
    return 1 << (min(MAX_THREADS, max_num_threads).bit_length() - 1)


def _add(a, b):
    return a + b


@T.macro
def _block_reduce(shape, tx, buffer, combine):
    """Fold ``buffer[0 .. threads - 1]`` into ``buffer[0]`` with ``combine``; ends on a barrier."""
    for level in T.unroll(shape.threads.bit_length() - 1):
        if tx < (shape.threads >> (level + 1)):
            buffer[tx] = combine(buffer[tx], buffer[tx + (shape.threads >> (level + 1))])
        T.tvm_storage_sync("shared")


@T.macro
def attend_gpu(shape, kv, q, output, lse, sm_scale, tx, row, out_row, h, first, last):
    """:func:`~.attention_cpu.attend_cpu` computed by the ``shape.threads`` threads of a
    block; ``tx`` is the thread index; the result goes to row ``out_row`` of ``output`` and ``lse``
    (``row``, the query's, except for a split of flash-decoding)."""
    query = T.sblock_alloc_buffer((shape.d,), "float32", scope="shared")
    prob = T.sblock_alloc_buffer((shape.threads,), "float32", scope="shared")
    scratch = T.sblock_alloc_buffer((shape.threads,), "float32", scope="shared")
    acc = T.sblock_alloc_buffer((shape.slices,), "float32", scope="local")
    state = T.sblock_alloc_buffer((4,), "float32", scope="local")  # running max, denominator, score, new max
    for i in T.serial(shape.slices):
        acc[i] = T.float32(0)
        if tx + i * shape.threads < shape.d:
            query[tx + i * shape.threads] = T.Cast("float32", q[row, h, tx + i * shape.threads]) * log2_scale(sm_scale)
    state[0] = T.float32(EMPTY_LSE)
    state[1] = T.float32(0)
    T.tvm_storage_sync("shared")
    for tile in T.serial((T.max(last - first, 0) + shape.threads - 1) // shape.threads):
        start: T.let[T.int32] = first + tile * shape.threads  # the tile's first key
        state[2] = T.float32(EMPTY_LSE)
        if start + tx < last:
            state[2] = T.float32(0)
            for x in T.serial(shape.d):
                state[2] += query[x] * kv.key(start + tx, x)
        scratch[tx] = state[2]
        T.tvm_storage_sync("shared")
        _block_reduce(shape, tx, scratch, T.max)
        state[3] = T.max(state[0], scratch[0])
        T.tvm_storage_sync("shared")
        prob[tx] = T.exp2(state[2] - state[3])  # 0 for a key past the range
        scratch[tx] = prob[tx]
        T.tvm_storage_sync("shared")
        _block_reduce(shape, tx, scratch, _add)
        state[2] = T.exp2(state[0] - state[3])  # rescale of the keys before this tile
        state[1] = state[1] * state[2] + scratch[0]
        state[0] = state[3]
        for i in T.serial(shape.slices):
            acc[i] = acc[i] * state[2]
        for u in T.serial(T.min(shape.threads, last - start)):
            for i in T.serial(shape.slices):
                if tx + i * shape.threads < shape.d:
                    acc[i] = acc[i] + prob[u] * kv.value(start + u, tx + i * shape.threads)
        T.tvm_storage_sync("shared")
    for i in T.serial(shape.slices):
        if tx + i * shape.threads < shape.d:
            output[out_row, h, tx + i * shape.threads] = T.Cast(shape.dtype, normalized(acc[i], state[1]))
    if tx == 0:
        lse[out_row, h] = log2_sum_exp(state[0], state[1])


@T.macro
def merge_splits(shape, splits, parts, part_out, part_lse, output, lse, tx, b, h):
    """Flash-decoding's second kernel, for query ``b`` and head ``h``: the ``splits`` partial states
    of rows ``s * parts + b`` of ``part_out`` / ``part_lse`` (each normalized over its own keys)
    merged by their lse into ``output[b, h]`` and ``lse[b, h]``; a split that saw no key
    (lse :data:`~.attention_common.EMPTY_LSE`) weighs 0, and none seeing a key gives 0 and that lse."""
    acc = T.sblock_alloc_buffer((shape.slices,), "float32", scope="local")
    state = T.sblock_alloc_buffer((3,), "float32", scope="local")  # maximum lse, sum of weights, weight
    state[0] = T.float32(EMPTY_LSE)
    for s in T.serial(splits):
        state[0] = T.max(state[0], part_lse[s * parts + b, h])
    state[1] = T.float32(0)
    for i in T.serial(shape.slices):
        acc[i] = T.float32(0)
    for s in T.serial(splits):
        state[2] = T.if_then_else(part_lse[s * parts + b, h] > T.float32(EMPTY_LSE / 2),
                                  T.exp2(part_lse[s * parts + b, h] - state[0]), T.float32(0))
        state[1] = state[1] + state[2]
        for i in T.serial(shape.slices):
            if tx + i * shape.threads < shape.d:
                acc[i] = acc[i] + state[2] * T.Cast("float32", part_out[s * parts + b, h, tx + i * shape.threads])
    for i in T.serial(shape.slices):
        if tx + i * shape.threads < shape.d:
            output[b, h, tx + i * shape.threads] = T.Cast(shape.dtype, normalized(acc[i], state[1]))
    if tx == 0:
        lse[b, h] = log2_sum_exp(state[0], state[1])
