"""The compiled ``gemma4_assistant`` drafter against transformers 5.24 (float32).

A tiny random Gemma 4 base (E2B-like: per-layer embeddings and KV sharing; 31B-like: keys as
values, one global KV head) and a tiny random drafter with the centroid head are built into one
package; a 4-step draft chain after a 16-token prompt (twice the sliding window) is compared
with transformers' assistant driven as ``SinglePositionMultiTokenCandidateGenerator`` drives it.
Tolerance: 1e-4 absolute on logits and projected hidden states.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.runtime.drafters.assistant import AssistantDrafter
from pipeline.runtime.engine import Engine
from tests.helpers.packages import build_assistant_package
from tests.helpers.references import reference_chain

pytestmark = pytest.mark.compile

ATOL = 1e-4


@pytest.fixture(scope="module", params=["e2b", "31b"])
def built(request, tmp_path_factory):
    """``(engine, drafter, hf base, hf assistant)`` for one base shape."""
    package, base, assistant = build_assistant_package(tmp_path_factory.mktemp(f"assistant-{request.param}"),
                                                       request.param)
    engine = Engine(package)
    speculative = engine.runtime_config["speculative"]
    drafter = AssistantDrafter(engine, package / speculative["drafter_lib"]["cpu"],
                               package / speculative["drafter_weights"])
    return engine, drafter, base, assistant


def test_four_step_draft_chain_matches_transformers(built):
    engine, drafter, base, assistant = built
    ids = np.random.default_rng(4).integers(4, 96, size=16).tolist()
    reference = reference_chain(base, assistant, ids, 4)
    engine.reset()
    first = int(np.argmax(engine.prefill(ids)))
    assert first == reference[0][0]
    token, hidden = first, drafter.context.last_hidden()
    for ref_token, ref_logits, ref_hidden in reference:
        assert token == ref_token
        logits, hidden = drafter.step(token, hidden)
        np.testing.assert_allclose(logits, ref_logits, atol=ATOL, rtol=0)
        np.testing.assert_allclose(hidden, ref_hidden, atol=ATOL, rtol=0)
        token = int(np.argmax(logits))
    masked = logits == logits.min()
    assert 0 < masked.sum() < logits.size  # the centroid head kept some tokens and masked the rest
    tokens, q = drafter.propose(ids + [first], 4)
    assert tokens == [int(np.argmax(r[1])) for r in reference]
    assert q is None  # greedy: one-hot draft distributions, made only where sampling needs them


def test_context_follows_verify_and_rollback(built):
    """After a verify pass and a roll-back, the drafter reads the context of exactly the cached
    tokens: its next chain equals the chain after a fresh prefill of the same tokens."""
    engine, drafter, _, _ = built
    rng = np.random.default_rng(5)
    ids, extra = rng.integers(4, 96, size=12).tolist(), rng.integers(4, 96, size=5).tolist()
    engine.reset()
    engine.prefill(ids)
    engine.verify(extra)
    engine.rollback(2)
    assert drafter.context.length == engine.length == len(ids) + 3
    pending = 7
    after_rollback = drafter.propose(engine.tokens + [pending], 3)[0]
    kept = engine.tokens[len(ids):]
    engine.reset()
    engine.prefill(ids)
    engine.verify(kept)
    assert drafter.propose(engine.tokens + [pending], 3)[0] == after_rollback


@pytest.mark.parametrize("draft_length", [1, 3, 5])
def test_speculative_greedy_output_equals_plain_decoding(built, draft_length):
    """With the real drafter, greedy speculative decoding emits plain decoding's tokens exactly."""
    from pipeline.runtime.generate import generate
    from pipeline.runtime.sampling import Sampler
    from pipeline.runtime.speculative import SpeculativeStats, speculative_generate

    engine, drafter, _, _ = built
    for seed in range(3):
        prompt = np.random.default_rng(10 + seed).integers(4, 96, size=9 + 5 * seed).tolist()
        plain = list(generate(engine, prompt, 24, Sampler(0.0, 1.0)))
        stats = SpeculativeStats()
        spec = list(speculative_generate(engine, prompt, 24, Sampler(0.0, 1.0), drafter, draft_length, stats=stats))
        assert spec == plain
        assert stats.drafted > 0  # drafts were proposed and verified, not only plain steps
        assert drafter.context.length == engine.length


def test_cli_generate_and_bench_with_the_packaged_drafter(built, capsys):
    """``generate --speculative mtp`` prints plain decoding's text; ``bench --speculative mtp``
    reports the drafter's acceptance per draft position and the speed-up row."""
    from pipeline.cli import main

    engine = built[0]
    args = ["generate", str(engine.package), "--prompt", "w5 w9 w13 w40 w41", "--max-tokens", "12",
            "--temperature", "0"]
    texts = {}
    for mode in ("off", "mtp"):
        assert main(args + ["--speculative", mode] + (["--draft-length", "3"] if mode == "mtp" else [])) == 0
        texts[mode] = capsys.readouterr().out.splitlines()[0]
    assert texts["mtp"] == texts["off"] and texts["off"].strip()
    assert main(["bench", str(engine.package), "--speculative", "mtp", "--draft-length", "2", "--no-adaptive",
                 "--prompt-tokens", "16", "--decode-tokens", "12", "--repeats", "1"]) == 0
    table = capsys.readouterr().out
    assert "speed-up" in table and "position" in table.lower()
