"""GPU kernel merging two partial attention states in place, for TVM's paged KV cache.

The cache computes a prefill chunk's attention in two parts, over the chunk itself (ragged) and
over the cached pages, then merges them with the kernel in its ``merge_state`` slot.  Each part is
an output ``V`` (rows, heads, head_dim) normalized over its own keys and an ``lse`` ``S`` (rows,
heads) in log2 units, ``log2(sum(exp(scores)))``.  With ``m = max(S, S')``, ``w = 2**(S - m)`` and
``w' = 2**(S' - m)``::

    V <- (w * V + w' * V') / (w + w')        S <- log2(w + w') + m

the two-part form of FlashAttention's online softmax (Dao et al. 2022, arXiv 2205.14135, Alg. 1;
the same state TVM 0.26 passes, ``relax/frontend/nn/llm/_decode_kernels.py``).

Why our own: TVM 0.26's GPU ``merge_state_inplace`` lets every thread of a head read
``S[row, head]`` and write it back with no barrier in between, so a thread that runs late reads
the merged value.  SwiftShader runs a head's 8 threads 4 at a time and got dimensions 16-31 and
the lse wrong (1.6 off); here one thread of the block reads and writes ``S[row, head]``, the
weights reach the others through shared memory behind a barrier.
"""

from __future__ import annotations

from tvm.script import tirx as T


def merge_state_gpu(head_dim: int, dtype: str, threads: int):
    """The in-place merge as generic GPU TIR: one block of ``threads`` threads per (row, head).

    Args:
        head_dim: ``D``; thread ``t`` owns dimensions ``t, t + threads, ...``.
        dtype: dtype of ``V`` (``S`` is float32).  The merge is computed in float32.
        threads: threads per block, a power of two (see
            :func:`~.attention_gpu.block_threads`).

    Returns:
        A ``PrimFunc`` ``(v, s, v_other, s_other)`` with ``V``, ``V'`` of shape ``(N, H, D)``
        and ``S``, ``S'`` of shape ``(N, H)``; ``V`` and ``S`` are updated, the others only read.

    Raises:
        ValueError: ``threads`` not a positive power of two.
    """
    if threads < 1 or threads & (threads - 1):
        raise ValueError(f"threads must be a positive power of two, got {threads}")
    slices = (head_dim + threads - 1) // threads

    @T.prim_func(private=True, s_tir=True)
    def merge_state(v: T.handle, s: T.handle, v_other: T.handle, s_other: T.handle):
        T.func_attr({"tirx.is_scheduled": True})
        n, h = T.int32(), T.int32()
        V = T.match_buffer(v, (n, h, head_dim), dtype)
        S = T.match_buffer(s, (n, h), "float32")
        V_other = T.match_buffer(v_other, (n, h, head_dim), dtype)
        S_other = T.match_buffer(s_other, (n, h), "float32")
        for row in T.thread_binding(n, thread="blockIdx.x"):
            for head in T.thread_binding(h, thread="blockIdx.y"):
                for tx in T.thread_binding(threads, thread="threadIdx.x"):
                    with T.sblock("merge"):
                        weight = T.sblock_alloc_buffer((2,), "float32", scope="shared")
                        if tx == 0:
                            top: T.let[T.float32] = T.max(S[row, head], S_other[row, head])
                            mine: T.let[T.float32] = T.exp2(S[row, head] - top)
                            other: T.let[T.float32] = T.exp2(S_other[row, head] - top)
                            weight[0] = mine / (mine + other)
                            weight[1] = other / (mine + other)
                            S[row, head] = T.log2(mine + other) + top
                        T.tvm_storage_sync("shared")
                        for i in T.serial(slices):
                            if tx + i * threads < head_dim:
                                V[row, head, tx + i * threads] = T.Cast(
                                    dtype,
                                    T.Cast("float32", V[row, head, tx + i * threads]) * weight[0]
                                    + T.Cast("float32", V_other[row, head, tx + i * threads]) * weight[1],
                                )

    return merge_state
