"""Gemma 4 text model as a ``tvm.relax.frontend.nn`` module over TVM's paged KV cache.

Follows transformers 5.24 ``models/gemma4/modeling_gemma4.py`` (``Gemma4ForCausalLM``):

- embeddings scaled by ``sqrt(hidden_size)``; final norm, tied head, optional logit soft-cap;
- decoder layer: ``x + post_attention_norm(attn(input_norm(x)))``, then
  ``x + post_feedforward_norm(ffn)`` where ``ffn`` is the gated GELU-tanh MLP of
  ``pre_feedforward_norm(x)``, plus (mixture-of-experts layers) the routed experts' output;
  then the per-layer-embedding block, then ``x * layer_scalar``;
- attention: scale 1.0, q/k RMSNorm with weights and v RMSNorm without, RoPE per layer type
  (default RoPE on sliding layers, proportional partial RoPE on full layers), ``head_dim`` on
  sliding and ``global_head_dim`` on full layers; ``attention_k_eq_v`` full layers take
  ``v = v_norm(k_proj(x))``; KV-shared layers attend to the K/V of the last non-shared layer of
  their type;
- RMSNorm weights are the multiplier itself (``Gemma4RMSNorm`` multiplies by ``weight``, not
  ``1 + weight`` as Gemma 3 does).

Runtime layout choices (exact, at a memory cost):

- One paged KV cache for all layers, with ``cache_head_dim`` = the largest head dimension and
  ``cache_kv_heads`` = the largest KV-head count; smaller layers are zero-padded along the head
  dimension (zeros add nothing to ``q.k`` and produce output columns that are dropped) and repeat
  their KV heads so that query head ``h`` still meets its own group's KV head.
- A KV-shared layer stores a copy of its producer's K/V in its own cache slot, so that every
  layer attends through the same kernels; the result equals attending to the producer's cache.
- Per-layer embeddings (PLE) need token ids, but MLC's entry points take embeddings: for PLE
  models ``embed`` returns ``[sqrt(H) * E[id] | sqrt(P) * E_ple[id]]`` packed along the last axis
  (width ``H + L * P``) and the model splits it.

The residual stream is float32 in every scheme, as for Gemma 3.

Entry points follow MLC LLM (:class:`pipeline.models.base.CausalLM`), plus
``prefill_to_mtp_context`` / ``batch_verify_to_mtp_context`` for the ``gemma4_assistant`` drafter:
besides logits they return the final-normed hidden states and the K/V (after norms and RoPE,
unpadded) that the last sliding and the last full non-shared layers computed for the new tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ...kernels.attention import sliding_sm_scale
from ..base import CausalLM, cache_spec, packed_method
from ..layers import ExpertWeights, GatedMLP, RMSNorm, TiedEmbedding, apply_rope, last_position
from .config import FULL, SLIDING, Gemma4Config


def pad_kv_heads(x: Tensor, heads: int, head_dim: int) -> Tensor:
    """``(n, h, d)`` -> ``(n, heads, head_dim)``: each head repeated ``heads / h`` times (query
    group order kept), columns past ``d`` zero."""
    _, h, d = x.shape
    if (h, d) == (heads, head_dim):
        return x
    repeat = heads // h

    def compute(t: te.Tensor):
        return te.compute(
            (t.shape[0], heads, head_dim),
            lambda i, k, j: tirx.if_then_else(j < d, t[i, k // repeat, tirx.min(j, d - 1)], tirx.const(0, t.dtype)),
            name="pad_kv_heads")

    return op.tensor_expr_op(compute, "pad_kv_heads", [x])


def leading_columns(x: Tensor, width: int) -> Tensor:
    """``(..., D)`` -> ``(..., width)``, the first ``width`` columns."""
    if x.shape[-1] == width:
        return x

    def compute(t: te.Tensor):
        return te.compute((*t.shape[:-1], width), lambda *i: t[i], name="leading_columns")

    return op.tensor_expr_op(compute, "leading_columns", [x])


def trailing_columns(x: Tensor, start: int) -> Tensor:
    """``(..., D)`` -> ``(..., D - start)``, the columns from ``start`` on."""
    def compute(t: te.Tensor):
        return te.compute((*t.shape[:-1], t.shape[-1] - start),
                          lambda *i: t[i[:-1] + (i[-1] + start,)], name="trailing_columns")

    return op.tensor_expr_op(compute, "trailing_columns", [x])


def layer_slice(x: Tensor, layer: int) -> Tensor:
    """``(b, s, L, P)`` -> ``(b, s, P)``, the inputs of one layer."""
    def compute(t: te.Tensor):
        b, s, _, p = t.shape
        return te.compute((b, s, p), lambda i, j, k: t[i, j, layer, k], name="layer_slice")

    return op.tensor_expr_op(compute, "layer_slice", [x])


class Gemma4Attention(nn.Module):
    """Attention of one layer (see the module docstring)."""

    def __init__(self, config: Gemma4Config, layer_id: int, dtype: str):
        self.layer_id = layer_id
        self.sliding = config.is_sliding(layer_id)
        self.reuse = config.kv_sharing_modes()[layer_id] == "reuse"
        self.h_q, self.h_kv, self.d = (config.num_attention_heads, config.layer_kv_heads(layer_id),
                                       config.layer_head_dim(layer_id))
        self.cache_heads, self.cache_dim = config.cache_kv_heads, config.cache_head_dim
        self.rope: tuple[float, float, int | None]  # theta, scaling factor, rotary pairs (None: all)
        if self.sliding:
            self.rope = (config.rope_theta_sliding, 1.0, None)
        else:
            self.rope = (config.rope_theta_full, config.rope_factor_full, config.rotary_pairs_full)
        self.sm_scale = sliding_sm_scale(1.0, self.sliding)
        h, eps = config.hidden_size, config.rms_norm_eps
        self.q_proj = nn.Linear(h, self.h_q * self.d, bias=False, dtype=dtype)
        self.o_proj = nn.Linear(self.h_q * self.d, h, bias=False, dtype=dtype)
        self.q_norm = RMSNorm(self.d, eps, dtype)
        if not self.reuse:
            self.k_proj = nn.Linear(h, self.h_kv * self.d, bias=False, dtype=dtype)
            if config.layer_has_v_proj(layer_id):
                self.v_proj = nn.Linear(h, self.h_kv * self.d, bias=False, dtype=dtype)
            self.k_norm = RMSNorm(self.d, eps, dtype)
            self.v_norm = RMSNorm(self.d, eps, dtype, with_scale=False)

    def forward(self, x: Tensor, cache: PagedKVCache, shared_kv: tuple[Tensor, Tensor] | None):
        """``(b, s, hidden)`` -> ``((b, s, hidden), (k, v))``; ``k``/``v`` ``(b*s, h_kv, d)`` are
        this layer's K/V (or ``shared_kv``, the producer's, on a KV-shared layer), which it also
        appends to its slot of ``cache``."""
        b, s, _ = x.shape
        n = b * s
        positions = cache.get_query_positions(n)
        q = apply_rope(self.q_norm(self.q_proj(x).reshape(n, self.h_q, self.d)), positions, *self.rope)
        if self.reuse:
            if shared_kv is None:
                raise ValueError("a KV-shared layer needs its producer's K/V")
            k, v = shared_kv
        else:
            k_raw = self.k_proj(x).reshape(n, self.h_kv, self.d)
            k = apply_rope(self.k_norm(k_raw), positions, *self.rope)
            v_raw = self.v_proj(x).reshape(n, self.h_kv, self.d) if hasattr(self, "v_proj") else k_raw
            v = self.v_norm(v_raw)
        qkv = op.concat([pad_kv_heads(q, self.h_q, self.cache_dim),
                         pad_kv_heads(k, self.cache_heads, self.cache_dim),
                         pad_kv_heads(v, self.cache_heads, self.cache_dim)], dim=1)
        qkv = qkv.reshape(b, s, self.h_q + 2 * self.cache_heads, self.cache_dim)
        out = cache.attention_with_fused_qkv(self.layer_id, qkv, self.h_q, self.sm_scale)
        out = leading_columns(out, self.d).reshape(b, s, self.h_q * self.d)
        return self.o_proj(out), (k, v)


class Gemma4Router(nn.Module):
    """Top-k expert router: ``softmax(proj(rms_norm(x) * scale / sqrt(H)))``, top-k renormalized,
    times ``per_expert_scale`` (``Gemma4TextRouter``)."""

    def __init__(self, config: Gemma4Config, dtype: str):
        h = config.hidden_size
        self.top_k = config.top_k_experts
        self.norm = RMSNorm(h, config.rms_norm_eps, "float32", with_scale=False)
        self.proj = nn.Linear(h, config.num_experts, bias=False, dtype=dtype)
        self.scale = nn.Parameter((h,), dtype)
        self.per_expert_scale = nn.Parameter((config.num_experts,), dtype)
        self.dtype = dtype
        self.root = h ** -0.5

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(n, hidden)`` float32 -> float32 weights ``(n, k)`` and int32 expert ids ``(n, k)``."""
        h = self.norm(x) * self.scale.astype("float32") * self.root
        probs = op.softmax(self.proj(h.astype(self.dtype)).astype("float32"), axis=-1)
        weights, index = op.topk(probs, self.top_k, axis=-1, ret_type="both", largest=True, dtype="int32")
        weights = weights / op.sum(weights, axis=-1, keepdims=True)
        scale = op.take(self.per_expert_scale.astype("float32"), index.reshape(-1), axis=0)
        return weights * scale.reshape(*index.shape), index


class Gemma4Experts(nn.Module):
    """Routed experts (``Gemma4TextExperts``): ``gate_up_proj`` ``(E, 2I, H)`` whose first ``I``
    rows are the gate, ``down_proj`` ``(E, H, I)``; each token sums its top-k experts'
    ``down(gelu_tanh(gate x) * up x)`` weighted by the router.  Our names add ``.weight``
    (``experts.gate_up_proj.weight``) to transformers' parameters."""

    def __init__(self, config: Gemma4Config, dtype: str):
        e, h, i = config.num_experts, config.hidden_size, config.moe_intermediate_size
        self.inter = i
        self.gate_up_proj = ExpertWeights(e, 2 * i, h, dtype)
        self.down_proj = ExpertWeights(e, h, i, dtype)

    def forward(self, x: Tensor, weights: Tensor, index: Tensor) -> Tensor:
        """``(n, H)``, float32 ``(n, k)`` weights, int32 ``(n, k)`` ids -> float32 ``(n, H)``."""
        gate_up = self.gate_up_proj.gathered_matmul(x, index)
        act = op.gelu(leading_columns(gate_up, self.inter), approximate="tanh") * trailing_columns(gate_up, self.inter)
        down = self.down_proj.gathered_matmul(act, index)  # (n, k, H)
        return op.sum(down * weights.reshape(*weights.shape, 1), axis=1)


class Gemma4LayerBody(nn.Module):
    """A Gemma 4 decoder layer's parameters and everything after its attention
    (:meth:`after_attention`); ``attention`` makes its ``self_attn`` (``(config, layer_id,
    dtype)``).  The subclasses' ``forward`` differ in what the attention reads."""

    attention: Callable[..., nn.Module]

    def __init__(self, config: Gemma4Config, layer_id: int, dtype: str):
        h, eps = config.hidden_size, config.rms_norm_eps
        self.dtype = dtype
        self.self_attn = type(self).attention(config, layer_id, dtype)
        self.mlp = GatedMLP(h, config.layer_intermediate_size(layer_id), dtype)
        self.input_layernorm = RMSNorm(h, eps, dtype)
        self.post_attention_layernorm = RMSNorm(h, eps, dtype)
        self.pre_feedforward_layernorm = RMSNorm(h, eps, dtype)
        self.post_feedforward_layernorm = RMSNorm(h, eps, dtype)
        self.layer_scalar = nn.Parameter((1,), dtype)
        self.moe = config.enable_moe_block
        if self.moe:
            self.router = Gemma4Router(config, dtype)
            self.experts = Gemma4Experts(config, dtype)
            self.post_feedforward_layernorm_1 = RMSNorm(h, eps, dtype)
            self.post_feedforward_layernorm_2 = RMSNorm(h, eps, dtype)
            self.pre_feedforward_layernorm_2 = RMSNorm(h, eps, dtype)
        self.ple = config.hidden_size_per_layer_input > 0
        if self.ple:
            p = config.hidden_size_per_layer_input
            self.per_layer_input_gate = nn.Linear(h, p, bias=False, dtype=dtype)
            self.per_layer_projection = nn.Linear(p, h, bias=False, dtype=dtype)
            self.post_per_layer_input_norm = RMSNorm(h, eps, dtype)

    def after_attention(self, x: Tensor, attn: Tensor, per_layer_input: Tensor | None) -> Tensor:
        """The layer from the attention output ``attn`` on: residual adds, MLP (and experts),
        per-layer-embedding block and ``layer_scalar``; float32 ``(b, s, hidden)`` stream."""
        x = x + self.post_attention_layernorm(attn, "float32")
        ffn = self.mlp(self.pre_feedforward_layernorm(x))
        if self.moe:
            b, s, h = x.shape
            flat = x.reshape(b * s, h)
            weights, index = self.router(flat)
            routed = self.experts(self.pre_feedforward_layernorm_2(flat), weights, index)
            ffn = (self.post_feedforward_layernorm_1(ffn, "float32")
                   + self.post_feedforward_layernorm_2(routed.reshape(b, s, h), "float32")).astype(self.dtype)
        x = x + self.post_feedforward_layernorm(ffn, "float32")
        if self.ple:
            gate = op.gelu(self.per_layer_input_gate(x.astype(self.dtype)), approximate="tanh") * per_layer_input
            x = x + self.post_per_layer_input_norm(self.per_layer_projection(gate), "float32")
        return x * self.layer_scalar.astype("float32")


class Gemma4DecoderLayer(Gemma4LayerBody):
    """One Gemma 4 decoder layer (see the module docstring for the order of operations)."""

    attention = Gemma4Attention

    def forward(self, x: Tensor, per_layer_input: Tensor | None, cache: PagedKVCache,
                shared_kv: tuple[Tensor, Tensor] | None):
        """float32 ``(b, s, hidden)`` residual stream -> the same updated, and this layer's K/V."""
        attn, kv = self.self_attn(self.input_layernorm(x), cache, shared_kv)
        return self.after_attention(x, attn, per_layer_input), kv


class Gemma4TextModel(nn.Module):
    """Embeddings (token and per-layer), decoder stack and final norm."""

    def __init__(self, config: Gemma4Config, dtype: str):
        self.config = config
        self.dtype = dtype
        h, layers = config.hidden_size, config.num_hidden_layers
        self.embed_tokens = TiedEmbedding(config.vocab_size, h, dtype)
        self.layers = nn.ModuleList([Gemma4DecoderLayer(config, i, dtype) for i in range(layers)])
        self.norm = RMSNorm(h, config.rms_norm_eps, dtype)
        self.ple = config.hidden_size_per_layer_input
        if self.ple:
            self.embed_tokens_per_layer = TiedEmbedding(config.vocab_size_per_layer_input, layers * self.ple, dtype)
            self.per_layer_model_projection = nn.Linear(h, layers * self.ple, bias=False, dtype=dtype)
            self.per_layer_projection_norm = RMSNorm(self.ple, config.rms_norm_eps, dtype)
        modes = config.kv_sharing_modes()
        self.producer = {i: config.store_layer(config.layer_types[i]) for i in range(layers) if modes[i] == "reuse"}
        self.mtp_layers = (config.store_layer(SLIDING), config.store_layer(FULL))

    def embed_width(self) -> int:
        """Width of ``embed``'s output: ``H``, or ``H + L * P`` with per-layer embeddings."""
        return self.config.hidden_size + self.config.num_hidden_layers * self.ple

    def embed(self, input_ids: Tensor) -> Tensor:
        """``(n,)`` int32 -> ``(n, embed_width)`` packed input embeddings (module docstring)."""
        c = self.config
        tokens = self.embed_tokens(input_ids) * Tensor.from_const(math.sqrt(c.hidden_size)).astype(self.dtype)
        if not self.ple:
            return tokens
        per_layer = self.embed_tokens_per_layer(input_ids) * Tensor.from_const(math.sqrt(self.ple)).astype(self.dtype)
        return op.concat([tokens, per_layer], dim=-1)

    def _per_layer_inputs(self, x: Tensor, packed: Tensor) -> Tensor:
        """``(b, s, H)`` embeddings, ``(b, s, L*P)`` token part -> ``(b, s, L, P)`` PLE inputs:
        ``(rms_norm(proj(x) / sqrt(H)) + token part) / sqrt(2)`` (``project_per_layer_inputs``)."""
        b, s, _ = x.shape
        c = self.config
        proj = self.per_layer_model_projection(x) * Tensor.from_const(c.hidden_size ** -0.5).astype(self.dtype)
        proj = self.per_layer_projection_norm(proj.reshape(b, s, c.num_hidden_layers, self.ple))
        both = proj + packed.reshape(b, s, c.num_hidden_layers, self.ple)
        return both * Tensor.from_const(2.0 ** -0.5).astype(self.dtype)

    def forward(self, packed: Tensor, cache: PagedKVCache):
        """``(b, s, embed_width)`` -> ``(b, s, hidden)`` normed hidden states (model dtype) and the
        K/V ``(b*s, h_kv, d)`` of the MTP context layers (last sliding, last full)."""
        h = self.config.hidden_size
        x = leading_columns(packed, h)
        per_layer = self._per_layer_inputs(x, trailing_columns(packed, h)) if self.ple else None
        stream = x.astype("float32")
        kvs: dict[int, tuple[Tensor, Tensor]] = {}
        for i, layer in enumerate(self.layers):
            ple_i = None if per_layer is None else layer_slice(per_layer, i)
            shared = kvs[self.producer[i]] if i in self.producer else None
            stream, kvs[i] = layer(stream, ple_i, cache, shared)
        return self.norm(stream), [kvs[i] for i in self.mtp_layers]


class Gemma4ForCausalLM(CausalLM):
    """Gemma 4 with MLC LLM's entry points (:class:`~pipeline.models.base.CausalLM`, inputs
    ``W = embed_width`` wide) plus the two that feed the ``gemma4_assistant`` drafter."""

    ENTRY_POINTS = ("embed", "prefill", "decode", "batch_prefill", "batch_decode", "batch_verify",
                    "prefill_to_mtp_context", "batch_verify_to_mtp_context", "get_logits", "create_paged_kv_cache")

    def __init__(self, config: Gemma4Config, dtype: str = "float32"):
        super().__init__(config, dtype, Gemma4TextModel(config, dtype))

    def embed_width(self) -> int:
        """``H``, or ``H + L * P`` with per-layer embeddings (module docstring)."""
        return self.model.embed_width()

    def final_hidden_states(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache) -> Tensor:
        """``(b, s, W)`` -> ``(b, s, hidden)`` final hidden states, through the cache."""
        hidden, _ = self.model(input_embeds, paged_kv_cache)
        return hidden

    def prefill_to_mtp_context(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, s, W)`` -> ``(1, 1, vocab)`` logits and ``(1, 1, hidden)`` final hidden state of the
        last token, and the MTP context K/V ``[k_sliding, v_sliding, k_full, v_full]`` of all
        ``s`` tokens, each ``(s, h_kv, d)``."""
        hidden, kvs = self.model(input_embed, paged_kv_cache)
        (k_s, v_s), (k_f, v_f) = kvs
        last = last_position(hidden)
        return (self.get_logits(last), last, k_s, v_s, k_f, v_f), paged_kv_cache

    def batch_verify_to_mtp_context(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, s, W)`` -> ``(1, s, vocab)`` logits, ``(1, s, hidden)`` final hidden states and
        the MTP context K/V ``[k_sliding, v_sliding, k_full, v_full]``, each ``(s, h_kv, d)``."""
        hidden, kvs = self.model(input_embeds, paged_kv_cache)
        (k_s, v_s), (k_f, v_f) = kvs
        return (self.get_logits(hidden), hidden, k_s, v_s, k_f, v_f), paged_kv_cache

    def kv_cache_shape(self) -> tuple[int, int, int, int, int]:
        """``(layers, query heads, KV heads, head_dim, sliding_window)`` of the paged KV cache: one
        cache for all layers, padded to the largest head dimension and KV-head count."""
        c = self.config
        return c.num_hidden_layers, c.num_attention_heads, c.cache_kv_heads, c.cache_head_dim, c.sliding_window

    def entry_specs(self) -> dict[str, dict]:
        """MLC's entry points and the two that return the MTP context."""
        return {**super().entry_specs(),
                "prefill_to_mtp_context": packed_method(input_embed=self.input_spec(), paged_kv_cache=cache_spec()),
                "batch_verify_to_mtp_context": packed_method(input_embeds=self.input_spec(),
                                                             paged_kv_cache=cache_spec())}
