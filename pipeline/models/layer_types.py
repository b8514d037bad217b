"""The attention kinds a layer of the Gemma families (and of their MTP drafters) has, as
transformers names them in ``layer_types``: sliding-window or full attention."""

SLIDING, FULL = "sliding_attention", "full_attention"
LAYER_TYPES = (SLIDING, FULL)
