"""The real Gemma 3 270M with its trained MTP head (configs/gemma3-270m-mtp.yaml, the head in
assets/gemma3-270m-mtp), built by the pipeline: greedy speculative decoding with the package's
settings (draft length 3, adaptive in [1, 8]) emits plain decoding's tokens, and the head's
drafts are accepted at draft position 0 at least :data:`MIN_ACCEPTANCE_0` of the time.

Prompts are not from the training set (tools/mtp_prompts.py).  Measured 2026-12-07 on this
project's machine with the head retrained on the qsrcf32 base: position-0 acceptance 0.576 (83
of 144 steps), 2.16 tokens per step; per prompt 0.65, 0.58, 0.56 (code), 0.43, 1.00 (the first
head over its q4f32_1 base: 0.641).  Greedy decoding is deterministic, but another CPU's rounding
can flip near-ties, hence the margin.
"""

from __future__ import annotations

import pytest

from pipeline.build import build
from pipeline.config import load_config
from pipeline.runtime.drafters import draft_length_policy, load_drafter, package_speculative
from pipeline.runtime.engine import Engine
from pipeline.runtime.generate import generate
from pipeline.runtime.sampling import Sampler
from pipeline.runtime.speculative import SpeculativeStats, speculative_generate

pytestmark = pytest.mark.slow

MIN_ACCEPTANCE_0 = 0.55  # measured 0.576 (2026-12-07)
NEW_TOKENS = 64
PROMPTS = ["A good friend is someone who", "The planet Mars has two small moons,", "def quicksort(items):\n",
           "Here is how to plant a tree:\n1.",
           "<start_of_turn>user\nWhat is the tallest mountain in the world?<end_of_turn>\n<start_of_turn>model\n"]


@pytest.fixture(scope="module")
def engine_and_drafter(tmp_path_factory):
    config = load_config("configs/gemma3-270m-mtp.yaml")
    package = build(config, output=tmp_path_factory.mktemp("real-mtp") / "pkg", progress=False,
                    say=lambda _: None).output
    engine = Engine(package)
    settings = package_speculative(package, engine.runtime_config)
    return engine, load_drafter(engine, settings), settings


def test_trained_head_drafts_are_lossless_and_accepted(engine_and_drafter):
    engine, drafter, settings = engine_and_drafter
    assert settings["mode"] == "mtp" and engine.runtime_config["speculative"]["drafter_family"] == "gemma3_mtp"
    accepted_0 = proposed_0 = 0
    for text in PROMPTS:
        ids = [engine.chat_config["bos_token_id"]] + engine.tokenizer.encode(text, add_special_tokens=False).ids
        plain = list(generate(engine, ids, NEW_TOKENS, Sampler(0.0, 1.0)))
        stats = SpeculativeStats()
        spec = list(speculative_generate(engine, ids, NEW_TOKENS, Sampler(0.0, 1.0), drafter,
                                         draft_length_policy(settings), stats=stats))
        assert spec == plain, text
        accepted_0 += stats.accepted_at[0]
        proposed_0 += stats.proposed_at[0]
    assert accepted_0 / proposed_0 >= MIN_ACCEPTANCE_0, (accepted_0, proposed_0)
