"""Speculative decoding on the tiny random Gemma 3: lossless against plain decoding, with fixed
and adaptive draft lengths.

Drafters here are Python stand-ins for MTP heads (tests/runtime/drafters.py): an oracle (replays
the base model's own greedy continuation), a random one, and a "trained-looking" one (right 70%
of the time).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from pipeline.runtime.chat import ChatSession
from pipeline.runtime.draft_length import DraftLength
from pipeline.runtime.engine import Engine
from pipeline.runtime.generate import generate
from pipeline.runtime.sampling import Sampler, probabilities
from pipeline.runtime.speculative import SpeculativeStats, speculative_generate
from tests.helpers.stand_ins import (
    VOCAB,
    GreedyDrafter,
    NoisyOracleDrafter,
    OracleDrafter,
    RandomDrafter,
    SelfDrafter,
)


@pytest.fixture(scope="module")
def engine(tiny_package):
    eng = Engine(tiny_package[0])
    eng.stop_token_ids = set()  # random weights: let every run reach max_tokens
    return eng


def plain_greedy(engine, prompt, n):
    return list(generate(engine, prompt, n, Sampler()))


def make_drafter(kind, prompt, continuation, seed):
    return {"oracle": lambda: OracleDrafter(prompt, continuation),
            "random": lambda: RandomDrafter(seed),
            "noisy": lambda: NoisyOracleDrafter(prompt, continuation, seed),
            "greedy": lambda: GreedyDrafter(prompt, continuation)}[kind]()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.lists(st.integers(4, VOCAB - 1), min_size=1, max_size=20),
       draft_length=st.integers(1, 5), adaptive=st.booleans(), max_draft_length=st.integers(5, 8),
       max_tokens=st.integers(1, 24), kind=st.sampled_from(["oracle", "random", "noisy"]), seed=st.integers(0, 1000))
def test_greedy_speculative_equals_greedy_plain(engine, prompt, draft_length, adaptive, max_draft_length,
                                                max_tokens, kind, seed):
    expected = plain_greedy(engine, prompt, max_tokens)
    policy = DraftLength(draft_length, adaptive, 1, max_draft_length)
    stats = SpeculativeStats()
    out = list(speculative_generate(engine, prompt, max_tokens, Sampler(), make_drafter(kind, prompt, expected, seed),
                                    policy, stats=stats))
    assert out == expected
    assert stats.generated_tokens == max_tokens
    assert all(1 <= g <= max_draft_length for g in stats.draft_lengths) if adaptive else \
        stats.draft_lengths == [draft_length] * stats.steps
    assert stats.drafted <= sum(stats.draft_lengths)  # the max_tokens budget may cut the last drafts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.lists(st.integers(4, VOCAB - 1), min_size=1, max_size=12), draft_length=st.integers(1, 5),
       adaptive=st.booleans(), max_tokens=st.integers(1, 20), stop=st.sampled_from(["none", "token", "string"]),
       stop_at=st.integers(0, 19), kind=st.sampled_from(["oracle", "random", "noisy"]), seed=st.integers(0, 1000))
def test_output_and_kv_cache_end_as_after_plain_decoding(engine, prompt, draft_length, adaptive, max_tokens, stop,
                                                         stop_at, kind, seed):
    """Whatever ends the output (max_tokens, a stop token, a stop string, at any place in a
    step's accepted chain), the tokens and the KV cache's sequence equal plain decoding's."""
    free = plain_greedy(engine, prompt, 20)
    stop_token_ids, stop_strings = set(), ()
    if stop == "token":
        stop_token_ids = {free[stop_at]}
    elif stop == "string":
        stop_strings = (engine.tokenizer.decode([free[stop_at]]),)
    engine.stop_token_ids = stop_token_ids
    try:
        plain_stats, spec_stats = SpeculativeStats(), SpeculativeStats()
        plain = list(generate(engine, prompt, max_tokens, Sampler(), stop_strings, plain_stats))
        plain_cache = list(engine.tokens)
        spec = list(speculative_generate(engine, prompt, max_tokens, Sampler(), make_drafter(kind, prompt, free, seed),
                                         DraftLength(draft_length, adaptive, 1, 6), stop_strings, spec_stats))
    finally:
        engine.stop_token_ids = set()
    assert spec == plain and engine.tokens == plain_cache
    assert spec_stats.stopped_by == plain_stats.stopped_by


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
    assert (stats.generated_tokens - 1) / stats.steps == stats.tokens_per_step == draft_length + 1
    assert stats.accepted_per_step == draft_length and stats.draft_lengths == [draft_length] * steps


def test_adaptive_draft_length_rises_with_an_oracle_drafter(engine):
    prompt, max_tokens = [2, 9, 17, 33], 1 + (2 + 3 + 4 + 5 + 6) + 3 * 6
    expected = plain_greedy(engine, prompt, max_tokens)
    stats = SpeculativeStats()
    out = list(speculative_generate(engine, prompt, max_tokens, Sampler(), OracleDrafter(prompt, expected),
                                    DraftLength(1, adaptive=True, minimum=1, maximum=5), stats=stats))
    assert out == expected
    # every step accepted in full: 1, 2, ..., 5, then held at the bound; each yields G + 1 tokens
    assert stats.draft_lengths == [1, 2, 3, 4, 5, 5, 5, 5]
    assert stats.acceptance_rate() == [1.0] * 5


def test_adaptive_draft_length_falls_with_a_random_drafter(engine):
    prompt = [2, 40, 41, 42]
    expected = plain_greedy(engine, prompt, 40)
    stats = SpeculativeStats()
    out = list(speculative_generate(engine, prompt, 40, Sampler(), RandomDrafter(1),
                                    DraftLength(6, adaptive=True, minimum=1, maximum=6), stats=stats))
    assert out == expected
    assert stats.draft_lengths[:6] == [6, 5, 4, 3, 2, 1]  # one rejection after another
    assert stats.acceptance_rate()[0] < 0.2 and np.mean(stats.draft_lengths[6:]) < 1.5


@pytest.mark.parametrize("drafted,accepted,before,after", [
    (3, 3, 3, 4), (3, 2, 3, 2), (3, 0, 3, 2), (5, 5, 5, 5), (1, 0, 1, 1),
    (2, 2, 3, 3),  # a draft cut short by max_tokens says nothing about the policy's length
])
def test_adaptive_rule_grows_after_full_acceptance_and_shrinks_after_a_rejection(drafted, accepted, before, after):
    policy = DraftLength(before, adaptive=True, minimum=1, maximum=5)
    policy.update(drafted, accepted)
    assert policy.current == after
    fixed = DraftLength(before)
    fixed.update(drafted, accepted)
    assert fixed.current == before


def test_chat_turns_with_a_drafter_equal_plain_chat_and_leave_the_same_cache(tiny_package):
    """Three turns (the KV cache kept across them): the same replies and the same cached sequence
    with a drafter as without; the adaptive draft length carries over between turns."""
    replies, caches = {}, {}
    for name in ("plain", "speculative"):
        engine = Engine(tiny_package[0])
        drafter = SelfDrafter(tiny_package[0]) if name == "speculative" else None
        session = ChatSession(engine, Sampler(), 10, drafter, DraftLength(1, adaptive=True, maximum=4))
        replies[name] = [list(session.send(message)) for message in ("w5 w6", "w7", "w8 w9 w10")]
        caches[name] = list(engine.tokens)
        if drafter:
            assert session.draft_length.current > 1
    assert replies["speculative"] == replies["plain"] and caches["speculative"] == caches["plain"]
    assert sum(map(len, replies["plain"])) > 3


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


@pytest.mark.parametrize("kind", ["random", "noisy", "greedy"])
def test_sampled_speculative_output_follows_the_plain_distribution(engine, kind):
    """Chi-square goodness of fit of the second generated token (the first drafted and verified
    one: with max_tokens 3 the step drafts 1) against its exact distribution under plain
    sampling, significance 0.001.  ``greedy``: the base's greedy chain with ``q`` None (one-hot,
    as the real drafters return it)."""
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
        drafter = make_drafter(kind, prompt, greedy_next, seed)
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

