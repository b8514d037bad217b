"""Shared fixtures: tiny random Gemma 3 checkpoints made offline with transformers, and a stage
cache private to the test session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY = dict(
    vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, sliding_window=8, query_pre_attn_scalar=24,
    layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
    max_position_embeddings=512, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
)


@pytest.fixture(scope="session", autouse=True)
def private_stage_cache(tmp_path_factory):
    """Keep build stages of the tests out of the user's cache."""
    os.environ["MLC_MTP_CACHE"] = str(tmp_path_factory.mktemp("stage-cache"))


def write_word_tokenizer(directory: Path, vocab_size: int) -> None:
    """A whitespace word-level ``tokenizer.json`` over ``w0 .. wN`` (ids 0-3 special)."""
    from tokenizers import Tokenizer, models, pre_tokenizers  # pylint: disable=import-outside-toplevel

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
    import torch  # pylint: disable=import-outside-toplevel
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig  # pylint: disable=import-outside-toplevel

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


def write_config(path: Path, source: Path, fmt: str = "hf-safetensors", **extra) -> Path:
    """Write a pipeline YAML for ``source`` and return its path."""
    import yaml  # pylint: disable=import-outside-toplevel

    data = {"name": "tiny", "model": {"family": "gemma3", "overrides": {"context_window_size": 256,
                                                                      "prefill_chunk_size": 64}},
            "source": {"format": fmt, "path": str(source)}, "quantization": "q0f32", "targets": ["cpu"],
            "output": str(path.parent / "out")}
    data.update(extra)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory):
    """A tiny random Gemma 3 built end to end (q0f32, CPU) and its transformers twin."""
    from pipeline.build import build  # pylint: disable=import-outside-toplevel
    from pipeline.config import load_config  # pylint: disable=import-outside-toplevel

    root = tmp_path_factory.mktemp("tiny")
    hf_model = make_tiny_gemma3(root / "hf")
    assert len(json.loads((root / "hf" / "model.safetensors.index.json").read_text())["weight_map"]) > 0
    config = load_config(write_config(root / "tiny.yaml", root / "hf"))
    result = build(config, output=root / "pkg", progress=False, say=lambda _: None)
    return result.output, hf_model
