"""Attention kernels with an exact per-layer sliding window, for TVM's paged KV cache, on the CPU
and on GPUs.

TVM 0.26's ``mha_sliding`` layers do not honour the configured window (the runtime fixes it
at 1024 tokens and applies no window inside a prefill chunk; see
``shared/reference/environment.md``).  These kernels replace the three attention kernels the
runtime calls (``vm.builtin.paged_attention_kv_cache_create``'s ragged-prefill, paged-prefill and
paged-decode slots) with ones that apply the window themselves, so every layer is created as
plain ``mha`` and the window is exact in prefill, decode and verify.

Which layers slide: the runtime hands a kernel no layer id, only the ``sm_scale`` the model
passed to ``attention_with_fused_qkv``.  A layer that slides passes ``-sm_scale``
(:func:`sliding_sm_scale`); the kernel uses ``abs(sm_scale)`` as the scale and restricts a
query at position ``p`` to keys at positions ``p - window + 1 .. p`` (Gemma 3's mask,
transformers ``masking_utils.sliding_window_overlay``: ``q_idx - kv_idx < sliding_window``).

Softmax state follows the runtime's convention: ``lse`` is in log2 units
(``log2(sum(exp(s)))``), the form ``merge_state_inplace`` expects.  A query with no key in
range (a cached prefix entirely outside its window) gets output 0 and ``lse = -1e30`` so the
merge gives it no weight.

Each factory takes ``threads``: 0 gives the CPU kernel (tasks over a ``T.parallel`` loop,
:mod:`.attention_cpu`), a power of two the GPU kernel (one thread block of ``threads``
threads per query row and head, :mod:`.attention_gpu`).  Both compute the same function;
the signatures are the runtime's (``src/runtime/vm/attn_backend.h`` of TVM 0.26).
"""

from __future__ import annotations

import dataclasses

from tvm.script import tirx as T

from . import PAGE_SIZE
from .attention_common import (
    PagedKV,
    RaggedKV,
    causal_end,
    paged_length,
    window_start,
)
from .attention_cpu import SERIAL_DECODE_KEYS, attend_cpu
from .attention_gpu import attend_gpu, merge_splits


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


@dataclasses.dataclass(frozen=True)
class KernelShape:
    """Sizes a kernel is specialized for; ``threads`` 0 means the CPU kernel."""

    h_kv: int
    h_q: int
    d: int
    dtype: str
    window: int
    page_size: int
    threads: int

    def __post_init__(self):
        if self.threads < 0 or self.threads & (self.threads - 1):
            raise ValueError(f"threads must be 0 (CPU) or a power of two, got {self.threads}")
        if self.h_q % self.h_kv:
            raise ValueError(f"query heads ({self.h_q}) must be a multiple of KV heads ({self.h_kv})")

    @property
    def slices(self) -> int:
        """Output dimensions per GPU thread (thread ``t`` owns ``t, t + threads, ...``)."""
        return (self.d + self.threads - 1) // self.threads

    @property
    def group(self) -> int:
        """Query heads per KV head (grouped-query attention)."""
        return self.h_q // self.h_kv

    def name(self, kernel: str) -> str:
        """Global symbol: ``windowed_<kernel>_cpu`` or ``windowed_<kernel>_gpu``."""
        return f"windowed_{kernel}_{'gpu' if self.threads else 'cpu'}"


# Non-hygienic macros: buffers and loop variables (``b``, ``h``, ``tx``) resolve in the kernel
# that expands them.
@T.macro(hygienic=False)
def _attend(shape, kv, row, first, last):
    if shape.threads == 0:
        attend_cpu(shape, kv, q, output, lse, sm_scale, row, h, first, last)
    else:
        attend_gpu(shape, kv, q, output, lse, sm_scale, tx, row, row, h, first, last)


@T.macro(hygienic=False)
def _ragged_task(shape, row, i):
    n_q: T.let[T.int32] = q_indptr[b + 1] - q_indptr[b]
    n_kv: T.let[T.int32] = kv_indptr[b + 1] - kv_indptr[b]
    first: T.let[T.int32] = window_start(sm_scale, n_kv - n_q + i, 0, shape.window)
    last: T.let[T.int32] = causal_end(causal, n_kv, n_q, i)
    _attend(shape, RaggedKV(k, v, kv_indptr, b, h // shape.group), row, first, last)


@T.macro(hygienic=False)
def _paged_prefill_task(shape, row, i, s=None, part_out=None, part_lse=None):
    """Query row ``row`` (``i``-th of its sequence ``b``) against the cached keys; with ``s``, split
    ``s`` of :data:`DECODE_SPLITS` of them into row ``s * n_rows + row`` of the partial states."""
    n_q: T.let[T.int32] = q_indptr[b + 1] - q_indptr[b]
    n_kv: T.let[T.int32] = paged_length(page_indptr, length_info, b, shape.page_size)
    first: T.let[T.int32] = window_start(sm_scale, q_pos[row], k_pos_offset[b], shape.window)
    last: T.let[T.int32] = causal_end(causal, n_kv, n_q, i)
    if s is None:
        _attend(shape, PagedKV(pages, page_values, page_indptr, b, h // shape.group, shape.page_size), row, first,
                last)
    else:
        per: T.let[T.int32] = (T.max(last - first, 0) + DECODE_SPLITS - 1) // DECODE_SPLITS
        attend_gpu(shape, PagedKV(pages, page_values, page_indptr, b, h // shape.group, shape.page_size), q,
                   part_out, part_lse, sm_scale, tx, row, s * n_rows + row, h, first + s * per,
                   T.min(last, first + (s + 1) * per))


@T.macro(hygienic=False)
def _decode_task(shape):
    first: T.let[T.int32] = window_start(sm_scale, q_pos[b], k_pos_offset[b], shape.window)
    last: T.let[T.int32] = paged_length(page_indptr, length_info, b, shape.page_size)
    _attend(shape, PagedKV(pages, page_values, page_indptr, b, h // shape.group, shape.page_size), b, first, last)


@T.macro(hygienic=False)
def _decode_split_task(shape, s, part_out, part_lse):
    """Split ``s`` of :data:`DECODE_SPLITS` of query ``b``'s keys, into row ``s * batch + b`` of the
    partial states (flash-decoding's first kernel)."""
    first: T.let[T.int32] = window_start(sm_scale, q_pos[b], k_pos_offset[b], shape.window)
    last: T.let[T.int32] = paged_length(page_indptr, length_info, b, shape.page_size)
    per: T.let[T.int32] = (T.max(last - first, 0) + DECODE_SPLITS - 1) // DECODE_SPLITS
    attend_gpu(shape, PagedKV(pages, page_values, page_indptr, b, h // shape.group, shape.page_size), q, part_out,
               part_lse, sm_scale, tx, b, s * batch + b, h, first + s * per, T.min(last, first + (s + 1) * per))


@T.macro(hygienic=False)
def _merge_tasks(shape, rows, part_out, part_lse):
    """Flash-decoding's second kernel: a block per (query row, head) of ``rows`` merges the
    :data:`DECODE_SPLITS` partial states of its row into ``output`` and ``lse``."""
    for row in T.thread_binding(rows, thread="blockIdx.x"):
        for h in T.thread_binding(shape.h_q, thread="blockIdx.y"):
            for tx in T.thread_binding(shape.threads, thread="threadIdx.x"):
                with T.sblock("merge"):
                    T.reads()
                    T.writes()
                    merge_splits(shape, DECODE_SPLITS, rows, part_out, part_lse, output, lse, tx, row, h)


@T.macro(hygienic=False)
def _prefill_tasks(shape, task, splits=1, part_out=None, part_lse=None):
    """Run ``task`` for every query row and head: CPU tasks or GPU thread blocks; on a GPU with
    ``splits`` > 1, ``splits`` blocks per (row, head), each given its split's index and the
    partial-state buffers."""
    if shape.threads == 0:
        for b in T.serial(batch):
            for t in T.parallel((q_indptr[b + 1] - q_indptr[b]) * shape.h_q):
                with T.sblock("task"):
                    T.reads()
                    T.writes()
                    h: T.let[T.int32] = t % shape.h_q
                    task(shape, q_indptr[b] + t // shape.h_q, t // shape.h_q)
    else:
        for row in T.thread_binding(n_rows, thread="blockIdx.x"):
            # (head, split) on one grid axis: WebGPU has no blockIdx.z
            for hs in T.thread_binding(shape.h_q * splits, thread="blockIdx.y"):
                for tx in T.thread_binding(shape.threads, thread="threadIdx.x"):
                    with T.sblock("task"):
                        T.reads()
                        T.writes()
                        sequence = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        sequence[0] = 0  # the sequence whose query rows (q_indptr) hold row
                        for s in T.serial(batch):
                            if q_indptr[s + 1] <= row:
                                sequence[0] = s + 1
                        b: T.let[T.int32] = sequence[0]
                        h: T.let[T.int32] = hs // splits
                        if b < batch:
                            if splits == 1:
                                task(shape, row, row - q_indptr[b])
                            else:
                                task(shape, row, row - q_indptr[b], hs % splits, part_out, part_lse)


def ragged_prefill(h_kv: int, h_q: int, d: int, dtype: str, window: int, threads: int = 0):
    """Self-attention of the tokens of a prefill chunk among themselves (causal, windowed).

    Shapes: q ``(n_rows, h_q, d)``, k/v ``(kv_len, h_kv, d)``, output ``(n_rows, h_q, d)``,
    lse ``(n_rows, h_q)`` float32; ``q_indptr``/``kv_indptr`` ``(batch + 1,)`` int32.
    Grouped-query attention: query head ``h`` reads KV head ``h // (h_q // h_kv)``.
    ``dtype`` is q/k/v's (``float32`` or ``float16``); arithmetic is float32.

    Raises:
        ValueError: ``threads`` neither 0 nor a power of two, or ``h_q`` not a multiple of ``h_kv``.
    """
    shape = KernelShape(h_kv, h_q, d, dtype, window, 1, threads)
    name = shape.name("ragged_prefill")

    @T.prim_func(s_tir=True)
    def ragged_prefill_kernel(
        var_q: T.handle, var_q_indptr: T.handle, var_k: T.handle, var_v: T.handle,
        var_kv_indptr: T.handle, var_q_pos: T.handle, var_k_pos_offset: T.handle,
        var_output: T.handle, var_lse: T.handle, causal: T.int32, rotary_mode: T.int32,
        rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32,
    ):
        T.func_attr({"global_symbol": name, "tirx.is_scheduled": True})
        batch = T.int32()
        n_rows = T.int32()
        kv_len = T.int32()
        q = T.match_buffer(var_q, (n_rows, shape.h_q, shape.d), shape.dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch + 1,), "int32", elem_offset=T.int32())
        k = T.match_buffer(var_k, (kv_len, shape.h_kv, shape.d), shape.dtype)
        v = T.match_buffer(var_v, (kv_len, shape.h_kv, shape.d), shape.dtype)
        kv_indptr = T.match_buffer(var_kv_indptr, (batch + 1,), "int32", elem_offset=T.int32())
        q_pos = T.match_buffer(var_q_pos, (n_rows,), "int32", elem_offset=T.int32())
        k_pos_offset = T.match_buffer(var_k_pos_offset, (batch,), "int32", elem_offset=T.int32())
        output = T.match_buffer(var_output, (n_rows, shape.h_q, shape.d), shape.dtype)
        lse = T.match_buffer(var_lse, (n_rows, shape.h_q), "float32")
        _prefill_tasks(shape, _ragged_task)

    return ragged_prefill_kernel


def paged_prefill(h_kv: int, h_q: int, d: int, dtype: str, window: int, page_size: int = PAGE_SIZE,
                  threads: int = 0, split: bool = False):
    """Attention of prefill-chunk queries to the keys already in the paged cache (windowed).

    Shapes: q ``(n_rows, h_q, d)``, pages ``(max_pages, 2, h_kv, page_size, d)``,
    page_indptr ``(batch + 1,)``, page_values ``(nnz_pages,)``, length_info ``(batch,)``
    (slots used in each sequence's last page), output ``(n_rows, h_q, d)``, lse
    ``(n_rows, h_q)`` float32.  Key ``j`` of sequence ``b`` sits at absolute position
    ``k_pos_offset[b] + j``; query row ``r`` at ``q_pos[r]``.  On a GPU with ``split``, a call of
    at most :data:`SPLIT_PREFILL_ROWS` rows (a verify pass's draft tokens) splits each row's keys
    as :func:`paged_decode` does (the host code picks the kernels by the row count); more rows
    fill the GPU with one block per (row, head).

    Raises:
        ValueError: as :func:`ragged_prefill`.
    """
    shape = KernelShape(h_kv, h_q, d, dtype, window, page_size, threads)
    name = shape.name("paged_prefill")

    @T.prim_func(s_tir=True)
    def paged_prefill_kernel(
        var_q: T.handle, var_q_indptr: T.handle, var_pages: T.handle, var_page_indptr: T.handle,
        var_page_values: T.handle, var_length_info: T.handle, var_k_pos_offset: T.handle,
        var_q_pos: T.handle, var_output: T.handle, var_lse: T.handle, causal: T.int32,
        rotary_mode: T.int32, rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32,
    ):
        T.func_attr({"global_symbol": name, "tirx.is_scheduled": True})
        batch = T.int32()
        n_rows = T.int32()
        nnz_pages = T.int32()
        max_pages = T.int32()
        q = T.match_buffer(var_q, (n_rows, shape.h_q, shape.d), shape.dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch + 1,), "int32", elem_offset=T.int32())
        pages = T.match_buffer(var_pages, (max_pages, 2, shape.h_kv, shape.page_size, shape.d), shape.dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch + 1,), "int32", elem_offset=T.int32())
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=T.int32())
        length_info = T.match_buffer(var_length_info, (batch,), "int32", elem_offset=T.int32())
        k_pos_offset = T.match_buffer(var_k_pos_offset, (batch,), "int32", elem_offset=T.int32())
        q_pos = T.match_buffer(var_q_pos, (n_rows,), "int32", elem_offset=T.int32())
        output = T.match_buffer(var_output, (n_rows, shape.h_q, shape.d), shape.dtype)
        lse = T.match_buffer(var_lse, (n_rows, shape.h_q), "float32")
        if shape.threads == 0 or not split:
            _prefill_tasks(shape, _paged_prefill_task)
        else:
            part_out = T.alloc_buffer((DECODE_SPLITS * SPLIT_PREFILL_ROWS, shape.h_q, shape.d), shape.dtype)
            part_lse = T.alloc_buffer((DECODE_SPLITS * SPLIT_PREFILL_ROWS, shape.h_q), "float32")
            if n_rows <= SPLIT_PREFILL_ROWS:
                _prefill_tasks(shape, _paged_prefill_task, DECODE_SPLITS, part_out, part_lse)
                _merge_tasks(shape, n_rows, part_out, part_lse)
            else:
                _prefill_tasks(shape, _paged_prefill_task)

    return paged_prefill_kernel


# Flash-decoding (GPU): blocks each query's keys are split over in paged_decode; a fixed count,
# since a launch's grid cannot depend on the cached lengths.  16 x 4 heads = 64 of an H100's 132
# SMs for Gemma 3 270M at batch 1.
DECODE_SPLITS = 16
# Most query rows of a paged prefill that splits its keys too (paged_prefill's ``split``): a verify
# pass's draft tokens (the draft length is at most 8 where speculation pays); a prefill chunk of
# more rows gives the GPU enough blocks without splitting.
SPLIT_PREFILL_ROWS = 8


def paged_decode(h_kv: int, h_q: int, d: int, dtype: str, window: int, page_size: int = PAGE_SIZE,
                 threads: int = 0, split: bool = False):
    """One query per sequence against its paged keys (windowed).

    Shapes: q ``(batch, h_q, d)``, pages ``(max_pages, 2, h_kv, page_size, d)``, output
    ``(batch, h_q, d)``, lse ``(batch, h_q)`` float32; positions as in :func:`paged_prefill`.
    On a GPU (``threads`` > 0) with ``split``, flash-decoding: each query's keys are split over
    :data:`DECODE_SPLITS` blocks per head, whose partial states (a global scratch the host code
    allocates) a second kernel merges by their lse; without, one block per (query, head) walks
    all its keys.

    Raises:
        ValueError: as :func:`ragged_prefill`.
    """
    shape = KernelShape(h_kv, h_q, d, dtype, window, page_size, threads)
    name = shape.name("paged_decode")

    @T.prim_func(s_tir=True)
    def paged_decode_kernel(
        var_q: T.handle, var_pages: T.handle, var_page_indptr: T.handle,
        var_page_values: T.handle, var_length_info: T.handle, var_k_pos_offset: T.handle,
        var_q_pos: T.handle, var_output: T.handle, var_lse: T.handle, rotary_mode: T.int32,
        rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32,
    ):
        T.func_attr({"global_symbol": name, "tirx.is_scheduled": True})
        batch = T.int32()
        nnz_pages = T.int32()
        max_pages = T.int32()
        q = T.match_buffer(var_q, (batch, shape.h_q, shape.d), shape.dtype)
        pages = T.match_buffer(var_pages, (max_pages, 2, shape.h_kv, shape.page_size, shape.d), shape.dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch + 1,), "int32", elem_offset=T.int32())
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=T.int32())
        length_info = T.match_buffer(var_length_info, (batch,), "int32", elem_offset=T.int32())
        k_pos_offset = T.match_buffer(var_k_pos_offset, (batch,), "int32", elem_offset=T.int32())
        q_pos = T.match_buffer(var_q_pos, (batch,), "int32", elem_offset=T.int32())
        output = T.match_buffer(var_output, (batch, shape.h_q, shape.d), shape.dtype)
        lse = T.match_buffer(var_lse, (batch, shape.h_q), "float32")
        if shape.threads == 0:
            # a short cache is read on the calling thread: waking the engine's sleeping workers
            # costs more than a second core saves on a few hundred keys (docs/performance.md)
            if T.if_then_else(batch == 1, paged_length(page_indptr, length_info, 0, shape.page_size),
                              SERIAL_DECODE_KEYS + 1) <= SERIAL_DECODE_KEYS:
                for t in T.serial(batch * shape.h_q):
                    with T.sblock("task_serial"):
                        T.reads()
                        T.writes()
                        b: T.let[T.int32] = t // shape.h_q
                        h: T.let[T.int32] = t % shape.h_q
                        _decode_task(shape)
            else:
                for t in T.parallel(batch * shape.h_q):
                    with T.sblock("task"):
                        T.reads()
                        T.writes()
                        b: T.let[T.int32] = t // shape.h_q  # type: ignore[no-redef]
                        h: T.let[T.int32] = t % shape.h_q  # type: ignore[no-redef]
                        _decode_task(shape)
        elif not split:
            for b in T.thread_binding(batch, thread="blockIdx.x"):
                for h in T.thread_binding(shape.h_q, thread="blockIdx.y"):
                    for tx in T.thread_binding(shape.threads, thread="threadIdx.x"):
                        with T.sblock("task"):
                            T.reads()
                            T.writes()
                            _decode_task(shape)
        else:  # flash-decoding: the keys split over DECODE_SPLITS blocks per (query, head), then merged
            part_out = T.alloc_buffer((DECODE_SPLITS * batch, shape.h_q, shape.d), shape.dtype)
            part_lse = T.alloc_buffer((DECODE_SPLITS * batch, shape.h_q), "float32")
            for b in T.thread_binding(batch, thread="blockIdx.x"):
                # (head, split) on one grid axis: WebGPU has no blockIdx.z
                for hs in T.thread_binding(shape.h_q * DECODE_SPLITS, thread="blockIdx.y"):
                    for tx in T.thread_binding(shape.threads, thread="threadIdx.x"):
                        with T.sblock("split"):
                            T.reads()
                            T.writes()
                            h: T.let[T.int32] = hs // DECODE_SPLITS  # type: ignore[no-redef]  # the macro reads h
                            _decode_split_task(shape, hs % DECODE_SPLITS, part_out, part_lse)
            _merge_tasks(shape, batch, part_out, part_lse)

    return paged_decode_kernel
