"""Speculative decoding: a drafter proposes a chain of G tokens, the base model verifies all of
them in one ``batch_verify`` pass, the longest acceptable prefix plus one base-model token is
emitted, and the KV cache entries of rejected tokens are rolled back (``kv_state_popn``).

Acceptance (Leviathan et al. 2023, arXiv 2211.17192, Algorithm 1; Chen et al. 2023, arXiv
2302.01318): greedy accepts a draft token while it equals the base model's argmax; sampling
accepts draft token ``x`` with probability ``min(1, p(x) / q(x))`` (``p`` the base model's
distribution after temperature/top-p, ``q`` the drafter's) and otherwise resamples from
``max(0, p - q)`` normalized, so the output distribution equals plain sampling's.

``max_tokens`` counts emitted tokens only, and a stop token or stop string inside an accepted
chain ends the output exactly where plain decoding would have ended it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from .engine import Engine
from .sampling import Sampler, probabilities


class Drafter(Protocol):  # pylint: disable=too-few-public-methods
    """Proposes draft tokens: ``propose(history, n)`` returns ``n`` token ids continuing
    ``history`` (all tokens so far) and their draft distributions, float64 ``(n, vocab)``
    (one-hot rows for a greedy drafter)."""

    def propose(self, history: list[int], n: int) -> tuple[list[int], np.ndarray]:
        """``n`` draft tokens and their distributions."""


@dataclasses.dataclass
class SpeculativeStats:
    """Counts of one speculative generation."""

    steps: int = 0
    drafted: int = 0
    emitted: int = 0
    accepted_at: list[int] = dataclasses.field(default_factory=list)  # per draft position
    proposed_at: list[int] = dataclasses.field(default_factory=list)
    stopped_by: str = "max_tokens"

    def acceptance_rate(self) -> list[float]:
        """Acceptance rate per draft position (accepted / proposed)."""
        return [a / p if p else 0.0 for a, p in zip(self.accepted_at, self.proposed_at)]

    @property
    def tokens_per_step(self) -> float:
        """Mean tokens emitted per base-model verify pass."""
        return self.emitted / self.steps if self.steps else 0.0

    def record(self, drafted: int, accepted: int) -> None:
        """Count one step that drafted ``drafted`` tokens and accepted ``accepted`` of them."""
        while len(self.proposed_at) < drafted:
            self.proposed_at.append(0)
            self.accepted_at.append(0)
        for i in range(drafted):
            self.proposed_at[i] += 1
            self.accepted_at[i] += int(i < accepted)
        self.steps += 1
        self.drafted += drafted


def _accept(logits: np.ndarray, draft: list[int], q: np.ndarray, sampler: Sampler) -> tuple[int, int]:
    """Number of accepted draft tokens and the token the base model adds after them.

    ``logits``: float32 ``(len(draft) + 1, vocab)``, row ``i`` the base model's logits after the
    first ``i`` draft tokens.
    """
    if sampler.temperature == 0:
        for i, token in enumerate(draft):
            best = int(np.argmax(logits[i]))
            if token != best:
                return i, best
        return len(draft), int(np.argmax(logits[len(draft)]))
    for i, token in enumerate(draft):
        p = probabilities(logits[i], sampler.temperature, sampler.top_p)
        if sampler.rng.random() < min(1.0, p[token] / max(q[i][token], 1e-300)):
            continue
        residual = np.maximum(p - q[i], 0.0)
        total = residual.sum()
        residual = residual / total if total > 0 else p
        return i, int(sampler.rng.choice(len(residual), p=residual))
    return len(draft), sampler(logits[len(draft)])


def speculative_generate(engine: Engine, prompt_ids: list[int], max_tokens: int, sampler: Sampler,
                         drafter: Drafter, draft_length: int, stop_strings: tuple[str, ...] = (),
                         stats: SpeculativeStats | None = None) -> Iterator[int]:
    """Yield up to ``max_tokens`` tokens continuing ``prompt_ids``, drafting ``draft_length`` at a time.

    The KV cache always holds every emitted token but the last (``pending``), exactly as after
    plain decoding; each step verifies ``[pending] + draft`` and pops the rejected entries.
    """
    stats = stats if stats is not None else SpeculativeStats()
    engine.reset()
    history = list(prompt_ids)
    emitted: list[int] = []
    step_tokens = [sampler(engine.prefill(prompt_ids))]
    while True:
        for token in step_tokens:
            if token in engine.stop_token_ids:
                stats.stopped_by = "stop_token"
                return
            emitted.append(token)
            history.append(token)
            stats.emitted += 1
            yield token
            if stop_strings and any(s in engine.tokenizer.decode(emitted) for s in stop_strings):
                stats.stopped_by = "stop_string"
                return
            if len(emitted) >= max_tokens:
                return
        pending = step_tokens[-1]  # emitted, not yet in the KV cache
        n = min(draft_length, max_tokens - len(emitted) - 1)  # the step adds at most n + 1 tokens
        draft, q = drafter.propose(history, n) if n > 0 else ([], np.zeros((0, 0)))
        logits = engine.verify([pending] + draft)
        accepted, extra = _accept(logits, draft, q, sampler)
        engine.rollback(len(draft) - accepted)
        stats.record(len(draft), accepted)
        step_tokens = draft[:accepted] + [extra]
