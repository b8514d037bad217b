"""The compile pass that gives every model library MLC LLM's function set, whatever its family.

MLC LLM's engine (mlc-llm ``cpp/serve/function_table.cc``) and WebLLM (``src/llm_chat.ts``) look
up functions by name beyond the model's own entry points; mlc-llm's compile pipeline adds them
(``python/mlc_llm/compiler_pass/``).  :func:`attach_mlc_functions` adds ours, in one place for
every family, to a module that carries ``_metadata`` (a model library; other modules pass
through unchanged):

- ``create_tir_paged_kv_cache``: MLC's name of the KV-cache creator, the same five shape
  arguments as the model's ``create_paged_kv_cache`` (kept: our runtimes call it), which it calls;
- ``apply_logit_bias_inplace``, ``apply_penalty_inplace``, ``apply_bitmask_inplace``
  (:mod:`pipeline.kernels.logit_processor`);
- ``softmax_with_temperature`` and the samplers of the target kind
  (:mod:`pipeline.kernels.sampling`);
- ``argmax_logits(logits (b, V) float32) -> (b,) int32``, the greedy choice on the device
  (:mod:`pipeline.kernels.argmax`; ours, not MLC's: our runtime's greedy decoding calls it);
- ``alloc_embedding_tensor``: an empty ``(prefill_chunk_size, W)`` tensor of ``embed``'s dtype
  and width;
- ``batch_select_last_hidden_states(hidden_states (s, hidden), logit_positions (b,) int32) ->
  (b, hidden)`` where the model has ``get_logits``;
- ``gather_probs`` / ``scatter_probs``, and ``gather_hidden_states`` / ``scatter_hidden_states``
  where the model has ``prefill_to_last_hidden_states`` (:mod:`pipeline.kernels.gather_scatter`);
- the ``_metadata`` keys MLC's ``ModelMetadata`` reads (``cpp/metadata/model.cc``) that
  :func:`pipeline.compile.compiler.export_model` cannot know: ``kv_cache`` (from the cache
  creator's arguments; ``kv_state_kind`` becomes ``"none"`` for a module without a cache, as for
  MLC's Medusa heads), and after memory planning ``memory_usage`` (:func:`attach_memory_usage`).
"""

from __future__ import annotations

import json
from typing import Any

import tvm
from tvm import relax, tirx
from tvm.ir import Op
from tvm.relax.expr_functor import PyExprVisitor, visitor
from tvm.target import Target

from ..kernels.argmax import attach_argmax
from ..kernels.gather_scatter import attach_hidden_state_moves, row_copy
from ..kernels.logit_processor import logit_processors
from ..kernels.sampling import attach_sampling_functions

METADATA = "_metadata"
KV_CACHE_CREATE = "vm.builtin.paged_attention_kv_cache_create"


def read_metadata(mod: tvm.IRModule) -> dict[str, Any] | None:
    """The JSON ``_metadata`` of ``mod`` returns, or None when ``mod`` has none."""
    if METADATA not in [gv.name_hint for gv in mod.get_global_vars()]:
        return None
    return json.loads(mod[METADATA].body.body.value)


def with_metadata(mod: tvm.IRModule, metadata: dict[str, Any]) -> tvm.IRModule:
    """``mod`` with ``_metadata`` (a Relax function without parameters) returning ``metadata`` as JSON."""
    bb = relax.BlockBuilder()
    with bb.function(METADATA, params=[]):
        bb.emit_func_output(relax.StringImm(json.dumps(metadata, sort_keys=True)))
    mod = mod.clone()
    mod[METADATA] = bb.get()[METADATA]
    return mod


def kv_cache_metadata(mod: tvm.IRModule) -> dict[str, int] | None:
    """MLC's ``kv_cache`` metadata (``num_hidden_layers``, ``num_attention_heads``,
    ``num_key_value_heads``, ``head_dim``) read from the arguments of the
    ``vm.builtin.paged_attention_kv_cache_create`` call in ``create_paged_kv_cache`` (layer
    partition, query heads, KV heads, head dim: :func:`pipeline.kernels.kv_cache.create_windowed_paged_kv_cache`),
    or None when the module creates no cache."""
    found: list[dict[str, int]] = []

    def visit(node):
        if isinstance(node, relax.Call) and node.op == Op.get("relax.call_pure_packed"):
            callee = node.args[0]
            if isinstance(callee, relax.ExternFunc) and callee.global_symbol == KV_CACHE_CREATE:
                args = node.args[1:]
                value = lambda x: int(x.value)  # noqa: E731  (PrimValue or IntImm)
                found.append({"num_hidden_layers": int(args[1].values[-1]), "num_attention_heads": value(args[2]),
                              "num_key_value_heads": value(args[3]), "head_dim": value(args[4])})

    names = [gv.name_hint for gv in mod.get_global_vars()]
    if "create_paged_kv_cache" not in names:
        return None
    relax.analysis.post_order_visit(mod["create_paged_kv_cache"], visit)
    return found[0] if found else None


def _dtype(ty) -> str:
    """The dtype name of a Relax tensor type (its ``dtype`` is a ``PrimType``)."""
    return str(ty.dtype.dtype)


def _alias_kv_cache_creator(bb: relax.BlockBuilder, mod: tvm.IRModule) -> None:
    source = mod["create_paged_kv_cache"]
    params = [relax.Var(p.name, relax.ShapeType([tirx.Var(p.name, "int64")])) for p in source.params]
    with bb.function("create_tir_paged_kv_cache", params):
        out = bb.emit(relax.Call(mod.get_global_var("create_paged_kv_cache"), params), "paged_kv_cache")
        bb.emit_func_output(out)


def _alloc_embedding_tensor(bb: relax.BlockBuilder, embed: relax.Function, prefill_chunk_size: int) -> None:
    ret = embed.ret_ty
    with bb.function("alloc_embedding_tensor", []):
        bb.emit_func_output(bb.emit(relax.op.builtin.alloc_tensor(
            relax.ShapeExpr([prefill_chunk_size, ret.shape[-1]]), relax.DataTypeImm(_dtype(ret)), 0)))


def _batch_select_last_hidden_states(bb: relax.BlockBuilder, get_logits: relax.Function) -> None:
    hidden = get_logits.params[0].ty
    seq, batch = tirx.Var("seq_len", "int64"), tirx.Var("batch_size", "int64")
    states = relax.Var("hidden_states", relax.TensorType([seq, hidden.shape[-1]], _dtype(hidden)))
    positions = relax.Var("logit_positions", relax.TensorType([batch], "int32"))
    with bb.function("batch_select_last_hidden_states", [states, positions]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.take(states, positions, axis=0))
        bb.emit_func_output(out)


def _vocab_size(mod: tvm.IRModule) -> list[int]:
    """``[the model's vocabulary]`` (the last dimension of ``get_logits``' output) when static, else ``[]``."""
    if "get_logits" not in {gv.name_hint for gv in mod.get_global_vars()}:
        return []
    last = mod["get_logits"].ret_ty.shape[-1]
    return [int(last)] if isinstance(last, tirx.IntImm) else []


def attach_mlc_functions(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """``mod`` with MLC's function set added (module docstring) for ``target``; a module without
    ``_metadata`` is returned as it is."""
    metadata = read_metadata(mod)
    if metadata is None:
        return mod
    names = {gv.name_hint for gv in mod.get_global_vars()}
    bb = relax.BlockBuilder(mod)
    if "create_paged_kv_cache" in names:
        _alias_kv_cache_creator(bb, mod)
    for name, func in logit_processors(target).items():
        bb.add_func(func, name)
    attach_sampling_functions(bb, target, *_vocab_size(mod))
    attach_argmax(bb, target)
    if "embed" in names:
        _alloc_embedding_tensor(bb, mod["embed"], int(metadata["prefill_chunk_size"]))
    if "get_logits" in names and "batch_select_last_hidden_states" not in names:
        _batch_select_last_hidden_states(bb, mod["get_logits"])
    for kind in ("gather", "scatter"):
        bb.add_func(row_copy(kind, "float32", target, f"{kind}_probs"), f"{kind}_probs")
    if "prefill_to_last_hidden_states" in names:
        attach_hidden_state_moves(bb, _dtype(mod["prefill_to_last_hidden_states"].ret_ty.fields[0]), target)
    kv_cache = kv_cache_metadata(mod)
    if kv_cache is not None:
        metadata["kv_cache"] = kv_cache
    elif metadata.get("kv_state_kind") == "kv_cache":
        metadata["kv_state_kind"] = "none"  # no cache of its own (MLC: a Medusa head's kind)
    return with_metadata(bb.get(), metadata)


@tvm.transform.module_pass(opt_level=0, name="AttachMLCFunctions")
class AttachMLCFunctions:
    """:func:`attach_mlc_functions` as a module pass for ``target``."""

    def __init__(self, target: Target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        """Entry point."""
        return attach_mlc_functions(mod, self.target)


@visitor
class _PlannedBytes(PyExprVisitor):
    """Bytes of the storage a Relax function allocates with constant sizes after memory planning."""

    def __init__(self) -> None:
        self.total = 0
        self._alloc_storage = Op.get("relax.memory.alloc_storage")

    def visit_call_(self, call: relax.Call) -> None:
        if call.op == self._alloc_storage and isinstance(call.args[0], relax.ShapeExpr):
            size = call.args[0].values[0]
            if isinstance(size, tirx.IntImm):
                self.total += int(size.value)
        super().visit_call_(call)


def memory_usage(mod: tvm.IRModule) -> dict[str, int]:
    """MLC's ``memory_usage`` metadata: per Relax function, the bytes of its planned storage of
    constant size (run after ``StaticPlanBlockMemory``, as mlc-llm's ``AttachMetadataWithMemoryUsage``)."""
    usage = {}
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function) and gv.name_hint != METADATA:
            planned = _PlannedBytes()
            planned.visit_expr(func)
            usage[gv.name_hint] = planned.total
    return usage


@tvm.transform.module_pass(opt_level=0, name="AttachMemoryUsage")
def attach_memory_usage(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Fill ``_metadata``'s ``memory_usage`` (:func:`memory_usage`) in a planned module."""
    metadata = read_metadata(mod)
    if metadata is None:
        return mod
    metadata["memory_usage"] = memory_usage(mod)
    return with_metadata(mod, metadata)
