"""Tiny random Gemma 3 checkpoints made offline with transformers, and their word-level tokenizer."""

from __future__ import annotations

from pathlib import Path

TINY = dict(
    vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, sliding_window=8, query_pre_attn_scalar=24,
    layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
    max_position_embeddings=512, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
)

# The tiny Gemma 3 as the pipeline's own config (two layers: one sliding, one full), for compiling
# without a checkpoint.
TINY_CONFIG = dict(
    vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
    context_window_size=256, prefill_chunk_size=64,
)


def write_word_tokenizer(directory: Path, vocab_size: int) -> None:
    """A whitespace word-level ``tokenizer.json`` over ``w0 .. wN`` (ids 0-3 special)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {name: i for i, name in enumerate(["<pad>", "<eos>", "<bos>", "<unk>"])}
    vocab.update({f"w{i}": i for i in range(4, vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(directory / "tokenizer.json"))


def make_tiny_gemma3(directory: Path, seed: int = 0, shard: bool = True, **overrides):
    """Save a random tiny ``Gemma3ForCausalLM`` (float32, sharded safetensors) into ``directory``.

    Norm weights are randomized too (transformers initializes them to zero), so that the
    ``1 + w`` convention is exercised.  Returns the transformers model (eval mode).
    """
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(**{**TINY, **overrides}, attn_implementation="eager")
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.3)
    model.save_pretrained(directory, max_shard_size="100KB" if shard else "10GB", safe_serialization=True)
    write_word_tokenizer(directory, config.vocab_size)
    return model
