"""The attention kinds a layer of the Gemma families (and of their MTP drafters) has, as
transformers names them in ``layer_types``: sliding-window or full attention."""

from __future__ import annotations

SLIDING, FULL = "sliding_attention", "full_attention"
LAYER_TYPES = (SLIDING, FULL)


def periodic_layer_types(num_layers: int, pattern: int) -> list[str]:
    """Every ``pattern``-th layer full, the rest sliding: the default ``layer_types`` of
    transformers' Gemma 3 and Gemma 4 text configs (``pattern`` 6) when a config lists none."""
    return [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(num_layers)]


def check_layer_types(layer_types: list[str], num_hidden_layers: int) -> None:
    """Raise ValueError unless ``layer_types`` has one entry per layer, each in :data:`LAYER_TYPES`."""
    if len(layer_types) != num_hidden_layers:
        raise ValueError(f"layer_types has {len(layer_types)} entries, expected num_hidden_layers={num_hidden_layers}")
    bad = sorted(set(layer_types) - set(LAYER_TYPES))
    if bad:
        raise ValueError(f"layer_types holds {bad}, expected {SLIDING} or {FULL}")


# The gelu approximation the Gemma families use, under the names transformers' configs give it.
GELU_TANH = ("gelu_pytorch_tanh", "gelu_tanh")


def check_activation(hidden_activation: str) -> None:
    """Raise ValueError unless ``hidden_activation`` is one of :data:`GELU_TANH` (the only MLP
    activation the Gemma model definitions implement)."""
    if hidden_activation not in GELU_TANH:
        raise ValueError(f"hidden_activation {hidden_activation!r} is not supported (gelu_pytorch_tanh)")
