"""Tiny random Gemma 4 checkpoints made offline with transformers 5.24, one per released shape.

Each config keeps the features of the model it stands for at toy sizes: sliding window 8 (so
16-token prompts cross it), head_dim 16 on sliding and 32 on full layers, partial RoPE on full
layers.  Norm weights, layer scalars and router scales are randomized around their initial
values so that a wrong convention shows.
"""

from __future__ import annotations

from pathlib import Path

BASE = dict(
    vocab_size=96, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, global_head_dim=32, sliding_window=8, max_position_embeddings=512,
    hidden_size_per_layer_input=0, vocab_size_per_layer_input=0, final_logit_softcapping=30.0,
    initializer_range=0.1,
)

SHAPES = {
    # E2B: 4 sliding : 1 full, per-layer embeddings, KV sharing, double-wide MLP on shared layers.
    "e2b": dict(num_hidden_layers=7, num_key_value_heads=1,
                layer_types=["sliding_attention"] * 4 + ["full_attention"] + ["sliding_attention", "full_attention"],
                hidden_size_per_layer_input=8, vocab_size_per_layer_input=96, num_kv_shared_layers=2,
                use_double_wide_mlp=True),
    # E4B: 5 sliding : 1 full, per-layer embeddings, KV sharing.
    "e4b": dict(num_hidden_layers=8,
                layer_types=["sliding_attention"] * 5 + ["full_attention"] + ["sliding_attention", "full_attention"],
                hidden_size_per_layer_input=8, vocab_size_per_layer_input=96, num_kv_shared_layers=2),
    # 26B-A4B: mixture of experts beside the dense MLP, keys as values on full layers.
    "26b-a4b": dict(num_hidden_layers=6, enable_moe_block=True, num_experts=4, top_k_experts=2,
                    moe_intermediate_size=32, attention_k_eq_v=True, num_global_key_value_heads=1),
    # 31B: keys as values on full layers, fewer global KV heads.
    "31b": dict(num_hidden_layers=6, attention_k_eq_v=True, num_global_key_value_heads=1),
}


def tiny_gemma4_config(shape: str):
    """The transformers ``Gemma4TextConfig`` for ``shape`` (a key of :data:`SHAPES`)."""
    from transformers import Gemma4TextConfig

    return Gemma4TextConfig(**{**BASE, **SHAPES[shape]}, attn_implementation="eager")


def randomize_scales(model, seed: int) -> None:
    """Move norm weights, layer scalars and router scales away from their initial ones."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith(("norm.weight", "layer_scalar", "router.scale", "per_expert_scale")):
                tensor.copy_(1.0 + 0.3 * torch.randn(tensor.shape, generator=gen))


def make_tiny_gemma4(directory: Path, shape: str, seed: int = 0):
    """Save a random tiny ``Gemma4ForCausalLM`` of ``shape`` (float32 safetensors, sharded) and a word
    tokenizer into ``directory``; return the transformers model (eval mode)."""
    import torch
    from transformers import Gemma4ForCausalLM

    from tests.helpers.gemma3 import write_word_tokenizer

    torch.manual_seed(seed)
    model = Gemma4ForCausalLM(tiny_gemma4_config(shape)).eval()
    randomize_scales(model, seed)
    model.save_pretrained(directory, max_shard_size="150KB", safe_serialization=True)  # sharded
    write_word_tokenizer(directory, model.config.vocab_size)
    return model


def make_tiny_assistant(directory: Path, base_config, seed: int = 0):
    """Save a random tiny ``Gemma4AssistantForCausalLM`` drafting for a base of ``base_config``
    (its attention shapes match the base's last sliding and full layers), with the centroid head
    on (8 clusters of 12 tokens, top 2) and a random token ordering; return it (eval mode)."""
    import torch
    from transformers import Gemma4AssistantConfig, Gemma4AssistantForCausalLM, Gemma4TextConfig

    torch.manual_seed(seed + 1)
    layers = base_config.per_layer_config
    sliding_kv, full_kv = layers[0].num_key_value_heads, layers[base_config.num_hidden_layers - 1].num_key_value_heads
    text = Gemma4TextConfig(
        vocab_size=base_config.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=sliding_kv, head_dim=16, global_head_dim=32,
        sliding_window=base_config.sliding_window, layer_types=["sliding_attention", "full_attention"],
        hidden_size_per_layer_input=0, vocab_size_per_layer_input=0, attention_k_eq_v=base_config.attention_k_eq_v,
        num_global_key_value_heads=full_kv if base_config.attention_k_eq_v else None, initializer_range=0.1)
    config = Gemma4AssistantConfig(text_config=text, backbone_hidden_size=base_config.hidden_size,
                                   use_ordered_embeddings=True, num_centroids=8, centroid_intermediate_top_k=2,
                                   attn_implementation="eager")
    model = Gemma4AssistantForCausalLM(config).eval()
    randomize_scales(model, seed + 1)
    with torch.no_grad():
        model.masked_embedding.token_ordering.copy_(torch.randperm(base_config.vocab_size))
    model.save_pretrained(directory, safe_serialization=True)
    return model
