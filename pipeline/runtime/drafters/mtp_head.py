"""The ``mtp`` drafter at run time: a DeepSeek-V3-style MTP head over a Gemma 3 base
(:mod:`pipeline.models.gemma3_mtp.model` for the maths and the library's functions), drafting greedy
chains with :class:`MTPDraftChain`, which drives the compiled head through the TVM Relax VM.

The engine keeps the base's final hidden state of every cached token (:class:`HiddenStateCapture`
has it run the base library's ``*_to_last_hidden_states`` functions, then ``get_logits``).
Before each chain, :meth:`MTPHeadDrafter.propose` brings the head's own cache up to date: its exact
entry ``j`` pairs ``h_j`` with token ``t_{j+1}``, so after a verify pass that accepted ``a`` drafts
the new entries are the pending token's position and the ``a`` accepted drafts', each paired with
the token after it (the last one with the pending token, emitted but not yet in the base's cache).
Entries whose tokens no longer match the sequence (a new prompt, a chat turn's roll-back) are
popped first.  Draft tokens are the argmax of each step; their distributions are one-hot rows,
which keeps sampled verification lossless (:mod:`pipeline.runtime.speculative`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import tvm
import tvm_ffi

from ...errors import PipelineError
from ...kernels import PAGE_SIZE
from ...models.draft_vocab import DRAFT_VOCAB
from ...models.registry import family_of_runtime_drafter
from ..engine import Engine, load_library
from .base import Capture
from .context import copy_rows

# The ``model_type`` a Gemma 3 MTP head library records in ``_metadata``: its family's name
# (the config's ``model_type``), found in the registry by this class.
MODEL_TYPE = family_of_runtime_drafter(f"{__name__}:MTPHeadDrafter")
# One-call chains looked for in a drafter library (``draft_chain_<G>``; the build exports G up to
# pipeline.models.gemma3_mtp.model.MAX_CHAIN): any G the library has, up to this.
CHAIN_LENGTHS_PROBED = 64


class HiddenStateCapture(Capture):
    """Runs the base library's ``*_to_last_hidden_states`` functions (MLC's names, in Gemma 3
    libraries), which return the final hidden state of every token; keeps them and computes the
    logits with ``get_logits`` (of the last token only for a prefill)."""

    functions: ClassVar[dict[str, str]] = {
        "prefill": "prefill_to_last_hidden_states", "decode": "batch_verify_to_last_hidden_states",
        "batch_verify": "batch_verify_to_last_hidden_states"}

    def read(self, engine, out, last_only: bool):
        n = int(out.shape[1])
        rows = out._create_view((n, int(out.shape[2])))
        self.context.append(rows, [])  # a device-to-device copy
        logits = engine.vm["get_logits"](copy_rows(rows, n - 1, n) if last_only else rows, engine.params)
        return logits._create_view((1, *logits.shape))


def _has(vm, name: str) -> bool:
    """Whether the VM's library exports ``name``."""
    try:
        vm[name]
    except Exception:  # the VM raises for a missing function
        return False
    return True


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class MTPHeadDrafter:
    """Drafts for ``engine`` (a Gemma 3 base) with the MTP drafter library and weights of its package.

    Raises (constructor):
        PipelineError: the base library lacks ``prefill_to_last_hidden_states``; the drafter
            library is not a Gemma 3 MTP drafter, or its hidden size differs from the base's; the
            drafter's files do not match each other.
    """

    def __init__(self, engine: Engine, library: Path, weights: Path):
        self.engine = engine
        self.context = engine.attach(HiddenStateCapture()).context
        vm, metadata, params = load_library(library, weights, engine.device)
        hidden = next((p["shape"][0] for p in metadata["params"] if p["name"] == "enorm.weight"), None)
        if metadata.get("model_type") != MODEL_TYPE or hidden != engine.hidden_size:
            raise PipelineError(f"{library}: model_type {metadata.get('model_type')!r} with hidden size {hidden}, "
                                f"expected {MODEL_TYPE!r} with the base's {engine.hidden_size}")
        self.chain = MTPDraftChain(vm, params, engine.vm, engine.params, max_total_seq_len=engine.context_window,
                                   prefill_chunk_size=engine.prefill_chunk, device=engine.device)
        self.seen: list[int] = []  # t_0..t_L: the tokens of the chain's L exact entries (entry j: (h_j, t_{j+1}))

    def catch_up(self, history: list[int]) -> None:
        """Make the head's exact entries those of ``history`` (every cached token plus the
        pending one): pop the entries that no longer match, add the missing ones (at least one,
        which re-seeds the chain).

        Raises:
            RuntimeError: ``history`` is not the engine's cached sequence plus one token.
        """
        length = self.engine.length
        if len(history) != length + 1 or history[:length] != self.engine.tokens:
            raise RuntimeError(f"history has {len(history)} tokens, the cache {length} (expected its tokens plus one)")
        keep = max(0, min(self.chain.length, _common_prefix(self.seen, history) - 1, length - 1))
        if self.chain.cache is None or keep == 0:
            self.chain.reset()
        else:
            self.chain.rollback(self.chain.length - keep)
        start = self.chain.length
        self.chain.accept(self.context.hidden_states(start, length), history[start + 1:length + 1])
        self.seen = list(history)

    def propose(self, history: list[int], n: int) -> tuple[list[int], None]:
        """``n`` greedy draft tokens continuing ``history``, and None (their distributions are
        one-hot rows).  ``history[-1]`` is the pending token; the rest is in the cache."""
        self.catch_up(history)
        tokens = self.chain.draft_tokens(n) if self.chain.reduced else self.chain.draft(n).tokens
        return tokens, None


# --- the compiled head, driven through the VM ---------------------------------------------------
# The base library supplies the embedding (``embed``) and the head (``get_logits``); the caller
# supplies the base's final hidden states.  The protocol is spelled out in
# pipeline/models/gemma3_mtp/model.py's docstring.


@dataclasses.dataclass
class DraftChain:
    """One chain: ``tokens`` (n), float32 ``logits`` ``(n, vocab)`` each token was chosen from,
    and ``hidden_states`` ``(n, hidden)``, the drafter outputs those logits came from."""

    tokens: list[int]
    logits: np.ndarray
    hidden_states: np.ndarray


def _greedy(logits: np.ndarray) -> int:
    return int(np.argmax(logits))


class MTPDraftChain:
    """One sequence's drafter state: its KV cache, the output of its last exact entry, and the
    number of speculative entries the last chain left in the cache.

    Args:
        drafter_vm, drafter_params: the drafter library's VM and its parameters in ``_metadata`` order.
        base_vm, base_params: the base library's VM and parameters (for ``embed`` and ``get_logits``).
        max_total_seq_len: cache capacity in tokens (the base's context window).
        prefill_chunk_size: most pairs per ``prefill_to_last_hidden_states`` call.
        device: the device both libraries run on (the base engine's; default the CPU).
    """

    def __init__(self, drafter_vm, drafter_params, base_vm, base_params, *,
                 max_total_seq_len: int, prefill_chunk_size: int, device=None):
        self.device = device if device is not None else tvm.cpu(0)
        self.vm, self.params = drafter_vm, drafter_params
        self.base_vm, self.base_params = base_vm, base_params
        self.max_total_seq_len = max_total_seq_len
        self.prefill_chunk_size = prefill_chunk_size
        metadata = json.loads(str(drafter_vm["_metadata"]()))
        self.dtype = next(p["dtype"] for p in metadata["params"] if p["name"] == "enorm.weight")
        # a reduced drafting vocabulary (pipeline.models.draft_vocab): its ids, and chains drafted
        # in the library (draft_step / draft_token) with only token ids coming back
        index = next((i for i, p in enumerate(metadata["params"]) if p["name"] == DRAFT_VOCAB), None)
        self.draft_vocab = None if index is None else drafter_params[index].numpy()
        self.chains = {n: drafter_vm[f"draft_chain_{n}"] for n in range(2, CHAIN_LENGTHS_PROBED + 1)
                       if _has(drafter_vm, f"draft_chain_{n}")}
        self.cache = None
        self.length = 0  # exact entries
        self.speculative = 0  # entries added by the last chain, popped before the next call
        self._last = None  # output ``o`` of the last exact entry, (1, hidden) on the device

    def reset(self) -> None:
        """Start a fresh sequence (new, empty cache)."""
        shape = tvm_ffi.Shape
        self.cache = self.vm["create_paged_kv_cache"](
            shape((1,)), shape((self.max_total_seq_len,)), shape((self.prefill_chunk_size,)), shape((PAGE_SIZE,)),
            shape((0,)))
        tvm.get_global_func("vm.builtin.kv_state_add_sequence")(self.cache, 0)
        self.length, self.speculative, self._last = 0, 0, None

    def rollback(self, k: int) -> None:
        """Drop the last chain's entries and the last ``k`` exact entries (the sequence they
        describe was cut back).  The next call must be :meth:`accept`, which re-seeds the chain.

        Raises:
            PipelineError: ``k`` is negative or more than the exact entries held.
        """
        if not 0 <= k <= self.length:
            raise PipelineError(f"rollback: {k} entries, expected 0..{self.length}")
        self._discard_chain()
        if k:
            tvm.get_global_func("vm.builtin.kv_state_popn")(self.cache, 0, k)
            self.length -= k
            self._last = None

    def accept(self, hidden_states: np.ndarray, next_tokens: list[int]) -> np.ndarray:
        """Append exact pairs ``(h_j, t_{j+1})`` after dropping the last chain's entries.

        Args:
            hidden_states: ``(k, hidden)`` base final hidden states ``h_j`` at consecutive positions
                continuing the cache: a device tensor (what the engine's capture keeps) or numpy.
            next_tokens: the ``k`` tokens ``t_{j+1}`` following them (the last one is the token the
                base model just produced, not yet verified by it).

        Returns:
            The drafter outputs of the last chunk of ``prefill_chunk_size`` pairs (all ``k`` when
            ``k`` fits one), ``(rows, hidden)`` on the device; the last one seeds :meth:`draft`.

        Raises:
            PipelineError: ``k`` differs between the arguments or is 0, or the cache would overflow.
        """
        hidden_states = self._on_device(hidden_states)
        k = len(next_tokens)
        if k == 0 or hidden_states.shape[0] != k:
            raise PipelineError(f"accept: {hidden_states.shape[0]} hidden states for {k} tokens, "
                                f"expected equal and > 0")
        self._check_room(k)
        self._discard_chain()
        for start in range(0, k, self.prefill_chunk_size):
            stop = min(start + self.prefill_chunk_size, k)
            rows = hidden_states if (start, stop) == (0, k) else copy_rows(hidden_states, start, stop)
            outputs = self._forward("prefill_to_last_hidden_states", self._fuse(next_tokens[start:stop], rows))
        self.length += k
        self._last = copy_rows(outputs, outputs.shape[0] - 1, outputs.shape[0])
        return outputs

    @property
    def reduced(self) -> bool:
        """Whether the library drafts over a reduced vocabulary (:meth:`draft_tokens`)."""
        return self.draft_vocab is not None

    def draft_tokens(self, n: int) -> list[int]:
        """Draft ``n`` greedy tokens over the library's reduced vocabulary: one call of
        ``draft_chain_<n>`` where the library has it, else a call per token (``draft_step``, the
        last ``draft_token``); only the token ids are copied to the host.  Leaves ``n - 1``
        speculative entries in the cache.  Equal to :meth:`draft` with ``choose`` restricted to
        :attr:`draft_vocab` (up to ties of logits).

        Raises:
            PipelineError: no reduced vocabulary, nothing accepted yet, or the cache would overflow.
        """
        if self.draft_vocab is None:
            raise PipelineError("draft_tokens: the drafter library has no reduced vocabulary (draft_step)")
        if self._last is None:
            raise PipelineError("draft: no exact entry yet (call accept first)")
        self._check_room(n - 1)
        self._discard_chain()
        hidden = self._last._create_view((1, 1, int(self._last.shape[-1])))
        if n in self.chains:
            ids, self.cache = self.chains[n](hidden, self.cache, self.params)
            self.speculative += n - 1
            return [int(t) for t in ids.numpy()]
        builtin = tvm.get_global_func
        begin, end = builtin("vm.builtin.kv_state_begin_forward"), builtin("vm.builtin.kv_state_end_forward")
        one, seq = tvm_ffi.Shape((1,)), tvm_ffi.Shape((0,))
        tokens = []
        for _ in range(n - 1):
            begin(self.cache, seq, one)
            token, hidden, self.cache = self.vm["draft_step"](hidden, self.cache, self.params)
            end(self.cache)
            self.speculative += 1
            tokens.append(int(token.numpy()[0]))
        if n:
            token = self.vm["draft_token"](hidden._create_view((1, hidden.shape[-1])), self.params)
            tokens.append(int(token.numpy()[0]))
        return tokens

    def draft(self, n: int, choose: Callable[[np.ndarray], int] = _greedy) -> DraftChain:
        """Draft ``n`` tokens from the last exact entry; ``choose(logits)`` picks each (argmax by
        default).  Leaves ``n - 1`` speculative entries in the cache.

        Raises:
            PipelineError: nothing accepted yet, or the cache would overflow.
        """
        if self._last is None:
            raise PipelineError("draft: no exact entry yet (call accept first)")
        self._check_room(n - 1)
        self._discard_chain()
        hidden = self._last
        tokens, logits, hiddens = [], [], []
        for step in range(n):
            row = self.base_vm["get_logits"](hidden, self.base_params).numpy()[0]
            tokens.append(choose(row))
            logits.append(row)
            hiddens.append(hidden.numpy()[0])
            if step < n - 1:
                hidden = self._forward("decode_to_last_hidden_states", self._fuse(tokens[-1:], hidden))
                self.speculative += 1
        return DraftChain(tokens, np.stack(logits), np.stack(hiddens))

    # --- pieces ----------------------------------------------------------------------------
    def _check_room(self, k: int) -> None:
        if self.length + k > self.max_total_seq_len:
            raise PipelineError(
                f"drafter cache of {self.length + k} tokens exceeds its capacity ({self.max_total_seq_len})")

    def _discard_chain(self) -> None:
        if self.speculative:
            tvm.get_global_func("vm.builtin.kv_state_popn")(self.cache, 0, self.speculative)
            self.speculative = 0

    def _on_device(self, hidden_states):
        """``(k, hidden)`` rows as a device tensor of the drafter's dtype (numpy, or a device
        tensor of another dtype, go through the host)."""
        if isinstance(hidden_states, np.ndarray) or str(hidden_states.dtype) != self.dtype:
            host = hidden_states if isinstance(hidden_states, np.ndarray) else hidden_states.numpy()
            return tvm.runtime.tensor(np.ascontiguousarray(host, dtype=self.dtype), self.device)
        return hidden_states

    def _fuse(self, tokens: list[int], hidden_states):
        """``fuse_embed_hidden_states(embed(tokens), hidden_states)``; ``(k, hidden)`` on the device."""
        ids = tvm.runtime.tensor(np.asarray(tokens, dtype=np.int32), self.device)
        embeds = self.base_vm["embed"](ids, self.base_params)
        return self.vm["fuse_embed_hidden_states"](embeds, self._on_device(hidden_states), self.params)

    def _forward(self, function: str, fused):
        """Run ``(k, hidden)`` fused inputs through the block; ``(k, hidden)`` outputs, on the device."""
        k, hidden = (int(d) for d in fused.shape)
        builtin = tvm.get_global_func
        builtin("vm.builtin.kv_state_begin_forward")(self.cache, tvm_ffi.Shape((0,)), tvm_ffi.Shape((k,)))
        out, self.cache = self.vm[function](fused._create_view((1, k, hidden)),
                                            self.cache, self.params)
        builtin("vm.builtin.kv_state_end_forward")(self.cache)
        return out._create_view((k, hidden))
