"""Gemma 3 text-model hyper-parameters.

Source: transformers' ``Gemma3TextConfig`` (field names, defaults, the ``sliding_window_pattern``
default of ``layer_types``); the model is :mod:`pipeline.models.gemma3.model`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..layer_types import check_activation, check_layer_types, periodic_layer_types


@dataclasses.dataclass
class Gemma3Config:
    """Hyper-parameters of a Gemma 3 text model (names as in transformers' ``Gemma3TextConfig``).

    ``layer_types`` lists ``"sliding_attention"`` / ``"full_attention"`` per layer; when absent
    from a source it follows ``sliding_window_pattern`` (every 6th layer full).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    sliding_window: int
    layer_types: list[str]
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    rope_scaling_factor: float = 1.0
    query_pre_attn_scalar: float = 256.0
    final_logit_softcapping: float | None = None
    hidden_activation: str = "gelu_pytorch_tanh"
    context_window_size: int = 32768
    prefill_chunk_size: int = 2048
    max_batch_size: int = 1
    bos_token_id: int = 2
    eos_token_id: list[int] = dataclasses.field(default_factory=lambda: [1, 106])
    pad_token_id: int = 0

    model_type = "gemma3_text"

    def __post_init__(self):
        check_layer_types(self.layer_types, self.num_hidden_layers)
        check_activation(self.hidden_activation)

    @staticmethod
    def default_layer_types(num_layers: int, pattern: int = 6) -> list[str]:
        """Every ``pattern``-th layer full, the rest sliding (transformers' Gemma 3 default)."""
        return periodic_layer_types(num_layers, pattern)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], **overrides: Any) -> Gemma3Config:
        """Read a transformers ``config.json`` dict (``gemma3_text``, or ``gemma3`` with ``text_config``).

        Raises:
            KeyError: a required key is missing.
            ValueError: an unsupported value (e.g. attention logit soft-capping).
        """
        if "text_config" in cfg:
            cfg = cfg["text_config"]
        if cfg.get("attn_logit_softcapping") is not None:
            raise ValueError("attn_logit_softcapping is not supported (Gemma 3 has none)")
        n_layers = cfg["num_hidden_layers"]
        layer_types = cfg.get("layer_types") or cls.default_layer_types(
            n_layers, cfg.get("sliding_window_pattern", 6)
        )
        scaling = cfg.get("rope_scaling") or {}
        if scaling and scaling.get("rope_type", scaling.get("type")) not in ("linear", "default"):
            raise ValueError(f"rope_scaling {scaling} is not supported (linear only)")
        eos = cfg.get("eos_token_id", [1, 106])
        values = dict(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=n_layers,
            num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"],
            head_dim=cfg["head_dim"],
            sliding_window=cfg["sliding_window"],
            layer_types=list(layer_types),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=cfg.get("rope_theta", 1_000_000.0),
            rope_local_base_freq=cfg.get("rope_local_base_freq", 10_000.0),
            rope_scaling_factor=float(scaling.get("factor", 1.0)),
            query_pre_attn_scalar=cfg.get("query_pre_attn_scalar", cfg["head_dim"]),
            final_logit_softcapping=cfg.get("final_logit_softcapping"),
            hidden_activation=cfg.get("hidden_activation", "gelu_pytorch_tanh"),
            context_window_size=cfg.get("max_position_embeddings", 32768),
            bos_token_id=cfg.get("bos_token_id", 2),
            eos_token_id=eos if isinstance(eos, list) else [eos],
            pad_token_id=cfg.get("pad_token_id", 0),
        )
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able data (written to ``mlc-chat-config.json``)."""
        return dataclasses.asdict(self)
