"""CPU attention kernels with an exact per-layer sliding window, for TVM's paged KV cache.

TVM 0.26's ``mha_sliding`` layers do not honour the configured window (the runtime fixes it
at 1024 tokens and applies no window inside a prefill chunk; see
``shared/reference/environment.md``).  These kernels replace the three attention kernels the
runtime calls on the CPU (``vm.builtin.paged_attention_kv_cache_create``'s ragged-prefill,
paged-prefill and paged-decode slots) with ones that apply the window themselves, so every
layer is created as plain ``mha`` and the window is exact in prefill, decode and verify.

Which layers slide: the runtime hands a kernel no layer id, only the ``sm_scale`` the model
passed to ``attention_with_fused_qkv``.  A layer that slides passes ``-sm_scale``
(:func:`sliding_sm_scale`); the kernel uses ``abs(sm_scale)`` as the scale and restricts a
query at position ``p`` to keys at positions ``p - window + 1 .. p`` (Gemma 3's mask,
transformers ``masking_utils.sliding_window_overlay``: ``q_idx - kv_idx < sliding_window``).

Softmax state follows the runtime's convention: ``lse`` is in log2 units
(``log2(sum(exp(s)))``), the form ``merge_state_inplace`` expects.  A query with no key in
range (a cached prefix entirely outside its window) gets output 0 and ``lse = -1e30`` so the
merge gives it no weight.  The online softmax is the one of FlashAttention (Dao et al. 2022,
arXiv 2205.14135, Algorithm 1).
"""

from __future__ import annotations

import math

from tvm.script import tirx as T

LOG2E = math.log2(math.e)
EMPTY_LSE = -1e30


# Shared steps of the three kernels.  Non-hygienic macros: ``d`` and ``dtype`` resolve in the
# kernel factory that uses them.  ``state`` holds (running max, denominator, score, rescale).
@T.macro(hygienic=False)
def _softmax_init(acc, state):
    state[0] = T.float32(EMPTY_LSE)
    state[1] = T.float32(0)
    for x in T.serial(d):
        acc[x] = T.float32(0)


@T.macro(hygienic=False)
def _softmax_update(q, row, h, key, value, acc, state, scale):
    state[2] = T.float32(0)
    for x in T.serial(d):
        state[2] += T.Cast("float32", q[row, h, x]) * key[x]
    state[2] = state[2] * scale
    state[3] = T.exp2(state[0] - T.max(state[0], state[2]))
    state[0] = T.max(state[0], state[2])
    state[2] = T.exp2(state[2] - state[0])
    state[1] = state[1] * state[3] + state[2]
    for x in T.serial(d):
        acc[x] = acc[x] * state[3] + state[2] * value[x]


@T.macro(hygienic=False)
def _softmax_finish(output, lse, row, h, acc, state):
    for x in T.serial(d):
        output[row, h, x] = T.Cast(dtype, T.if_then_else(state[1] > 0, acc[x] / state[1], T.float32(0)))
    lse[row, h] = T.if_then_else(state[1] > 0, state[0] + T.log2(state[1]), T.float32(EMPTY_LSE))


def sliding_sm_scale(sm_scale: float, sliding: bool) -> float:
    """Return the ``sm_scale`` a layer passes to the cache: negated for sliding layers.

    Args:
        sm_scale: softmax scale of the layer (``query_pre_attn_scalar ** -0.5`` for Gemma 3).
        sliding: whether the layer uses the sliding window.

    Returns:
        ``-sm_scale`` for a sliding layer, ``sm_scale`` otherwise.

    Raises:
        ValueError: if ``sm_scale`` is not positive.
    """
    if sm_scale <= 0:
        raise ValueError(f"sm_scale must be positive, got {sm_scale}")
    return -sm_scale if sliding else sm_scale


def ragged_prefill_cpu(h_kv: int, h_q: int, d: int, dtype: str, window: int):
    """Self-attention of the tokens of a prefill chunk among themselves (causal, windowed).

    Shapes: q ``(qo_len, h_q, d)``, k/v ``(kv_len, h_kv, d)``, output ``(qo_len, h_q, d)``,
    lse ``(qo_len, h_q)`` float32; ``q_indptr``/``kv_indptr`` ``(batch + 1,)`` int32.
    Grouped-query attention: query head ``h`` reads KV head ``h // (h_q // h_kv)``.
    """
    group = h_q // h_kv

    @T.prim_func(s_tir=True)
    def ragged_prefill(
        var_q: T.handle, var_q_indptr: T.handle, var_k: T.handle, var_v: T.handle,
        var_kv_indptr: T.handle, var_q_pos: T.handle, var_k_pos_offset: T.handle,
        var_output: T.handle, var_lse: T.handle, causal: T.int32, rotary_mode: T.int32,
        rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32,
    ):
        T.func_attr({"global_symbol": "windowed_ragged_prefill_cpu", "tirx.is_scheduled": True})
        batch = T.int32()
        qo_len = T.int32()
        kv_len = T.int32()
        q = T.match_buffer(var_q, (qo_len, h_q, d), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch + 1,), "int32", elem_offset=T.int32())
        k = T.match_buffer(var_k, (kv_len, h_kv, d), dtype)
        v = T.match_buffer(var_v, (kv_len, h_kv, d), dtype)
        kv_indptr = T.match_buffer(var_kv_indptr, (batch + 1,), "int32", elem_offset=T.int32())
        q_pos = T.match_buffer(var_q_pos, (qo_len,), "int32", elem_offset=T.int32())
        k_pos_offset = T.match_buffer(var_k_pos_offset, (batch,), "int32", elem_offset=T.int32())
        output = T.match_buffer(var_output, (qo_len, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (qo_len, h_q), "float32")

        for b in T.serial(batch):
            for task in T.parallel((q_indptr[b + 1] - q_indptr[b]) * h_q):
                with T.sblock("ragged"):
                    T.reads()
                    T.writes()
                    acc = T.sblock_alloc_buffer((d,), "float32")
                    key = T.sblock_alloc_buffer((d,), "float32")
                    value = T.sblock_alloc_buffer((d,), "float32")
                    state = T.sblock_alloc_buffer((4,), "float32")
                    i: T.let[T.int32] = task // h_q
                    h: T.let[T.int32] = task % h_q
                    n_q: T.let[T.int32] = q_indptr[b + 1] - q_indptr[b]
                    n_kv: T.let[T.int32] = kv_indptr[b + 1] - kv_indptr[b]
                    row: T.let[T.int32] = q_indptr[b] + i
                    last: T.let[T.int32] = T.if_then_else(causal > 0, n_kv - n_q + i + 1, n_kv)
                    first: T.let[T.int32] = T.if_then_else(
                        sm_scale < T.float32(0), T.max(0, n_kv - n_q + i - window + 1), 0)
                    scale: T.let[T.float32] = T.abs(sm_scale) * T.float32(LOG2E)
                    _softmax_init(acc, state)
                    for j in T.serial(first, T.max(first, last)):
                        for x in T.serial(d):
                            key[x] = T.Cast("float32", k[kv_indptr[b] + j, h // group, x])
                            value[x] = T.Cast("float32", v[kv_indptr[b] + j, h // group, x])
                        _softmax_update(q, row, h, key, value, acc, state, scale)
                    _softmax_finish(output, lse, row, h, acc, state)

    return ragged_prefill


def paged_prefill_cpu(h_kv: int, h_q: int, d: int, dtype: str, window: int, page_size: int = 16):
    """Attention of prefill-chunk queries to the keys already in the paged cache (windowed).

    Shapes: q ``(total_len, h_q, d)``, pages ``(max_pages, 2, h_kv, page_size, d)``,
    page_indptr ``(batch + 1,)``, page_values ``(nnz_pages,)``, length_info ``(batch,)``
    (slots used in each sequence's last page), output ``(total_len, h_q, d)``, lse
    ``(total_len, h_q)`` float32.  Key ``j`` of sequence ``b`` sits at absolute position
    ``k_pos_offset[b] + j``; query ``i`` at ``q_pos[i]``.
    """
    group = h_q // h_kv

    @T.prim_func(s_tir=True)
    def paged_prefill(
        var_q: T.handle, var_q_indptr: T.handle, var_pages: T.handle, var_page_indptr: T.handle,
        var_page_values: T.handle, var_length_info: T.handle, var_k_pos_offset: T.handle,
        var_q_pos: T.handle, var_output: T.handle, var_lse: T.handle, causal: T.int32,
        rotary_mode: T.int32, rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32,
    ):
        T.func_attr({"global_symbol": "windowed_paged_prefill_cpu", "tirx.is_scheduled": True})
        batch = T.int32()
        total_len = T.int32()
        nnz_pages = T.int32()
        max_pages = T.int32()
        q = T.match_buffer(var_q, (total_len, h_q, d), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch + 1,), "int32", elem_offset=T.int32())
        pages = T.match_buffer(var_pages, (max_pages, 2, h_kv, page_size, d), dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch + 1,), "int32", elem_offset=T.int32())
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=T.int32())
        length_info = T.match_buffer(var_length_info, (batch,), "int32", elem_offset=T.int32())
        k_pos_offset = T.match_buffer(var_k_pos_offset, (batch,), "int32", elem_offset=T.int32())
        q_pos = T.match_buffer(var_q_pos, (total_len,), "int32", elem_offset=T.int32())
        output = T.match_buffer(var_output, (total_len, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (total_len, h_q), "float32")

        for b in T.serial(batch):
            for task in T.parallel((q_indptr[b + 1] - q_indptr[b]) * h_q):
                with T.sblock("paged"):
                    T.reads()
                    T.writes()
                    acc = T.sblock_alloc_buffer((d,), "float32")
                    key = T.sblock_alloc_buffer((d,), "float32")
                    value = T.sblock_alloc_buffer((d,), "float32")
                    state = T.sblock_alloc_buffer((4,), "float32")
                    i: T.let[T.int32] = task // h_q
                    h: T.let[T.int32] = task % h_q
                    row: T.let[T.int32] = q_indptr[b] + i
                    n_q: T.let[T.int32] = q_indptr[b + 1] - q_indptr[b]
                    n_pages: T.let[T.int32] = page_indptr[b + 1] - page_indptr[b]
                    n_kv: T.let[T.int32] = T.if_then_else(
                        n_pages > 0, (n_pages - 1) * page_size + length_info[b], 0)
                    last: T.let[T.int32] = T.if_then_else(
                        causal > 0, T.min(n_kv, n_kv - n_q + i + 1), n_kv)
                    first: T.let[T.int32] = T.if_then_else(
                        sm_scale < T.float32(0),
                        T.max(0, q_pos[row] - window + 1 - k_pos_offset[b]), 0)
                    scale: T.let[T.float32] = T.abs(sm_scale) * T.float32(LOG2E)
                    _softmax_init(acc, state)
                    for j in T.serial(first, T.max(first, last)):
                        page: T.let[T.int32] = page_values[page_indptr[b] + j // page_size]
                        slot: T.let[T.int32] = j % page_size
                        for x in T.serial(d):
                            key[x] = T.Cast("float32", pages[page, 0, h // group, slot, x])
                            value[x] = T.Cast("float32", pages[page, 1, h // group, slot, x])
                        _softmax_update(q, row, h, key, value, acc, state, scale)
                    _softmax_finish(output, lse, row, h, acc, state)

    return paged_prefill


def paged_decode_cpu(h_kv: int, h_q: int, d: int, dtype: str, window: int, page_size: int = 16):
    """One query per sequence against its paged keys (windowed).

    Shapes: q ``(batch, h_q, d)``, pages ``(max_pages, 2, h_kv, page_size, d)``, output
    ``(batch, h_q, d)``, lse ``(batch, h_q)`` float32; positions as in :func:`paged_prefill_cpu`.
    """
    group = h_q // h_kv

    @T.prim_func(s_tir=True)
    def paged_decode(
        var_q: T.handle, var_pages: T.handle, var_page_indptr: T.handle,
        var_page_values: T.handle, var_length_info: T.handle, var_k_pos_offset: T.handle,
        var_q_pos: T.handle, var_output: T.handle, var_lse: T.handle, rotary_mode: T.int32,
        rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32,
    ):
        T.func_attr({"global_symbol": "windowed_paged_decode_cpu", "tirx.is_scheduled": True})
        batch = T.int32()
        nnz_pages = T.int32()
        max_pages = T.int32()
        q = T.match_buffer(var_q, (batch, h_q, d), dtype)
        pages = T.match_buffer(var_pages, (max_pages, 2, h_kv, page_size, d), dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch + 1,), "int32", elem_offset=T.int32())
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=T.int32())
        length_info = T.match_buffer(var_length_info, (batch,), "int32", elem_offset=T.int32())
        k_pos_offset = T.match_buffer(var_k_pos_offset, (batch,), "int32", elem_offset=T.int32())
        q_pos = T.match_buffer(var_q_pos, (batch,), "int32", elem_offset=T.int32())
        output = T.match_buffer(var_output, (batch, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (batch, h_q), "float32")

        for task in T.parallel(batch * h_q):
            with T.sblock("decode"):
                T.reads()
                T.writes()
                acc = T.sblock_alloc_buffer((d,), "float32")
                key = T.sblock_alloc_buffer((d,), "float32")
                value = T.sblock_alloc_buffer((d,), "float32")
                state = T.sblock_alloc_buffer((4,), "float32")
                b: T.let[T.int32] = task // h_q
                h: T.let[T.int32] = task % h_q
                n_pages: T.let[T.int32] = page_indptr[b + 1] - page_indptr[b]
                n_kv: T.let[T.int32] = T.if_then_else(
                    n_pages > 0, (n_pages - 1) * page_size + length_info[b], 0)
                first: T.let[T.int32] = T.if_then_else(
                    sm_scale < T.float32(0), T.max(0, q_pos[b] - window + 1 - k_pos_offset[b]), 0)
                scale: T.let[T.float32] = T.abs(sm_scale) * T.float32(LOG2E)
                _softmax_init(acc, state)
                for j in T.serial(first, T.max(first, n_kv)):
                    page: T.let[T.int32] = page_values[page_indptr[b] + j // page_size]
                    slot: T.let[T.int32] = j % page_size
                    for x in T.serial(d):
                        key[x] = T.Cast("float32", pages[page, 0, h // group, slot, x])
                        value[x] = T.Cast("float32", pages[page, 1, h // group, slot, x])
                    _softmax_update(q, b, h, key, value, acc, state, scale)
                _softmax_finish(output, lse, b, h, acc, state)

    return paged_decode
