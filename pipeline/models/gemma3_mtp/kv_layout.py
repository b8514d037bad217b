"""The one-layer KV cache of a Gemma 3 MTP head (the registry row's ``kv_layers``)."""

from __future__ import annotations

from ..gemma3.kv_layout import kv_layers as gemma3_kv_layers
from ..kv_layout import KVLayer


def kv_layers(config) -> list[KVLayer]:
    """The MTP block's layer, as the base model's layer of its kind
    (``config``: a :class:`~pipeline.models.gemma3_mtp.config.MTPConfig`)."""
    return gemma3_kv_layers(config.block_config())
