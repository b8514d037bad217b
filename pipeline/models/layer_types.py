"""The attention kinds a layer of the Gemma families (and of their MTP drafters) has, as
transformers names them in ``layer_types``: sliding-window or full attention."""

from __future__ import annotations

SLIDING, FULL = "sliding_attention", "full_attention"
LAYER_TYPES = (SLIDING, FULL)


def periodic_layer_types(num_layers: int, pattern: int) -> list[str]:
    """Every ``pattern``-th layer full, the rest sliding: the default ``layer_types`` of
    transformers' Gemma 3 and Gemma 4 text configs (``pattern`` 6) when a config lists none."""
    return [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(num_layers)]
