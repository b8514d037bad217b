"""What every drafter shares: the :class:`Drafter` protocol the speculative loop calls
(:mod:`pipeline.runtime.speculative`), and the :class:`Capture` hook through which a drafter has the
engine keep, per forward pass, what it reads of the base model
(:meth:`pipeline.runtime.engine.Engine.attach`).

A capture names the base library's functions to run instead of the plain ``prefill`` / ``decode``
/ ``batch_verify`` (:attr:`Capture.functions`), turns their outputs into logits
on the device (:meth:`Capture.read`), and stores the rest in an :class:`~pipeline.runtime.drafters.context.MTPContext`
that follows the KV cache (reset with a new sequence, truncated on roll-back).
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np

from .context import MTPContext


class Drafter(Protocol):
    """Proposes draft tokens: ``propose(history, n)`` returns ``n`` token ids continuing
    ``history`` (all tokens so far) and their draft distributions, float64 ``(n, vocab)``, or
    None for a greedy drafter (one-hot rows, :func:`one_hot`, made only where sampled
    verification needs them)."""

    def propose(self, history: list[int], n: int) -> tuple[list[int], np.ndarray | None]:
        """``n`` draft tokens and their distributions (None: one-hot)."""


def one_hot(tokens: list[int], vocab_size: int) -> np.ndarray:
    """Draft distributions of a greedy drafter: float64 ``(len(tokens), vocab_size)`` rows, 1 at
    each draft token."""
    q = np.zeros((len(tokens), vocab_size))
    q[np.arange(len(tokens)), tokens] = 1.0
    return q


class Capture:
    """A drafter's hook into the engine's forward passes; subclasses set :attr:`functions` and
    :meth:`read`.  ``context`` holds what was kept, position by position."""

    # forward kind ("prefill", "decode", "batch_verify") -> the base library function run instead
    functions: ClassVar[dict[str, str]] = {}

    def __init__(self):
        self.context = MTPContext()

    def read(self, engine, out, last_only: bool):
        """Keep what the drafter needs of ``out`` (what ``functions[kind]`` returned for ``n`` new
        tokens) and return the float32 ``(1, m, vocab)`` logits the plain function would have
        returned (``m = 1`` when ``last_only``, a prefill; else ``n``), on the device (a
        ``tvm.runtime.Tensor``: the engine copies them to the host or takes their argmax there)."""
        raise NotImplementedError

    def reset(self) -> None:
        """A new sequence: forget everything."""
        self.context.reset()

    def truncate(self, length: int) -> None:
        """The KV cache was rolled back to ``length`` tokens."""
        self.context.truncate(length)
