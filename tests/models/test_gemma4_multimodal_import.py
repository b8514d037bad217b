"""Importing the text model out of a multimodal Gemma 4 checkpoint (``Gemma4ForConditionalGeneration``):
the language model's tensors arrive under our names, the vision and audio towers are skipped
and the log says which."""

from __future__ import annotations

import logging

import numpy as np

from pipeline.models.importer import import_weights
from pipeline.models.registry import get_family
from tests.helpers.gemma4 import tiny_gemma4_config


def test_text_weights_imported_towers_skipped_and_reported(tmp_path, caplog):
    import torch
    from transformers import Gemma4AudioConfig, Gemma4Config, Gemma4ForConditionalGeneration, Gemma4VisionConfig

    torch.manual_seed(0)
    vision = Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=16)
    audio = Gemma4AudioConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, output_proj_dims=32)
    model = Gemma4ForConditionalGeneration(Gemma4Config(
        text_config=tiny_gemma4_config("e2b").to_dict(), vision_config=vision.to_dict(), audio_config=audio.to_dict()))
    model.save_pretrained(tmp_path, safe_serialization=True)

    with caplog.at_level(logging.WARNING):
        config, weights = import_weights(get_family("gemma4"), "hf-safetensors", tmp_path, {}, progress=False)
    text = {f"model.{k}": v.numpy() for k, v in model.model.language_model.state_dict().items()
            if not k.startswith("rotary_emb")}
    assert sorted(weights) == sorted(text)
    for name, array in text.items():
        np.testing.assert_array_equal(weights[name], array, err_msg=name)
    assert config.hidden_size_per_layer_input == 8 and config.num_kv_shared_layers == 2
    message = " ".join(r.getMessage() for r in caplog.records)
    for tower in ("model.vision_tower.*", "model.audio_tower.*", "model.embed_vision.*", "model.embed_audio.*"):
        assert tower in message
