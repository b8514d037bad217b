"""Hyper-parameters of a Gemma 4 MTP drafter (``gemma4_assistant``).

Source: transformers 5.24 ``Gemma4AssistantConfig`` (its fields, its Gemma 4 ``text_config`` and
``validate_architecture``); the drafter module is :mod:`pipeline.models.gemma4_assistant.model`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..gemma4.config import Gemma4Config


@dataclasses.dataclass
class Gemma4AssistantConfig(Gemma4Config):
    """A ``gemma4_assistant`` drafter: its Gemma 4 text config (every layer KV-shared) plus the
    fields of ``Gemma4AssistantConfig`` in transformers."""

    backbone_hidden_size: int = 1536
    use_ordered_embeddings: bool = False
    num_centroids: int = 2048
    centroid_intermediate_top_k: int = 32

    model_type = "gemma4_assistant"

    def kv_sharing_modes(self) -> list[str | None]:
        """Every layer reads the base model's K/V."""
        return ["reuse"] * self.num_hidden_layers

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], **overrides: Any) -> Gemma4AssistantConfig:
        """Read a ``gemma4_assistant`` ``config.json`` dict.

        Raises:
            KeyError: a required key is missing.
            ValueError: a feature the assistant cannot have (per-layer embeddings, MoE, double-wide
                MLP), as transformers' ``validate_architecture`` says.
        """
        text = dict(cfg["text_config"])
        for key, off in (("hidden_size_per_layer_input", 0), ("enable_moe_block", False),
                         ("use_double_wide_mlp", False)):
            if text.get(key, off) not in (off, None):
                raise ValueError(f"text_config.{key} must be {off} for a gemma4_assistant, got {text[key]}")
        text["hidden_size_per_layer_input"] = 0
        text["num_kv_shared_layers"] = text["num_hidden_layers"]
        values = Gemma4Config.hf_values(text)
        values.update(
            backbone_hidden_size=cfg.get("backbone_hidden_size", 1536),
            use_ordered_embeddings=bool(cfg.get("use_ordered_embeddings", False)),
            num_centroids=cfg.get("num_centroids", 2048),
            centroid_intermediate_top_k=cfg.get("centroid_intermediate_top_k", 32),
        )
        values.update(overrides)
        return cls(**values)
