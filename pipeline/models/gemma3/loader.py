"""Where Gemma 3's parameters come from: source tensor names -> ours, and config from metadata.

Our parameter names are transformers' (``model.layers.N.self_attn.q_proj.weight``, ...).  RMSNorm
weights are stored as the full multiplier ``1 + w``: a Hugging Face checkpoint holds ``w``
(``Gemma3RMSNorm`` computes ``x * (1 + w)``), a GGUF file holds ``1 + w`` already (llama.cpp's
``convert_hf_to_gguf.py`` adds 1 to Gemma norm weights and its graph multiplies plainly).
GGUF tensor names: llama.cpp ``gguf-py/gguf/constants.py`` (``MODEL_ARCH.GEMMA3``).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ...sources.gguf_file import GGUFSource
from .config import Gemma3Config

# GGUF name template -> our name template ({i} = layer index).
GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.post_attention_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
    "blk.{i}.post_ffw_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}

# Prefixes under which Hugging Face checkpoints keep the text model.
HF_PREFIXES = ("model.language_model.", "language_model.model.", "model.")
# Towers of multimodal checkpoints that the text model does not use.
HF_SKIPPED = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")


def _expand(templates: dict[str, str], num_layers: int) -> dict[str, str]:
    table = {}
    for src, dst in templates.items():
        if "{i}" in src:
            for i in range(num_layers):
                table[src.format(i=i)] = dst.format(i=i)
        else:
            table[src] = dst
    return table


def gguf_name_map(num_layers: int) -> dict[str, str]:
    """GGUF tensor name -> our parameter name, for ``num_layers`` layers."""
    return _expand(GGUF_NAMES, num_layers)


def hf_name(source_name: str) -> str | None:
    """Our name for a Hugging Face tensor name, or ``None`` for a tensor the text model skips."""
    if source_name.startswith(HF_SKIPPED) or source_name == "lm_head.weight":
        return None  # lm_head is tied to the embedding in Gemma 3
    for prefix in HF_PREFIXES:
        if source_name.startswith(prefix):
            return "model." + source_name[len(prefix):]
    return None


def hf_transform(our_name: str, array: np.ndarray) -> np.ndarray:
    """Turn a Hugging Face tensor into ours: RMSNorm weights ``w`` become ``1 + w``."""
    return array + np.float32(1.0) if re.search(r"norm\.weight$", our_name) else array


def config_from_gguf(source: GGUFSource, **overrides) -> Gemma3Config:
    """Build a :class:`Gemma3Config` from GGUF metadata (``gemma3.*`` keys).

    GGUF keeps no layer pattern, local RoPE base or query scale for Gemma 3; llama.cpp hard-codes
    them (``src/llama-model.cpp``: every 6th layer global, local base 10000, query scale
    ``head_dim``), and so do we.

    The caller has checked ``general.architecture`` (:mod:`pipeline.models.importer`).

    Raises:
        PipelineError: a required key is missing.
    """
    n_layers = int(source.require("gemma3.block_count"))
    head_dim = int(source.require("gemma3.attention.key_length"))
    vocab = len(source.require("tokenizer.ggml.tokens"))
    values: dict[str, Any] = dict(
        vocab_size=vocab,
        hidden_size=int(source.require("gemma3.embedding_length")),
        intermediate_size=int(source.require("gemma3.feed_forward_length")),
        num_hidden_layers=n_layers,
        num_attention_heads=int(source.require("gemma3.attention.head_count")),
        num_key_value_heads=int(source.require("gemma3.attention.head_count_kv")),
        head_dim=head_dim,
        sliding_window=int(source.require("gemma3.attention.sliding_window")),
        layer_types=Gemma3Config.default_layer_types(n_layers),
        rms_norm_eps=float(source.require("gemma3.attention.layer_norm_rms_epsilon")),
        rope_theta=float(source.metadata.get("gemma3.rope.freq_base", 1_000_000.0)),
        rope_scaling_factor=float(source.metadata.get("gemma3.rope.scaling.factor", 1.0)),
        query_pre_attn_scalar=float(head_dim),
        context_window_size=int(source.metadata.get("gemma3.context_length", 32768)),
        bos_token_id=int(source.metadata.get("tokenizer.ggml.bos_token_id", 2)),
        eos_token_id=[int(source.metadata.get("tokenizer.ggml.eos_token_id", 1)), 106],
        pad_token_id=int(source.metadata.get("tokenizer.ggml.padding_token_id", 0)),
    )
    values.update(overrides)
    return Gemma3Config(**values)
