"""Next-token choice from float32 logits: greedy, temperature and nucleus (top-p) sampling.

Top-p keeps the smallest set of most likely tokens whose probability mass reaches ``top_p``
(Holtzman et al. 2020, arXiv 1904.09751), then renormalizes.
"""

from __future__ import annotations

import numpy as np


def probabilities(logits: np.ndarray, temperature: float, top_p: float = 1.0) -> np.ndarray:
    """Float64 ``(vocab,)`` distribution from ``(vocab,)`` logits at ``temperature`` (> 0) and ``top_p``."""
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, top_p) + 1)]
        mask = np.zeros_like(probs)
        mask[keep] = probs[keep]
        probs = mask / mask.sum()
    return probs


class Sampler:
    """Chooses tokens; ``temperature == 0`` is greedy (argmax, lowest id on ties).

    Args:
        temperature: >= 0.
        top_p: in (0, 1].
        seed: seed of the numpy generator used for sampling.

    Raises:
        ValueError: a parameter out of range.
    """

    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature, self.top_p = temperature, top_p
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> int:
        """Pick one token id from ``(vocab,)`` logits."""
        if self.temperature == 0:
            return int(np.argmax(logits))
        probs = probabilities(logits, self.temperature, self.top_p)
        return int(self.rng.choice(len(probs), p=probs))
