"""The ``mtp`` drafter at run time: a DeepSeek-V3-style MTP head over a Gemma 3 base
(:mod:`pipeline.models.gemma3_mtp`), drafting greedy chains with :class:`~pipeline.models.mtp.drafting.MTPDraftChain`.

The engine keeps the base's final hidden state of every cached token (it runs the base library's
``*_to_last_hidden_states`` functions, :data:`~pipeline.runtime.engine.HIDDEN_STATE_FUNCTIONS`).
Before each chain, :meth:`MTPDrafter.propose` brings the head's own cache up to date: its exact
entry ``j`` pairs ``h_j`` with token ``t_{j+1}``, so after a verify pass that accepted ``a`` drafts
the new entries are the pending token's position and the ``a`` accepted drafts', each paired with
the token after it (the last one with the pending token, emitted but not yet in the base's cache).
Entries whose tokens no longer match the sequence (a new prompt, a chat turn's roll-back) are
popped first.  Draft tokens are the argmax of each step; their distributions are one-hot rows,
which keeps sampled verification lossless (:mod:`pipeline.runtime.speculative`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PipelineError
from ..models.gemma3_mtp.model import MTPConfig
from ..models.mtp.drafting import MTPDraftChain
from .engine import HIDDEN_STATE_FUNCTIONS, Engine, load_library
from .speculative import one_hot


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class MTPDrafter:
    """Drafts for ``engine`` (a Gemma 3 base) with the MTP drafter library and weights of its package.

    Raises (constructor):
        PipelineError: the base library lacks ``prefill_to_last_hidden_states``; the drafter
            library is not a Gemma 3 MTP drafter, or its hidden size differs from the base's; the
            drafter's files do not match each other.
    """

    def __init__(self, engine: Engine, library: Path, weights: Path):
        self.engine = engine
        self.context = engine.capture_mtp_context(HIDDEN_STATE_FUNCTIONS)
        vm, metadata, params = load_library(library, weights, engine.device)
        hidden = next((p["shape"][0] for p in metadata["params"] if p["name"] == "enorm.weight"), None)
        if metadata.get("model_type") != MTPConfig.model_type or hidden != engine.hidden_size:
            raise PipelineError(f"{library}: model_type {metadata.get('model_type')!r} with hidden size {hidden}, "
                                f"expected {MTPConfig.model_type!r} with the base's {engine.hidden_size}")
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

    def propose(self, history: list[int], n: int) -> tuple[list[int], np.ndarray]:
        """``n`` greedy draft tokens continuing ``history`` and their one-hot distributions
        (float64 ``(n, vocab)``).  ``history[-1]`` is the pending token; the rest is in the cache."""
        self.catch_up(history)
        tokens = self.chain.draft(n).tokens
        return tokens, one_hot(tokens, self.engine.chat_config["vocab_size"])
