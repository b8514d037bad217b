"""A tiny GGUF file written with gguf-py, named as llama.cpp names Gemma 3's tensors."""

from __future__ import annotations

import gguf
import numpy as np


def write_gguf(path, arch="gemma3", layers=1, bad_shape=False):
    """A tiny GGUF with float32 tensors named as llama.cpp names Gemma 3's."""
    writer = gguf.GGUFWriter(str(path), arch)
    hidden, heads, kv, head_dim, ffn, vocab = 64, 2, 1, 32, 128, 40
    writer.add_block_count(layers)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_sliding_window(8)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"t{i}" for i in range(vocab)])
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,)}
    for i in range(layers):
        shapes.update({
            f"blk.{i}.attn_q.weight": (heads * head_dim + (8 if bad_shape else 0), hidden),
            f"blk.{i}.attn_k.weight": (kv * head_dim, hidden), f"blk.{i}.attn_v.weight": (kv * head_dim, hidden),
            f"blk.{i}.attn_output.weight": (hidden, heads * head_dim),
            f"blk.{i}.attn_q_norm.weight": (head_dim,), f"blk.{i}.attn_k_norm.weight": (head_dim,),
            f"blk.{i}.attn_norm.weight": (hidden,), f"blk.{i}.post_attention_norm.weight": (hidden,),
            f"blk.{i}.ffn_norm.weight": (hidden,), f"blk.{i}.post_ffw_norm.weight": (hidden,),
            f"blk.{i}.ffn_gate.weight": (ffn, hidden), f"blk.{i}.ffn_up.weight": (ffn, hidden),
            f"blk.{i}.ffn_down.weight": (hidden, ffn),
        })
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
