"""Hyper-parameters of a Gemma 3 MTP drafter head (:mod:`pipeline.models.gemma3_mtp.model`).

Source: transformers 5.24 ``modeling_layers.MtpLayer`` and its config fields (``mtp_layer_types``,
``mtp_hidden_states_first``); DeepSeek-V3 (arXiv 2412.19437, sec. 2.2) for the module.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..gemma3.config import Gemma3Config
from ..layer_types import LAYER_TYPES


@dataclasses.dataclass
class MTPConfig:
    """Hyper-parameters of a Gemma 3 MTP drafter.

    ``base``: the base model's config (sizes, norms, RoPE, window, context; the block is built
    from it).  ``layer_type``: attention of the MTP block, ``"sliding_attention"`` (the base's
    ``sliding_window``) or ``"full_attention"`` (transformers' ``mtp_layer_types``).
    ``use_post_norm``: an RMSNorm of its own on the block output (transformers' ``MtpLayer``
    default; DeepSeek-V3 checkpoints call it ``shared_head.norm``); without it the block output
    goes to the head as is.  ``hidden_states_first``: concatenate ``[hnorm(h), enorm(e)]``
    instead of ``[enorm(e), hnorm(h)]`` (transformers' ``mtp_hidden_states_first``).
    ``draft_vocab_size``: N > 0 gives the drafter its own reduced head and embedding, the base's
    tied-embedding rows of N tokens (FR-Spec, arXiv 2502.14856: the base's most frequent
    generated tokens), and the ``draft_token`` / ``draft_step`` functions that draft over them on
    the device; 0: drafts go through the base's full ``get_logits``.
    """

    base: Gemma3Config
    layer_type: str
    use_post_norm: bool = True
    hidden_states_first: bool = False
    draft_vocab_size: int = 0

    model_type = "gemma3_mtp"

    def __post_init__(self):
        if isinstance(self.base, dict):
            self.base = Gemma3Config(**self.base)
        if self.layer_type not in LAYER_TYPES:
            raise ValueError(f"layer_type {self.layer_type!r} is not one of {LAYER_TYPES}")
        if not 0 <= self.draft_vocab_size <= self.base.vocab_size:
            raise ValueError(f"draft_vocab_size {self.draft_vocab_size}, expected 0..{self.base.vocab_size}")

    @classmethod
    def from_architecture(cls, cfg: dict[str, Any], base: Gemma3Config | dict[str, Any],
                          draft_vocab_size: int = 0) -> MTPConfig:
        """The config of a head over ``base`` (the base model's config) from its architecture
        file's content ``cfg`` (``layer_type``, ``use_post_norm``, ``hidden_states_first``; keys
        starting with ``_`` are notes), drafting over ``draft_vocab_size`` tokens (0: all).

        Raises:
            TypeError: a missing or unknown field.  ValueError: a ``layer_type`` not in :data:`LAYER_TYPES`.
        """
        base = base if isinstance(base, Gemma3Config) else Gemma3Config(**base)
        return cls(base=base, draft_vocab_size=draft_vocab_size,
                   **{key: value for key, value in cfg.items() if not key.startswith("_")})

    def block_config(self) -> Gemma3Config:
        """The base config narrowed to the one MTP layer (index 0 of the drafter's cache)."""
        return dataclasses.replace(self.base, num_hidden_layers=1, layer_types=[self.layer_type])

    # Sizes the build records in ``_metadata`` (pipeline.compile.compiler.export_model).
    @property
    def context_window_size(self) -> int:
        """Longest sequence (tokens), the base's."""
        return self.base.context_window_size

    @property
    def prefill_chunk_size(self) -> int:
        """Most tokens per prefill call, the base's."""
        return self.base.prefill_chunk_size

    @property
    def max_batch_size(self) -> int:
        """Most sequences per batch, the base's."""
        return self.base.max_batch_size

    @property
    def sliding_window(self) -> int:
        """Window (tokens) of a sliding MTP block, the base's."""
        return self.base.sliding_window

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (``MTPConfig(**d)`` reads it back)."""
        return dataclasses.asdict(self)
