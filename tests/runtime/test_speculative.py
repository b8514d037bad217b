"""Speculative decoding on the tiny random Gemma 3: lossless against plain decoding.

Drafters here are Python stand-ins for MTP heads: an oracle (replays the base model's own greedy
continuation), a random one, and a "trained-looking" one (right 70% of the time).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from pipeline.runtime.engine import Engine
from pipeline.runtime.generate import generate
from pipeline.runtime.sampling import Sampler, probabilities
from pipeline.runtime.speculative import SpeculativeStats, speculative_generate

VOCAB = 96


@pytest.fixture(scope="module")
def engine(tiny_package):
    eng = Engine(tiny_package[0])
    eng.stop_token_ids = set()  # random weights: let every run reach max_tokens
    return eng


def plain_greedy(engine, prompt, n):
    return list(generate(engine, prompt, n, Sampler()))


class OracleDrafter:
    """Proposes the base model's own greedy continuation of ``prompt``."""

    def __init__(self, prompt, continuation):
        self.prompt, self.continuation = prompt, continuation

    def propose(self, history, n):
        start = len(history) - len(self.prompt)
        tokens = self.continuation[start:start + n]
        tokens += [0] * (n - len(tokens))
        return tokens, np.eye(VOCAB)[tokens]


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


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.lists(st.integers(4, VOCAB - 1), min_size=1, max_size=20),
       draft_length=st.integers(1, 5), max_tokens=st.integers(1, 24),
       kind=st.sampled_from(["oracle", "random", "noisy"]), seed=st.integers(0, 1000))
def test_greedy_speculative_equals_greedy_plain(engine, prompt, draft_length, max_tokens, kind, seed):
    expected = plain_greedy(engine, prompt, max_tokens)
    drafter = {"oracle": lambda: OracleDrafter(prompt, expected),
               "random": lambda: RandomDrafter(seed),
               "noisy": lambda: NoisyOracleDrafter(prompt, expected, seed)}[kind]()
    out = list(speculative_generate(engine, prompt, max_tokens, Sampler(), drafter, draft_length))
    assert out == expected


@pytest.mark.parametrize("draft_length", [1, 3, 5])
def test_oracle_drafter_reaches_g_plus_one_tokens_per_step(engine, draft_length):
    prompt, steps = [2, 9, 17, 33], 6
    max_tokens = 1 + steps * (draft_length + 1)
    expected = plain_greedy(engine, prompt, max_tokens)
    stats = SpeculativeStats()
    out = list(speculative_generate(engine, prompt, max_tokens, Sampler(), OracleDrafter(prompt, expected),
                                    draft_length, stats=stats))
    assert out == expected
    assert stats.steps == steps and stats.acceptance_rate() == [1.0] * draft_length
    assert (stats.emitted - 1) / stats.steps == draft_length + 1


def test_random_drafter_still_gives_identical_text_with_low_acceptance(engine):
    prompt = [2, 40, 41, 42]
    expected = plain_greedy(engine, prompt, 30)
    stats = SpeculativeStats()
    out = list(speculative_generate(engine, prompt, 30, Sampler(), RandomDrafter(0), 4, stats=stats))
    assert out == expected and stats.acceptance_rate()[0] < 0.5


def test_rollback_leaves_the_cache_as_plain_decoding_would(engine):
    prompt = [2, 5, 6, 7, 8]
    out = list(speculative_generate(engine, prompt, 17, Sampler(), RandomDrafter(3), 5))
    assert engine.length == len(prompt) + len(out) - 1  # every emitted token but the last
    after_spec = engine.decode(out[-1])
    fresh = Engine(engine.package)
    fresh.reset()
    np.testing.assert_allclose(after_spec, fresh.prefill(prompt + out), atol=1e-5, rtol=0)


def test_stop_token_inside_an_accepted_chain_cuts_like_plain_decoding(engine):
    prompt = [2, 11, 12]
    free = plain_greedy(engine, prompt, 16)
    engine.stop_token_ids = {free[5]}
    try:
        plain = list(generate(engine, prompt, 16, Sampler()))
        spec = list(speculative_generate(engine, prompt, 16, Sampler(), OracleDrafter(prompt, free), 4))
    finally:
        engine.stop_token_ids = set()
    assert spec == plain == free[: free.index(free[5])]


@pytest.mark.parametrize("make_drafter", ["random", "noisy"])
def test_sampled_speculative_output_follows_the_plain_distribution(engine, make_drafter):
    """Chi-square goodness of fit of the second generated token (the first drafted and verified
    one: with max_tokens 3 the step drafts 1) against its exact distribution under plain
    sampling, significance 0.001."""
    prompt, temperature, top_p, runs = [2, 20, 21, 22], 1.3, 0.9, 1500
    engine.reset()
    first = probabilities(engine.prefill(prompt), temperature, top_p)
    exact = np.zeros(VOCAB)
    for token in np.flatnonzero(first):  # P(second) = sum over first of P(first) P(second | first)
        engine.reset()
        exact += first[token] * probabilities(engine.prefill(prompt + [int(token)]), temperature, top_p)
    greedy_next = plain_greedy(engine, prompt, 3)
    counts = np.zeros(VOCAB)
    for seed in range(runs):
        drafter = RandomDrafter(seed) if make_drafter == "random" else NoisyOracleDrafter(prompt, greedy_next, seed)
        out = list(speculative_generate(engine, prompt, 3, Sampler(temperature, top_p, seed), drafter, 2))
        counts[out[1]] += 1
    expected = exact * runs
    keep = expected >= 5
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    if expected[-1] < 5:
        observed, expected = observed[:-1], expected[:-1] * observed[:-1].sum() / expected[:-1].sum()
    assert counts[exact == 0].sum() == 0
    _, p_value = scipy_stats.chisquare(observed, expected)
    assert p_value > 0.001

