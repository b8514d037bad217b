"""How many tokens the drafter proposes per speculative step: a fixed draft length, or one that
adapts to how many of the drafter's tokens the base model has been accepting.

Adaptive rule (a variant of the "heuristic" schedule of Hugging Face transformers' assisted
generation, ``AssistedCandidateGenerator.update_candidate_strategy`` in
``src/transformers/generation/candidate_generator.py``, which adds 2 after a fully accepted step
and subtracts 1 otherwise): after a step whose draft was accepted in full, the draft length grows
by one; after a step that rejected any draft token, it shrinks by one; it stays within
``[minimum, maximum]``.  With a per-token acceptance rate ``a`` a draft of length ``G`` is
accepted in full with probability ``a**G``, so the length settles where that probability is
about one half, ``G ~ ln(1/2) / ln(a)`` (``a`` 0.8 -> about 3, 0.9 -> about 6.6).
"""

from __future__ import annotations


class DraftLength:
    """The draft length of the next speculative step.

    Args:
        initial: draft length of the first step (tokens, >= 1).
        adaptive: False keeps ``initial`` for every step; True applies the rule above.
        minimum, maximum: bounds of the adaptive draft length, ``1 <= minimum <= initial <= maximum``
            (user input is checked by :func:`pipeline.config.loader.speculative_settings`).
    """

    def __init__(self, initial: int, adaptive: bool = False, minimum: int = 1, maximum: int = 8):
        self.current, self.adaptive = initial, adaptive
        self.minimum, self.maximum = minimum, maximum

    def update(self, drafted: int, accepted: int) -> None:
        """Account for a step that proposed ``drafted`` tokens of which the first ``accepted`` were
        accepted.  A step shortened by the ``max_tokens`` budget (``drafted < current``) changes nothing."""
        if not self.adaptive or drafted < self.current:
            return
        step = 1 if accepted == drafted else -1
        self.current = min(self.maximum, max(self.minimum, self.current + step))
