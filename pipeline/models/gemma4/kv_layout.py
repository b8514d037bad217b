"""The KV cache layout of a Gemma 4 model, per layer (the registry row's ``kv_layers``)."""

from __future__ import annotations

from ..kv_layout import KVLayer


def kv_layers(config) -> list[KVLayer]:
    """Each layer's own KV heads and head dimension; a KV-shared layer stores nothing and names
    the layer whose K/V it reads (``config``: a :class:`~pipeline.models.gemma4.config.Gemma4Config`)."""
    modes = config.kv_sharing_modes()
    return [KVLayer(i, config.layer_types[i] + (f", K/V of layer {config.store_layer(config.layer_types[i])}"
                                                 if modes[i] == "reuse" else ""),
                    config.layer_kv_heads(i), config.layer_head_dim(i),
                    config.sliding_window if config.is_sliding(i) else None, modes[i] != "reuse")
            for i in range(config.num_hidden_layers)]
