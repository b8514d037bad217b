"""TVM paged KV cache whose attention kernels apply an exact per-layer sliding window.

Holds the KV-cache construction (pages of :data:`pipeline.kernels.PAGE_SIZE` tokens):
:class:`WindowedKVCacheMixin` (a model's ``create_paged_kv_cache`` entry point) and
:func:`create_windowed_paged_kv_cache`, which builds the ``vm.builtin.paged_attention_kv_cache_create``
call that TVM 0.26's ``TIRPagedKVCache`` makes (argument order read from
``tvm/relax/frontend/nn/llm/kv_cache.py`` and ``src/runtime/vm/paged_kv_cache.cc``), with every
layer declared ``mha`` and the ragged-prefill, paged-prefill and decode kernels taken from
:mod:`pipeline.kernels.attention`: the CPU kernels for ``llvm``, the GPU kernels (generic GPU TIR)
for the GPU kinds (:data:`pipeline.presets.GPU_KINDS`).  The other slots (append, page
copy, tree attention, compaction, debug read) are TVM's own kernels for that device; the GPU state
merge is ours (:mod:`.merge_state`: TVM 0.26's races).  RoPE is applied by the model
(``RopeMode.NONE``), so layers may use different RoPE bases.  Tree-mask kernels are TVM's and
carry no window (sized to the target's shared memory: :func:`fitting_tree_kernel`).
"""

from __future__ import annotations

import math

from tvm import relax as rx
from tvm import tirx
from tvm.relax.frontend.nn.llm import kv_cache as tvm_kv
from tvm.relax.frontend.nn.llm.kv_cache import AttnKind, PagedKVCache, RopeMode
from tvm.runtime import DataType
from tvm.target import Target

from ..presets import is_gpu_kind, require_kernel_target
from . import PAGE_SIZE
from . import attention as kernels
from .attention_gpu import block_threads
from .merge_state import merge_state_gpu

NO_ROPE_SCALING: dict = {}  # RoPE is applied by the model (RopeMode.NONE)

# Target kinds whose decode attention splits the keys over blocks (flash-decoding,
# kernels.paged_decode; its scratch is a workspace the host code allocates).  The split kernel is
# checked on PoCL (tests/kernels) and, for "cuda", on an H100 (scripts/run_cuda_check.sh, docs/cuda.md);
# other GPU kinds keep one block per (token, head) until a run on their hardware says it pays.
SPLIT_DECODE_KINDS: tuple[str, ...] = ("cuda",)


def current_target() -> Target:
    """The target being compiled for (entered by :func:`pipeline.compile.compiler.export_model`).

    Raises:
        RuntimeError: outside a ``with Target(...)`` scope.
    """
    current = Target.current(allow_none=True)
    if current is None:
        raise RuntimeError("create_paged_kv_cache must be exported inside a `with Target(...)` scope")
    return current


def create_windowed_paged_kv_cache(
    *,
    max_batch_size: tirx.Var,
    max_total_seq_len: tirx.Var,
    prefill_chunk_size: tirx.Var,
    page_size: tirx.Var,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    head_dim: int,
    sliding_window: int,
    dtype: str,
    target: Target,
) -> PagedKVCache:
    """Emit the creation of a paged KV cache with windowed attention kernels.

    Args:
        max_batch_size, max_total_seq_len, prefill_chunk_size, page_size: symbolic sizes
            given at run time (``create_paged_kv_cache``'s arguments, MLC's convention).
        num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim: model sizes.
        sliding_window: window (tokens) applied by layers that pass a negative ``sm_scale``.
        dtype: KV dtype, ``"float32"`` or ``"float16"``.
        target: compile target: ``llvm`` gets the CPU kernels, a kind of
            :data:`~pipeline.presets.GPU_KINDS` the GPU kernels with up to
            :data:`~.attention_gpu.MAX_THREADS` threads per block (fewer if ``max_num_threads`` is lower).

    Returns:
        The cache object expression.

    Raises:
        PipelineError: for a target kind without kernels
            (:data:`~pipeline.presets.KERNEL_TARGET_KINDS`).
    """
    require_kernel_target(target.kind.name, f"target {target.kind.name}")
    bb = rx.BlockBuilder.current()
    h_kv, h_q, d = num_key_value_heads, num_attention_heads, head_dim
    args = [
        rx.ShapeExpr([max_batch_size, max_total_seq_len, prefill_chunk_size, page_size, 0]),
        rx.ShapeExpr([0, num_hidden_layers]),  # layer partition: one pipeline stage
        rx.prim_value(h_q),
        rx.prim_value(h_kv),
        rx.prim_value(d),
        rx.prim_value(d),
        rx.ShapeExpr([int(AttnKind.MHA)] * num_hidden_layers),
        rx.prim_value(False),  # disaggregation
        rx.prim_value(int(RopeMode.NONE)),
        rx.prim_value(1),
        rx.prim_value(10000),
        rx.prim_value(0),  # no RoPE extension factors
        rx.op.zeros((), dtype),
        bb.add_func(tvm_kv._kv_cache_transpose_append(h_kv, d, dtype), "kv_cache_transpose_append"),
        bb.add_func(tvm_kv._kv_cache_transpose_append_mla(d, dtype), "kv_cache_transpose_append_mla"),
        *_kernel_slots(bb, target, num_hidden_layers, h_kv, h_q, d, sliding_window, dtype, page_size),
    ]
    return PagedKVCache(
        _expr=rx.call_pure_packed("vm.builtin.paged_attention_kv_cache_create", *args, ty_args=rx.AnyType()),
        _name="paged_kv_cache",
    )


class WindowedKVCacheMixin:
    """``create_paged_kv_cache`` (MLC's entry point) for a model that says its cache shape.

    The model defines ``dtype`` and ``kv_cache_shape()`` -> ``(layers, query heads, KV heads,
    head_dim, sliding_window)``; sizes are symbolic, given at run time.  MLC's
    ``support_sliding_window`` argument is ignored: the window is applied exactly by the kernels.
    """

    dtype: str  # the KV dtype, set by the model

    def kv_cache_shape(self) -> tuple[int, int, int, int, int]:
        """``(layers, query heads, KV heads, head_dim, sliding_window)``: the model defines it."""
        raise NotImplementedError

    @staticmethod
    def create_spec() -> dict:
        """The export spec of ``create_paged_kv_cache``: five ints, no parameters, no effects (a
        new dict each call: ``ModuleSpec.from_raw`` consumes its ``"$"`` entry)."""
        return {"max_batch_size": int, "max_total_seq_len": int, "prefill_chunk_size": int, "page_size": int,
                "support_sliding_window": int, "$": {"param_mode": "none", "effect_mode": "none"}}

    def create_paged_kv_cache(
        self,
        max_batch_size: tirx.Var,
        max_total_seq_len: tirx.Var,
        prefill_chunk_size: tirx.Var,
        page_size: tirx.Var,
        support_sliding_window: tirx.Var,
    ) -> PagedKVCache:
        """Create the paged KV cache of :meth:`kv_cache_shape` for the target being compiled."""
        del support_sliding_window
        layers, h_q, h_kv, head_dim, window = self.kv_cache_shape()
        return create_windowed_paged_kv_cache(
            max_batch_size=max_batch_size, max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size, page_size=page_size, num_hidden_layers=layers,
            num_attention_heads=h_q, num_key_value_heads=h_kv, head_dim=head_dim, sliding_window=window,
            dtype=self.dtype, target=current_target())


def _kernel_slots(bb, target: Target, layers: int, h_kv: int, h_q: int, d: int, window: int, dtype: str,
                  page_size) -> list:
    """Arguments 15-27 of the cache constructor: attention kernels, state merge, rotary (unused,
    ``RopeMode.NONE``), page copy, debug read and compaction, for ``target``'s device."""
    gpu = is_gpu_kind(target.kind.name)
    threads = block_threads(int(target.attrs["max_num_threads"])) if gpu else 0
    split = target.kind.name in SPLIT_DECODE_KINDS
    suffix = "gpu" if gpu else "cpu"

    def tir(func, name):
        return rx.Tuple([rx.StringImm("tirx"), bb.add_func(func, name)])

    paged_prefill = kernels.paged_prefill(h_kv, h_q, d, dtype, window, PAGE_SIZE, threads, split)
    paged_decode = kernels.paged_decode(h_kv, h_q, d, dtype, window, PAGE_SIZE, threads, split)
    windowed = [
        tir(kernels.ragged_prefill(h_kv, h_q, d, dtype, window, threads), f"windowed_ragged_prefill_{suffix}"),
        tir(paged_prefill, f"windowed_paged_prefill_{suffix}"),
        tir(paged_decode, f"windowed_paged_decode_{suffix}"),
        # Runtime sliding-window kernel slots: unused, since no layer is ``mha_sliding`` (the same
        # functions again: one global symbol each)
        tir(paged_prefill, f"unused_sliding_prefill_{suffix}"),
        tir(paged_decode, f"unused_sliding_decode_{suffix}"),
    ]
    # Tree attention with the paged cache first, then ragged: the order paged_kv_cache.cc reads
    # (TVM 0.26's own CPU path passes the two the other way round).
    if gpu:
        tree = [
            tir(fitting_tree_kernel(tvm_kv.tree_attn_with_paged_kv_cache, h_kv, h_q, d, dtype, target),
                "tir_attention_prefill_with_tree_mask_with_paged_kv_cache"),
            tir(fitting_tree_kernel(tvm_kv.tree_attn, h_kv, h_q, d, dtype, target),
                "tir_attention_prefill_with_tree_mask"),
        ]
        merge = merge_state_gpu(d, dtype, block_threads(min(threads, d)))  # TVM's races: see merge_state.py
        copy_page = tvm_kv._copy_single_page(h_kv, page_size, d, dtype, target)
        compact = tvm_kv._compact_kv_copy(h_kv, d, dtype, target)
    else:
        tree = [
            tir(tvm_kv.tree_attn_with_paged_kv_cache_cpu(h_kv, h_q, d, dtype, NO_ROPE_SCALING),
                "tir_attention_prefill_with_tree_mask_with_paged_kv_cache_cpu"),
            tir(tvm_kv.tree_attn_cpu(h_kv, h_q, d, dtype, NO_ROPE_SCALING), "tir_attention_prefill_with_tree_mask_cpu"),
        ]
        merge = tvm_kv._merge_state_inplace_cpu(dtype)
        copy_page = tvm_kv._copy_single_page_cpu(h_kv, page_size, d, dtype)
        compact = tvm_kv._compact_kv_copy_cpu(h_kv, d, dtype)
    return [
        *windowed,
        *tree,
        rx.Tuple([]),  # no MLA prefill
        rx.Tuple([bb.add_func(merge, f"tir_attention_merge_state_{suffix}")]),
        bb.add_func(tvm_kv.llama_rope_with_position_map(10000, 1, d, h_q, h_kv, dtype, NO_ROPE_SCALING, d),
                    "tir_split_rotary"),
        bb.add_func(copy_page, f"kv_cache_copy_single_page_{suffix}"),
        bb.add_func(tvm_kv._kv_cache_debug_get_kv(layers, h_kv, d, dtype), "kv_cache_debug_get_kv"),
        bb.add_func(compact, f"kv_cache_compact_kv_copy_{suffix}"),
    ]


def fitting_tree_kernel(generator, h_kv: int, h_q: int, d: int, dtype: str, target: Target) -> tirx.PrimFunc:
    """TVM's tree-attention kernel ``generator(h_kv, h_q, d, dtype, rope_scaling, target)`` for
    ``target``, or the same kernel with the smaller tiles TVM 0.26 chooses for WebGPU where only
    those fit the target's ``max_shared_memory_per_block`` (head dim 256 in float32: 41.6 KB of
    shared memory with the default tiles, 24.9 KB with WebGPU's; Vulkan and Metal allow 32 KB, and
    TVM's SPIR-V code generator refuses the larger kernel).  The generator reads the target only to
    choose tiles and to check thread limits (``tree_attn.py``); the kernel it returns keeps none."""
    func = generator(h_kv, h_q, d, dtype, NO_ROPE_SCALING, target)
    limit = target.attrs.get("max_shared_memory_per_block")
    if limit is None or shared_bytes(func) <= int(limit):
        return func
    small = generator(h_kv, h_q, d, dtype, NO_ROPE_SCALING,
                      Target({"kind": "webgpu", "max_num_threads": int(target.attrs["max_num_threads"])}))
    return small if shared_bytes(small) <= int(limit) else func


def shared_bytes(func: tirx.PrimFunc) -> int:
    """Bytes of the ``shared``-scope buffers ``func`` allocates (one thread block's shared memory)."""
    total = []

    def visit(node):
        for buf in getattr(node, "alloc_buffers", None) or []:
            if buf.scope() == "shared":
                total.append(math.prod(int(x) for x in buf.shape) * DataType(str(buf.dtype)).bits // 8)

    tirx.stmt_functor.post_order_visit(func.body, visit)
    return sum(total)
