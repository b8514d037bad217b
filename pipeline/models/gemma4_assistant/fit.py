"""Whether a Gemma 4 assistant drafter fits its base model (the registry row's ``fit_check``)."""

from __future__ import annotations

from pathlib import Path

from ...errors import PipelineError
from ..gemma4.config import SLIDING


def check_drafter_fits(base, drafter, origin: Path) -> None:
    """A ``gemma4_assistant`` drafter must match the base model it reads: backbone width,
    vocabulary, window, and the KV-head count and head dimension of the base's last sliding and
    last full layers, whose K/V its layers attend to.

    Args:
        base: the base model's :class:`~pipeline.models.gemma4.config.Gemma4Config`.
        drafter: the drafter's :class:`~pipeline.models.gemma4_assistant.model.Gemma4AssistantConfig`.
        origin: the drafter's architecture file (named in errors).

    Raises:
        PipelineError: naming the drafter's field, its value and the base model's.
    """
    checks = [("backbone_hidden_size", drafter.backbone_hidden_size, base.hidden_size, "hidden_size"),
              ("text_config.vocab_size", drafter.vocab_size, base.vocab_size, "vocab_size"),
              ("text_config.sliding_window", drafter.sliding_window, base.sliding_window, "sliding_window")]
    for kind in dict.fromkeys(drafter.layer_types):  # in layer order
        if kind not in base.layer_types:
            raise PipelineError(f"{origin}: text_config.layer_types: has {kind} layers, but the base model has none "
                                f"whose K/V they could read")
        mine, theirs = drafter.layer_types.index(kind), base.store_layer(kind)
        global_kv = kind != SLIDING and drafter.attention_k_eq_v and drafter.num_global_key_value_heads
        what = f"layer {theirs} ({kind}, whose K/V its {kind} layers read)"
        checks += [("text_config." + ("num_global_key_value_heads" if global_kv else "num_key_value_heads"),
                    drafter.layer_kv_heads(mine), base.layer_kv_heads(theirs), f"KV heads of {what}"),
                   ("text_config." + ("head_dim" if kind == SLIDING else "global_head_dim"),
                    drafter.layer_head_dim(mine), base.layer_head_dim(theirs), f"head_dim of {what}")]
    for key, value, expected, what in checks:
        if value != expected:
            raise PipelineError(f"{origin}: {key}: {value}, expected the base model's {what}: {expected}")
