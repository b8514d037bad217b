"""Gemma 3 text model as a ``tvm.relax.frontend.nn`` module over TVM's paged KV cache.

Follows transformers' ``models/gemma3/modeling_gemma3.py`` (Gemma3ForCausalLM):
embeddings scaled by ``sqrt(hidden_size)``; per layer ``x + post_attention_norm(attn(input_norm(x)))``
then ``x + post_feedforward_norm(mlp(pre_feedforward_norm(x)))``; QK-norm before RoPE; RoPE base
``rope_local_base_freq`` (10k) on sliding layers and ``rope_theta`` (1e6, optionally linearly
scaled) on full layers; attention scale ``query_pre_attn_scalar ** -0.5``; exact sliding window
on sliding layers (:mod:`pipeline.kernels.attention`); tied head, float32 logits,
optional final logit soft-capping.

RMSNorm weights are stored as the multiplier itself, i.e. ``1 + w`` of transformers'
``Gemma3RMSNorm``: the loaders add the 1 (GGUF files already hold it).

The residual stream is float32 in every scheme: Gemma's exceeds float16's range (measured
1.04e5 after layer 14 of Gemma 3 270M, against float16's 65504), so float16 schemes compute the
projections, attention and MLP in float16 and add their normalized outputs to a float32 stream.

Exported functions and signatures follow MLC LLM (:class:`pipeline.models.base.CausalLM`:
``embed``, ``prefill``, ``decode``, ``batch_prefill``, ``batch_decode``, ``batch_verify``,
``get_logits``, ``create_paged_kv_cache``), plus ``*_to_last_hidden_states`` for drafters.
"""

from __future__ import annotations

import math

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ...kernels.attention import sliding_sm_scale
from ..base import CausalLM, cache_spec, packed_method
from ..layer_types import SLIDING
from ..layers import GatedMLP, RMSNorm, TiedEmbedding, apply_rope
from .config import Gemma3Config


class Gemma3Attention(nn.Module):
    """Grouped-query attention with QK-norm, per-layer RoPE base and exact sliding window."""

    def __init__(self, config: Gemma3Config, layer_id: int, dtype: str):
        self.layer_id = layer_id
        self.sliding = config.layer_types[layer_id] == SLIDING
        self.h_q, self.h_kv, self.d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.rope_theta = config.rope_local_base_freq if self.sliding else config.rope_theta
        self.rope_scaling = 1.0 if self.sliding else config.rope_scaling_factor
        self.sm_scale = sliding_sm_scale(config.query_pre_attn_scalar**-0.5, self.sliding)
        h = config.hidden_size
        self.q_proj = nn.Linear(h, self.h_q * self.d, bias=False, dtype=dtype)
        self.k_proj = nn.Linear(h, self.h_kv * self.d, bias=False, dtype=dtype)
        self.v_proj = nn.Linear(h, self.h_kv * self.d, bias=False, dtype=dtype)
        self.o_proj = nn.Linear(self.h_q * self.d, h, bias=False, dtype=dtype)
        self.q_norm = RMSNorm(self.d, config.rms_norm_eps, dtype)
        self.k_norm = RMSNorm(self.d, config.rms_norm_eps, dtype)

    def forward(self, x: Tensor, cache: PagedKVCache) -> Tensor:
        """``(b, s, hidden)`` -> ``(b, s, hidden)``; appends this layer's K/V to ``cache``."""
        b, s, _ = x.shape
        n = b * s
        q = self.q_norm(self.q_proj(x).reshape(n, self.h_q, self.d))
        k = self.k_norm(self.k_proj(x).reshape(n, self.h_kv, self.d))
        v = self.v_proj(x).reshape(n, self.h_kv, self.d)
        positions = cache.get_query_positions(n)
        q = apply_rope(q, positions, self.rope_theta, self.rope_scaling)
        k = apply_rope(k, positions, self.rope_theta, self.rope_scaling)
        qkv = op.concat([q, k, v], dim=1).reshape(b, s, self.h_q + 2 * self.h_kv, self.d)
        out = cache.attention_with_fused_qkv(self.layer_id, qkv, self.h_q, self.sm_scale)
        return self.o_proj(out.reshape(b, s, self.h_q * self.d))


class Gemma3DecoderLayer(nn.Module):
    """Sandwich-norm decoder block: pre- and post-norms around attention and MLP."""

    def __init__(self, config: Gemma3Config, layer_id: int, dtype: str):
        h, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = Gemma3Attention(config, layer_id, dtype)
        self.mlp = GatedMLP(h, config.intermediate_size, dtype)
        self.input_layernorm = RMSNorm(h, eps, dtype)
        self.post_attention_layernorm = RMSNorm(h, eps, dtype)
        self.pre_feedforward_layernorm = RMSNorm(h, eps, dtype)
        self.post_feedforward_layernorm = RMSNorm(h, eps, dtype)

    def forward(self, x: Tensor, cache: PagedKVCache) -> Tensor:
        """``(b, s, hidden)`` float32 residual stream -> the same, updated."""
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cache), "float32")
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)), "float32")


class Gemma3TextModel(nn.Module):
    """Embedding, decoder stack and final norm."""

    def __init__(self, config: Gemma3Config, dtype: str):
        self.hidden_size = config.hidden_size
        self.dtype = dtype
        self.embed_tokens = TiedEmbedding(config.vocab_size, config.hidden_size, dtype)
        self.layers = nn.ModuleList([Gemma3DecoderLayer(config, i, dtype) for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)

    def embed(self, input_ids: Tensor) -> Tensor:
        """``(seq_len,)`` int32 -> ``(seq_len, hidden)`` embeddings scaled by ``sqrt(hidden)``."""
        return self.embed_tokens(input_ids) * Tensor.from_const(math.sqrt(self.hidden_size)).astype(self.dtype)

    def forward(self, x: Tensor, cache: PagedKVCache) -> Tensor:
        """``(b, s, hidden)`` embeddings -> ``(b, s, hidden)`` normed hidden states (model dtype)."""
        x = x.astype("float32")
        for layer in self.layers:
            x = layer(x, cache)
        return self.norm(x)


class Gemma3ForCausalLM(CausalLM):
    """Gemma 3 with MLC LLM's entry points (:class:`~pipeline.models.base.CausalLM`) plus the
    hidden-state ones its MTP drafter reads."""

    ENTRY_POINTS = ("embed", "prefill", "prefill_to_last_hidden_states", "decode", "batch_prefill", "batch_decode",
                    "batch_verify", "batch_verify_to_last_hidden_states", "get_logits", "create_paged_kv_cache")

    def __init__(self, config: Gemma3Config, dtype: str = "float32"):
        super().__init__(config, dtype, Gemma3TextModel(config, dtype))

    def final_hidden_states(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache) -> Tensor:
        """``(b, s, hidden)`` -> ``(b, s, hidden)`` final hidden states, through the cache."""
        return self.model(input_embeds, paged_kv_cache)

    def prefill_to_last_hidden_states(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, s, hidden)`` -> all ``(1, s, hidden)`` final hidden states, and the cache."""
        return self.model(input_embed, paged_kv_cache), paged_kv_cache

    def batch_verify_to_last_hidden_states(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, s, hidden)`` -> ``(1, s, hidden)`` final hidden states (for MTP drafters)."""
        return self.model(input_embeds, paged_kv_cache), paged_kv_cache

    def kv_cache_shape(self) -> tuple[int, int, int, int, int]:
        """``(layers, query heads, KV heads, head_dim, sliding_window)`` of the paged KV cache."""
        c = self.config
        return c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.sliding_window

    def entry_specs(self) -> dict[str, dict]:
        """MLC's entry points and the two that return hidden states."""
        return {**super().entry_specs(),
                "prefill_to_last_hidden_states": packed_method(input_embed=self.input_spec(),
                                                               paged_kv_cache=cache_spec()),
                "batch_verify_to_last_hidden_states": packed_method(input_embeds=self.input_spec(),
                                                                    paged_kv_cache=cache_spec())}
