"""Python stand-ins for MTP drafters, over the tiny random Gemma 3 (vocabulary of 96 tokens)."""

from __future__ import annotations

import numpy as np

from pipeline.runtime.engine import Engine

VOCAB = 96


class OracleDrafter:
    """Proposes the base model's own greedy continuation of ``prompt`` (given in advance)."""

    def __init__(self, prompt, continuation):
        self.prompt, self.continuation = prompt, continuation

    def propose(self, history, n):
        start = len(history) - len(self.prompt)
        tokens = self.continuation[start:start + n]
        tokens += [0] * (n - len(tokens))
        return tokens, np.eye(VOCAB)[tokens]


class GreedyDrafter(OracleDrafter):
    """:class:`OracleDrafter` returning ``q`` None, as greedy drafters do (one-hot rows)."""

    def propose(self, history, n):
        return super().propose(history, n)[0], None


class RandomDrafter:
    """Uniformly random tokens; ``q`` is uniform."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def propose(self, history, n):
        return self.rng.integers(0, VOCAB, size=n).tolist(), np.full((n, VOCAB), 1.0 / VOCAB)


class NoisyOracleDrafter(OracleDrafter):
    """Draws from q = 0.7 * one-hot(oracle token) + 0.3 * uniform."""

    def __init__(self, prompt, continuation, seed):
        super().__init__(prompt, continuation)
        self.rng = np.random.default_rng(seed)

    def propose(self, history, n):
        oracle, _ = super().propose(history, n)
        q = 0.3 * np.full((n, VOCAB), 1.0 / VOCAB) + 0.7 * np.eye(VOCAB)[oracle]
        return [int(self.rng.choice(VOCAB, p=row)) for row in q], q


class SelfDrafter:
    """Greedy drafts by a second engine over the same package, for any history (chat turns too):
    ``offset`` 0 proposes the base model's own argmax chain (every token accepted under greedy
    verification), ``offset`` k proposes ``(argmax + k) mod vocab`` (the first token always rejected).
    ``proposals`` counts the calls."""

    def __init__(self, package, offset=0):
        self.engine, self.offset, self.proposals = Engine(package), offset, 0

    def propose(self, history, n):
        self.proposals += 1
        self.engine.reset()
        logits = self.engine.prefill(history)
        tokens = []
        for i in range(n):
            tokens.append((int(np.argmax(logits)) + self.offset) % VOCAB)
            if i + 1 < n:
                logits = self.engine.decode(tokens[-1])
        return tokens, np.eye(VOCAB)[tokens]
