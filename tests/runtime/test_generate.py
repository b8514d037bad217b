"""Generation on the tiny package: token counts, stop tokens and strings, seeded sampling, and
the sampling distribution itself against its definition."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.runtime.engine import Engine
from pipeline.runtime.generate import GenerationStats, generate
from pipeline.runtime.sampling import Sampler, probabilities


@pytest.fixture(scope="module")
def engine(tiny_package):
    return Engine(tiny_package[0])


PROMPT = [2, 10, 11, 12, 13]


def test_exactly_max_tokens_without_a_stop(engine):
    engine.stop_token_ids = set()
    for n in (1, 2, 7, 30):
        stats = GenerationStats()
        out = list(generate(engine, PROMPT, n, Sampler(), stats=stats))
        assert len(out) == n and stats.stopped_by == "max_tokens" and stats.generated_tokens == n


def test_greedy_output_is_the_argmax_chain(engine):
    engine.stop_token_ids = set()
    out = list(generate(engine, PROMPT, 6, Sampler()))
    engine.reset()
    logits = engine.prefill(PROMPT)
    expected = []
    for _ in range(6):
        expected.append(int(np.argmax(logits)))
        logits = engine.decode(expected[-1])
    assert out == expected


def test_greedy_ids_from_the_device_equal_numpys_argmax_of_the_logits(engine):
    """prefill_argmax / decode_argmax / verify_argmax (the library's argmax_logits, only ids copied
    back) against numpy's argmax of prefill / decode / verify's logits; the same without the
    library function (an older library: numpy on the host)."""
    assert engine._argmax is not None  # the tiny package's library has argmax_logits
    draft = [20, 21, 22, 23]
    engine.reset()
    want = [int(np.argmax(engine.prefill(PROMPT))), int(np.argmax(engine.decode(30)))]
    want.append(np.argmax(engine.verify(draft), axis=-1).tolist())
    for function in (engine._argmax, None):
        engine._argmax = function
        engine.reset()
        got = [engine.prefill_argmax(PROMPT), engine.decode_argmax(30), engine.verify_argmax(draft)]
        assert got == want
    engine._argmax = engine.vm["argmax_logits"]


def test_stop_token_ends_generation_before_it(engine):
    engine.stop_token_ids = set()
    free = list(generate(engine, PROMPT, 8, Sampler()))
    engine.stop_token_ids = {free[3]}
    stats = GenerationStats()
    cut = list(generate(engine, PROMPT, 8, Sampler(), stats=stats))
    assert cut == free[: free.index(free[3])] and stats.stopped_by == "stop_token"


def test_stop_string_ends_generation_after_the_token_that_completes_it(engine):
    engine.stop_token_ids = set()
    free = list(generate(engine, PROMPT, 8, Sampler()))
    word = engine.tokenizer.decode([free[2]])
    stats = GenerationStats()
    cut = list(generate(engine, PROMPT, 8, Sampler(), stop_strings=(word,), stats=stats))
    first = next(i for i, t in enumerate(free) if word in engine.tokenizer.decode(free[: i + 1]))
    assert cut == free[: first + 1] and stats.stopped_by == "stop_string"


def test_seeded_sampling_is_reproducible_and_seed_dependent(engine):
    engine.stop_token_ids = set()
    runs = [list(generate(engine, PROMPT, 12, Sampler(1.0, 0.95, seed))) for seed in (5, 5, 6)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_top_p_keeps_the_smallest_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    probs = probabilities(logits, 1.0, top_p=0.75)  # 0.5 < 0.75 <= 0.5 + 0.3
    np.testing.assert_allclose(probs, [0.5 / 0.8, 0.3 / 0.8, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(probabilities(logits, 1.0, 1.0), [0.5, 0.3, 0.15, 0.05], rtol=1e-12)


def test_sampling_frequencies_follow_the_distribution():
    """Chi-square goodness of fit at significance 0.001 over 20000 draws (scipy-free: the 0.999
    quantile of chi-square with 3 degrees of freedom is 16.27)."""
    logits = np.array([2.0, 1.0, 0.5, -1.0])
    sampler = Sampler(temperature=0.7, seed=123)
    counts = np.bincount([sampler(logits) for _ in range(20000)], minlength=4)
    expected = probabilities(logits, 0.7) * 20000
    assert ((counts - expected) ** 2 / expected).sum() < 16.27


@pytest.mark.parametrize("temperature,top_p", [(-1.0, 1.0), (1.0, 0.0), (1.0, 1.5)])
def test_bad_sampling_parameters(temperature, top_p):
    with pytest.raises(ValueError):
        Sampler(temperature, top_p)


def test_a_reply_closed_early_keeps_its_decode_time(engine):
    """Closing the generator (chat's Ctrl-C) still records the time decoding took, so the stats
    line gives a real decode rate (it said 0.0 tok/s)."""
    stats = GenerationStats()
    tokens = generate(engine, [2, 40, 41], 32, Sampler(), stats=stats)
    for _ in range(6):
        next(tokens)
    tokens.close()
    assert stats.generated_tokens == 6 and stats.decode_seconds > 0 and stats.decode_rate > 0
