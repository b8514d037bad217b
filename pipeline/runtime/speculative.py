"""Speculative decoding: a drafter proposes a chain of G tokens, the base model verifies all of
them in one ``batch_verify`` pass, the longest acceptable prefix plus one base-model token is
emitted, and the KV cache entries of rejected tokens are rolled back (``kv_state_popn``).

Acceptance (Leviathan et al. 2023, arXiv 2211.17192, Algorithm 1; Chen et al. 2023, arXiv
2302.01318): greedy accepts a draft token while it equals the base model's argmax; sampling
accepts draft token ``x`` with probability ``min(1, p(x) / q(x))`` (``p`` the base model's
distribution after temperature/top-p, ``q`` the drafter's) and otherwise resamples from
``max(0, p - q)`` normalized, so the output distribution equals plain sampling's.

The draft length is fixed or adapts to the acceptance seen so far
(:mod:`pipeline.runtime.draft_length`); without a drafter, generation is plain decoding.  The
drafters and the seam that loads them are in :mod:`pipeline.runtime.drafters`.
``max_tokens`` counts emitted tokens only, and a stop token or stop string inside an accepted
chain ends the output exactly where plain decoding would have ended it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import numpy as np

from .draft_length import DraftLength
from .drafters.base import Drafter, one_hot
from .engine import Engine
from .generate import GenerationStats, generate
from .sampling import Sampler, probabilities


@dataclasses.dataclass
class SpeculativeStats(GenerationStats):
    """:class:`GenerationStats` plus the counts of the speculative steps (one ``batch_verify``
    pass of the base model each)."""

    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    accepted_at: list[int] = dataclasses.field(default_factory=list)  # per draft position
    proposed_at: list[int] = dataclasses.field(default_factory=list)
    draft_lengths: list[int] = dataclasses.field(default_factory=list)  # the policy's, per step
    draft_seconds: float = 0.0  # in the drafter's propose
    verify_seconds: float = 0.0  # in the base's verify pass, the acceptance rule and the roll-back

    @property
    def ms_per_draft_token(self) -> float:
        """Mean drafting time per drafted token, ms (a step's catch-up of the drafter included)."""
        return 1000 * self.draft_seconds / self.drafted if self.drafted else 0.0

    @property
    def ms_per_verify(self) -> float:
        """Mean time of one step's verification (base pass, acceptance, roll-back), ms."""
        return 1000 * self.verify_seconds / self.steps if self.steps else 0.0

    def acceptance_rate(self) -> list[float]:
        """Acceptance rate per draft position: of the steps that drafted a token at position
        ``i`` (0-based), the fraction whose verify pass accepted it (and so all before it)."""
        return [a / p if p else 0.0 for a, p in zip(self.accepted_at, self.proposed_at)]

    @property
    def accepted_per_step(self) -> float:
        """Mean accepted draft tokens per step."""
        return self.accepted / self.steps if self.steps else 0.0

    @property
    def tokens_per_step(self) -> float:
        """Mean tokens a step yields, its accepted draft tokens plus the base model's own (the
        number of tokens one run of Leviathan et al.'s Algorithm 1 generates; a stop that cuts a
        step short is not deducted)."""
        return self.accepted_per_step + 1 if self.steps else 0.0

    def record(self, draft_length: int, drafted: int, accepted: int) -> None:
        """Count one step at ``draft_length`` (the policy's; the ``max_tokens`` budget may have
        let it draft fewer) that drafted ``drafted`` tokens and accepted ``accepted`` of them."""
        while len(self.proposed_at) < drafted:
            self.proposed_at.append(0)
            self.accepted_at.append(0)
        for i in range(drafted):
            self.proposed_at[i] += 1
            self.accepted_at[i] += int(i < accepted)
        self.steps += 1
        self.drafted += drafted
        self.accepted += accepted
        self.draft_lengths.append(draft_length)


def _accept_greedy(best: list[int], draft: list[int]) -> tuple[int, int]:
    """Greedy acceptance from the base model's argmax ``best`` at each of the ``len(draft) + 1``
    positions: the number of leading draft tokens equal to it, and the base's token after them."""
    accepted = next((i for i, token in enumerate(draft) if token != best[i]), len(draft))
    return accepted, best[accepted]


def _accept(logits: np.ndarray, draft: list[int], q: np.ndarray | None, sampler: Sampler) -> tuple[int, int]:
    """Number of accepted draft tokens and the token the base model adds after them.

    ``logits``: float32 ``(len(draft) + 1, vocab)``, row ``i`` the base model's logits after the
    first ``i`` draft tokens; ``q``: the draft distributions, float64 ``(len(draft), vocab)``, or
    None for one-hot rows (a greedy drafter).
    """
    if sampler.temperature == 0:
        for i, token in enumerate(draft):
            best = int(np.argmax(logits[i]))
            if token != best:
                return i, best
        return len(draft), int(np.argmax(logits[len(draft)]))
    for i, token in enumerate(draft):
        p = probabilities(logits[i], sampler.temperature, sampler.top_p)
        q_i = q[i] if q is not None else one_hot([token], len(p))[0]
        if sampler.rng.random() < min(1.0, p[token] / max(q_i[token], 1e-300)):
            continue
        residual = np.maximum(p - q_i, 0.0)
        total = residual.sum()
        residual = residual / total if total > 0 else p
        return i, int(sampler.rng.choice(len(residual), p=residual))
    return len(draft), sampler(logits[len(draft)])


def speculative_generate(engine: Engine, prompt_ids: list[int], max_tokens: int, sampler: Sampler,
                         drafter: Drafter | None, draft_length: int | DraftLength, stop_strings: tuple[str, ...] = (),
                         stats: SpeculativeStats | None = None, continue_sequence: bool = False) -> Iterator[int]:
    """Yield up to ``max_tokens`` (>= 1) tokens continuing ``prompt_ids``, drafting ``draft_length``
    at a time (an int for a fixed draft length, or a :class:`DraftLength` policy, updated after
    each step).  Without a ``drafter`` (speculation off) this is
    :func:`pipeline.runtime.generate.generate` (``stats`` then counts no steps).

    Same contract as :func:`pipeline.runtime.generate.generate`: the same tokens for greedy
    sampling, the same distribution otherwise; stops before a stop token and after the token that
    completes a stop string; with ``continue_sequence`` the prompt extends the engine's sequence.
    Between steps the KV cache holds every emitted token but the last (``pending``); each step
    verifies ``[pending] + draft`` and pops the rejected entries.  On return the cache is as plain
    decoding leaves it: every emitted token but the last, and the stop token when one ended the output
    (where the context window has room for it); a full cache ends the output (``context_window``).
    """
    stats = stats if stats is not None else SpeculativeStats()
    if drafter is None:
        yield from generate(engine, prompt_ids, max_tokens, sampler, stop_strings, stats, continue_sequence)
        return
    policy = draft_length if isinstance(draft_length, DraftLength) else DraftLength(draft_length)
    if not continue_sequence:
        engine.reset()
    start = time.perf_counter()
    greedy = sampler.temperature == 0  # then only token ids leave the device (Engine.verify_argmax)
    step_tokens = [engine.prefill_argmax(prompt_ids) if greedy else sampler(engine.prefill(prompt_ids))]
    stats.prompt_tokens = len(prompt_ids)
    stats.prefill_seconds = time.perf_counter() - start
    start = time.perf_counter()
    emitted: list[int] = []
    try:
        while True:
            end, stopped_by = _emit(engine, step_tokens, emitted, max_tokens, stop_strings)
            stats.generated_tokens += end
            yield from step_tokens[:end]
            if stopped_by:
                stats.stopped_by = stopped_by
                _settle_cache(engine, step_tokens, end, stopped_by)
                return
            pending = step_tokens[-1]  # emitted, not yet in the KV cache
            room = engine.context_window - engine.length - 1  # the verify pass adds pending + n tokens
            if room < 0:
                stats.stopped_by = "context_window"
                return
            n = min(policy.current, max_tokens - len(emitted) - 1, room)  # the step adds at most n + 1 tokens
            clock = time.perf_counter()
            draft, q = drafter.propose(engine.tokens + [pending], n) if n > 0 else ([], None)
            verify_start = time.perf_counter()
            if greedy:
                accepted, extra = _accept_greedy(engine.verify_argmax([pending] + draft), draft)
            else:
                accepted, extra = _accept(engine.verify([pending] + draft), draft, q, sampler)
            engine.rollback(len(draft) - accepted)
            stats.draft_seconds += verify_start - clock
            stats.verify_seconds += time.perf_counter() - verify_start
            stats.record(policy.current, len(draft), accepted)
            policy.update(len(draft), accepted)
            step_tokens = draft[:accepted] + [extra]
    finally:
        stats.decode_seconds = time.perf_counter() - start


def _emit(engine: Engine, step_tokens: list[int], emitted: list[int], max_tokens: int,
          stop_strings: tuple[str, ...]) -> tuple[int, str | None]:
    """Append the tokens of one step to ``emitted`` up to the first stop.  Returns how many of
    ``step_tokens`` are emitted (a stop token is not, the token completing a stop string is) and
    what ended the output there (``stop_token``, ``stop_string``, ``max_tokens``; None: nothing)."""
    for i, token in enumerate(step_tokens):
        if token in engine.stop_token_ids:
            return i, "stop_token"
        emitted.append(token)
        if stop_strings and any(s in engine.tokenizer.decode(emitted) for s in stop_strings):
            return i + 1, "stop_string"
        if len(emitted) >= max_tokens:
            return i + 1, "max_tokens"
    return len(step_tokens), None


def _settle_cache(engine: Engine, step_tokens: list[int], end: int, stopped_by: str) -> None:
    """Leave the KV cache as plain decoding would after the output ended within ``step_tokens``.

    The cache holds ``step_tokens[:-1]`` (the accepted draft); it must keep the emitted tokens but
    the last, ``step_tokens[:end - 1]``, or, after a stop token (not emitted, but in the cache after
    plain decoding), ``step_tokens[:end + 1]``.
    """
    keep = end + 1 if stopped_by == "stop_token" else end - 1
    in_cache = len(step_tokens) - 1
    if keep > in_cache:
        if engine.length < engine.context_window:  # a full cache cannot take the stop token
            engine.decode(step_tokens[in_cache])
    else:
        engine.rollback(in_cache - keep)
