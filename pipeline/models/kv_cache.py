"""TVM paged KV cache whose attention kernels apply an exact per-layer sliding window.

Builds the same ``vm.builtin.paged_attention_kv_cache_create`` call that TVM 0.26's
``TIRPagedKVCache`` makes for the CPU (argument order read from
``tvm/relax/frontend/nn/llm/kv_cache.py`` and ``src/runtime/vm/paged_kv_cache.cc``), with
every layer declared ``mha`` and the ragged-prefill, paged-prefill and decode kernels taken
from :mod:`pipeline.models.attention_kernels`.  RoPE is applied by the model (``RopeMode.NONE``),
so layers may use different RoPE bases.  Tree-mask kernels are TVM's and carry no window.
"""

from __future__ import annotations

from tvm import relax as rx
from tvm import tirx
from tvm.relax.frontend.nn.llm import kv_cache as tvm_kv
from tvm.relax.frontend.nn.llm.kv_cache import AttnKind, PagedKVCache, RopeMode
from tvm.target import Target

from ..errors import PipelineError
from . import attention_kernels as kernels

PAGE_SIZE = 16
KERNEL_TARGET_KINDS = ("llvm",)  # TVM target kinds the windowed attention kernels exist for
NO_ROPE_SCALING: dict = {}  # RoPE is applied by the model (RopeMode.NONE)


def require_kernel_target(kind: str, where: str) -> None:
    """Raise PipelineError when the windowed attention kernels do not exist for TVM target ``kind``
    (``where`` names the preset file or target in the message)."""
    if kind not in KERNEL_TARGET_KINDS:
        raise PipelineError(
            f"{where}: windowed attention kernels exist for the CPU (llvm) target only, not {kind}"
        )


def current_target() -> Target:
    """The target being compiled for (entered by :func:`pipeline.compile.build.compile_model`).

    Raises:
        RuntimeError: outside a ``with Target(...)`` scope.
    """
    current = Target.current(allow_none=True)
    if current is None:
        raise RuntimeError("create_paged_kv_cache must be exported inside a `with Target(...)` scope")
    return current


def create_windowed_paged_kv_cache(  # pylint: disable=too-many-arguments
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
        target: compile target; only ``llvm`` (CPU) kernels are provided here.

    Returns:
        The cache object expression.

    Raises:
        PipelineError: for a non-CPU target.
    """
    require_kernel_target(target.kind.name, f"target {target.kind.name}")
    bb = rx.BlockBuilder.current()
    h_kv, h_q, d = num_key_value_heads, num_attention_heads, head_dim

    def tir(func, name):
        return rx.Tuple([rx.StringImm("tirx"), bb.add_func(func, name)])

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
        tir(kernels.ragged_prefill_cpu(h_kv, h_q, d, dtype, sliding_window), "windowed_ragged_prefill_cpu"),
        tir(kernels.paged_prefill_cpu(h_kv, h_q, d, dtype, sliding_window, PAGE_SIZE), "windowed_paged_prefill_cpu"),
        tir(kernels.paged_decode_cpu(h_kv, h_q, d, dtype, sliding_window, PAGE_SIZE), "windowed_paged_decode_cpu"),
        # Runtime sliding-window kernel slots: unused, since no layer is ``mha_sliding``.
        tir(kernels.paged_prefill_cpu(h_kv, h_q, d, dtype, sliding_window, PAGE_SIZE), "unused_sliding_prefill_cpu"),
        tir(kernels.paged_decode_cpu(h_kv, h_q, d, dtype, sliding_window, PAGE_SIZE), "unused_sliding_decode_cpu"),
        tir(tvm_kv.tree_attn_cpu(h_kv, h_q, d, dtype, NO_ROPE_SCALING), "tir_attention_prefill_with_tree_mask_cpu"),
        tir(tvm_kv.tree_attn_with_paged_kv_cache_cpu(h_kv, h_q, d, dtype, NO_ROPE_SCALING),
            "tir_attention_prefill_with_tree_mask_with_paged_kv_cache_cpu"),
        rx.Tuple([]),  # no MLA prefill
        rx.Tuple([bb.add_func(tvm_kv._merge_state_inplace_cpu(dtype), "tir_attention_merge_state_cpu")]),
        bb.add_func(tvm_kv.llama_rope_with_position_map(10000, 1, d, h_q, h_kv, dtype, NO_ROPE_SCALING, d), "tir_split_rotary"),
        bb.add_func(tvm_kv._copy_single_page_cpu(h_kv, page_size, d, dtype), "kv_cache_copy_single_page_cpu"),
        bb.add_func(tvm_kv._kv_cache_debug_get_kv(num_hidden_layers, h_kv, d, dtype), "kv_cache_debug_get_kv"),
        bb.add_func(tvm_kv._compact_kv_copy_cpu(h_kv, d, dtype), "kv_cache_compact_kv_copy_cpu"),
    ]
    return PagedKVCache(
        _expr=rx.call_pure_packed("vm.builtin.paged_attention_kv_cache_create", *args, ty_args=rx.AnyType()),
        _name="paged_kv_cache",
    )


class WindowedKVCacheMixin:  # pylint: disable=too-few-public-methods
    """``create_paged_kv_cache`` (MLC's entry point) for a model that says its cache shape.

    The model defines ``dtype`` and ``kv_cache_shape()`` -> ``(layers, query heads, KV heads,
    head_dim, sliding_window)``; sizes are symbolic, given at run time.  MLC's
    ``support_sliding_window`` argument is ignored: the window is applied exactly by the kernels.
    """

    def create_paged_kv_cache(  # pylint: disable=too-many-arguments
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
