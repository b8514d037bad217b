"""What the model definitions share: MLC LLM's entry points and the export spec that names them.

- :func:`packed_method` and :func:`cache_spec`: pieces of an export spec in MLC's convention
  (parameters passed packed, no effects; the paged KV cache as an object argument), for every
  module the build exports (:meth:`nn.Module.export_tvm`'s ``spec``);
- :class:`CausalLM`: a text model's entry points (names and signatures of MLC LLM,
  ``python/mlc_llm/model/gemma3``): ``embed``, ``prefill``, ``decode``, ``batch_prefill``,
  ``batch_decode``, ``batch_verify``, ``get_logits`` and ``create_paged_kv_cache``.  A family
  subclasses it with its text model and its cache shape, and may add entry points of its own.
"""

from __future__ import annotations

from typing import Any

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ..kernels.kv_cache import WindowedKVCacheMixin
from .layers import last_position, tied_logits


def packed_method(**args: Any) -> dict:
    """The export spec of one method taking ``args`` (name -> ``nn.spec`` type or ``int``, in the
    method's argument order) then the packed parameters, with no effects (MLC's convention).  A new
    dict each call: ``ModuleSpec.from_raw`` consumes its ``"$"`` entry."""
    return {**args, "$": {"param_mode": "packed", "effect_mode": "none"}}


def cache_spec() -> nn.spec.Object:
    """The spec of a ``paged_kv_cache`` argument: TVM's :class:`PagedKVCache` object."""
    return nn.spec.Object(object_type=PagedKVCache)


class CausalLM(WindowedKVCacheMixin, nn.Module):
    """A text model over the windowed paged KV cache with MLC LLM's entry points.

    A family's subclass sets ``config`` (with ``hidden_size``, ``final_logit_softcapping``),
    ``dtype`` and ``model`` (its text model, with ``embed(input_ids)`` and ``embed_tokens``, the
    tied embedding) through ``__init__``, and defines :meth:`final_hidden_states` and ``kv_cache_shape()``
    (:class:`~pipeline.kernels.kv_cache.WindowedKVCacheMixin`).  Entry points of its own go in
    :meth:`entry_specs` and :attr:`ENTRY_POINTS`, the names exported, in order.

    Shapes: ``W`` is :meth:`embed_width` (``hidden_size`` unless the family packs more into its
    input embeddings), ``s`` a symbolic ``seq_len``, ``b`` a symbolic ``batch_size``; embeddings
    and hidden states are in the model dtype, logits float32.
    """

    ENTRY_POINTS: tuple[str, ...] = ("embed", "prefill", "decode", "batch_prefill", "batch_decode", "batch_verify",
                                     "get_logits", "create_paged_kv_cache")

    def __init__(self, config: Any, dtype: str, model: nn.Module):
        self.config = config
        self.dtype = dtype
        self.model = model

    def final_hidden_states(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache) -> Tensor:
        """``(b, s, W)`` input embeddings -> ``(b, s, hidden)`` final-normed hidden states,
        appending the tokens' K/V to ``paged_kv_cache``.  Defined by each family."""
        raise NotImplementedError

    def embed_width(self) -> int:
        """Width ``W`` of ``embed``'s output and of the other entry points' inputs."""
        return self.config.hidden_size

    # --- pieces ---------------------------------------------------------------------------
    def embed(self, input_ids: Tensor) -> Tensor:
        """``(seq_len,)`` int32 -> ``(seq_len, W)`` input embeddings (the text model's ``embed``)."""
        return self.model.embed(input_ids)

    def get_logits(self, hidden_states: Tensor) -> Tensor:
        """``(..., hidden)`` -> ``(..., vocab)`` float32 logits (soft-capped when configured)."""
        return tied_logits(self.model.embed_tokens, hidden_states, self.config.final_logit_softcapping)

    # --- MLC entry points -----------------------------------------------------------------
    def prefill(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, s, W)`` -> ``(1, 1, vocab)`` logits of the last token, and the cache."""
        return self.get_logits(last_position(self.final_hidden_states(input_embed, paged_kv_cache))), paged_kv_cache

    def decode(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, 1, W)`` -> ``(1, 1, vocab)`` logits, and the cache."""
        return self.get_logits(self.final_hidden_states(input_embed, paged_kv_cache)), paged_kv_cache

    def batch_prefill(self, input_embeds: Tensor, logit_positions: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, s, W)`` packed sequences, ``(b,)`` int32 positions -> ``(1, b, vocab)`` logits."""
        hidden = self.final_hidden_states(input_embeds, paged_kv_cache)
        return self.get_logits(op.take(hidden, logit_positions, axis=1)), paged_kv_cache

    def batch_decode(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache):
        """``(b, 1, W)`` -> ``(b, 1, vocab)`` logits."""
        return self.get_logits(self.final_hidden_states(input_embeds, paged_kv_cache)), paged_kv_cache

    def batch_verify(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, s, W)`` draft chain -> ``(1, s, vocab)`` logits at every position."""
        return self.get_logits(self.final_hidden_states(input_embeds, paged_kv_cache)), paged_kv_cache

    # --- export ---------------------------------------------------------------------------
    def input_spec(self, batch: int | str = 1, length: int | str = "seq_len") -> nn.spec.Tensor:
        """The spec of ``(batch, length, W)`` input embeddings."""
        return nn.spec.Tensor([batch, length, self.embed_width()], self.dtype)

    def entry_specs(self) -> dict[str, dict]:
        """Export spec of each entry point by name (a family adds its own entry points here)."""
        return {
            "embed": packed_method(input_ids=nn.spec.Tensor(["seq_len"], "int32")),
            "prefill": packed_method(input_embed=self.input_spec(), paged_kv_cache=cache_spec()),
            "decode": packed_method(input_embed=self.input_spec(length=1), paged_kv_cache=cache_spec()),
            "batch_prefill": packed_method(input_embeds=self.input_spec(),
                                           logit_positions=nn.spec.Tensor(["batch_size"], "int32"),
                                           paged_kv_cache=cache_spec()),
            "batch_decode": packed_method(input_embeds=self.input_spec(batch="batch_size", length=1),
                                          paged_kv_cache=cache_spec()),
            "batch_verify": packed_method(input_embeds=self.input_spec(), paged_kv_cache=cache_spec()),
            "get_logits": packed_method(hidden_states=nn.spec.Tensor(["seq_len", self.config.hidden_size], self.dtype)),
            "create_paged_kv_cache": WindowedKVCacheMixin.create_spec(),
        }

    def get_default_spec(self) -> nn.spec.ModuleSpec:
        """The export spec of :attr:`ENTRY_POINTS`, in that order: symbolic ``seq_len`` /
        ``batch_size``, parameters packed as in MLC."""
        specs = self.entry_specs()
        return nn.spec.ModuleSpec.from_raw({name: specs[name] for name in self.ENTRY_POINTS}, self)
