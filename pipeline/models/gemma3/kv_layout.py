"""The KV cache layout of a Gemma 3 model, per layer (the registry row's ``kv_layers``)."""

from __future__ import annotations

from ..kv_layout import KVLayer

SLIDING = "sliding_attention"


def kv_layers(config) -> list[KVLayer]:
    """Every layer stores ``num_key_value_heads x head_dim`` K/V; sliding layers keep
    ``sliding_window`` tokens (``config``: a :class:`~pipeline.models.gemma3.config.Gemma3Config`)."""
    return [KVLayer(i, kind, config.num_key_value_heads, config.head_dim,
                    config.sliding_window if kind == SLIDING else None, True)
            for i, kind in enumerate(config.layer_types)]
