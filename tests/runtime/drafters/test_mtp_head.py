"""The ``gemma3_mtp`` drafter family (formerly ``mtp``) end to end on the tiny random Gemma 3 with an MTP head
of random weights: built through the pipeline from ``mtp: {family: gemma3_mtp, format: safetensors, path,
architecture}``, loaded by ``speculative.drafter_family``, driving speculative decoding.

The head's weights are random, except that ``eh_proj`` passes ``hnorm(h)`` through and the block's
branches are damped, so that it mostly repeats the base's own next-token prediction: right
often enough on the tiny model's repetitive greedy output for steps to accept drafts, wrong often
enough for roll-backs (both are asserted).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.errors import PipelineError
from pipeline.runtime.draft_length import DraftLength
from pipeline.runtime.drafters import load_drafter, package_speculative
from pipeline.runtime.drafters.mtp_head import MTPHeadDrafter
from pipeline.runtime.engine import Engine
from pipeline.runtime.generate import generate
from pipeline.runtime.sampling import Sampler
from pipeline.runtime.speculative import SpeculativeStats, speculative_generate
from tests.helpers.packages import build_package

ATOL = 1e-4


@pytest.fixture(scope="module")
def engine_and_drafter(mtp_package):
    engine = Engine(mtp_package)
    drafter = load_drafter(engine, package_speculative(mtp_package, engine.runtime_config))
    return engine, drafter


def test_package_names_the_mtp_drafter(mtp_package, engine_and_drafter):
    speculative = json.loads((mtp_package / "mlc-mtp-config.json").read_text())["speculative"]
    assert speculative["drafter_family"] == "gemma3_mtp" and speculative["mode"] == "mtp"
    assert (mtp_package / speculative["drafter_lib"]["cpu"]).is_file()
    assert (mtp_package / speculative["drafter_weights"] / "tensor-cache.json").is_file()
    assert isinstance(engine_and_drafter[1], MTPHeadDrafter)


@pytest.mark.parametrize("draft_length", [1, 2, 4, "adaptive"])
def test_greedy_speculative_output_equals_plain_decoding(engine_and_drafter, draft_length):
    engine, drafter = engine_and_drafter
    totals = SpeculativeStats()
    for seed in range(4):
        rng = np.random.default_rng(40 + seed)
        prompt = rng.integers(4, 96, size=int(rng.integers(3, 30))).tolist()
        plain = list(generate(engine, prompt, 32, Sampler(0.0, 1.0)))
        policy = DraftLength(2, True, 1, 6) if draft_length == "adaptive" else draft_length
        stats = SpeculativeStats()
        spec = list(speculative_generate(engine, prompt, 32, Sampler(0.0, 1.0), drafter, policy, stats=stats))
        assert spec == plain, seed
        assert drafter.context.length == engine.length
        for name in ("drafted", "accepted"):
            setattr(totals, name, getattr(totals, name) + getattr(stats, name))
    assert 0 < totals.accepted < totals.drafted  # drafts were accepted and rejected


def test_context_and_head_after_rollbacks_equal_a_fresh_run(mtp_package, engine_and_drafter):
    """After speculative steps with roll-backs, the engine's hidden states equal a fresh prefill's
    of the same tokens, and the head's next chain equals that of a fresh drafter."""
    engine, drafter = engine_and_drafter
    prompt = np.random.default_rng(7).integers(4, 96, size=11).tolist()
    stats = SpeculativeStats()
    out = list(speculative_generate(engine, prompt, 40, Sampler(0.0, 1.0), drafter, 3, stats=stats))
    assert stats.drafted > stats.accepted  # there were roll-backs
    history = engine.tokens + [out[-1]]

    fresh_engine = Engine(mtp_package)
    speculative = fresh_engine.runtime_config["speculative"]
    fresh = MTPHeadDrafter(fresh_engine, mtp_package / speculative["drafter_lib"]["cpu"],
                       mtp_package / speculative["drafter_weights"])
    fresh_engine.prefill(engine.tokens)
    np.testing.assert_allclose(drafter.context.hidden_states(0, engine.length).numpy(),
                               fresh.context.hidden_states(0, fresh_engine.length).numpy(), atol=ATOL, rtol=0)

    drafter.catch_up(history)
    fresh.catch_up(history)
    ours, theirs = drafter.chain.draft(4), fresh.chain.draft(4)
    assert ours.tokens == theirs.tokens
    np.testing.assert_allclose(ours.logits, theirs.logits, atol=ATOL, rtol=0)


def test_new_prompts_and_continued_sequences(engine_and_drafter, monkeypatch):
    """A new prompt starts the head's cache afresh; a continued sequence (a chat turn) keeps its
    entries; both give plain decoding's tokens."""
    engine, drafter = engine_and_drafter
    resets = []
    reset = drafter.chain.reset
    monkeypatch.setattr(drafter.chain, "reset", lambda: (resets.append(1), reset())[1])
    rng = np.random.default_rng(9)
    first, second = rng.integers(4, 96, size=9).tolist(), rng.integers(4, 96, size=6).tolist()
    sampler = Sampler(0.0, 1.0)
    plain = [list(generate(engine, first, 20, sampler)),
             list(generate(engine, second, 20, sampler, continue_sequence=True))]
    plain_tokens = list(engine.tokens)
    spec, counts, cached = [], [], []
    for prompt, continued in ((first, False), (second, True), (second, False)):
        spec.append(list(speculative_generate(engine, prompt, 20, sampler, drafter, 3, continue_sequence=continued)))
        counts.append(len(resets))
        cached.append(list(engine.tokens))
    assert spec[:2] == plain and cached[1] == plain_tokens
    assert spec[2] == list(generate(engine, second, 20, sampler))
    assert counts == [1, 1, 2]  # fresh for each new prompt, none for the continued turn


def test_unknown_drafter_family_is_named(mtp_package):
    engine = Engine(mtp_package)
    settings = package_speculative(mtp_package, engine.runtime_config)
    with pytest.raises(PipelineError,
                       match=r"drafter_family: 'eagle', expected one of \['gemma3_mtp', 'gemma4_assistant'\]"):
        load_drafter(engine, {**settings, "drafter_family": "eagle"})


def test_older_drafter_family_name_still_loads(mtp_package):
    """A package built while the family was called ``mtp`` names it so (a registry alias); it loads
    the same drafter."""
    engine = Engine(mtp_package)
    settings = package_speculative(mtp_package, engine.runtime_config)
    assert isinstance(load_drafter(engine, {**settings, "drafter_family": "mtp"}), MTPHeadDrafter)


def test_a_package_naming_no_drafter_family_is_refused(mtp_package):
    """No silent default family: one line naming the file, the key, null and the known families."""
    engine = Engine(mtp_package)
    settings = package_speculative(mtp_package, engine.runtime_config)
    with pytest.raises(PipelineError) as err:
        load_drafter(engine, {**settings, "drafter_family": None})
    assert str(err.value) == (f"{mtp_package / 'mlc-mtp-config.json'}: speculative.drafter_family: null, "
                              f"expected one of ['gemma3_mtp', 'gemma4_assistant']")


def test_the_head_library_records_the_model_type_the_runtime_expects():
    """The runtime names the head's ``model_type`` without importing model code; it is the model's."""
    from pipeline.models.gemma3_mtp.model import MTPConfig
    from pipeline.runtime.drafters.mtp_head import MODEL_TYPE

    assert MODEL_TYPE == MTPConfig.model_type


def test_mtp_family_needs_its_architecture_file(tiny_package, tmp_path):
    save_file({"layers.0.enorm.weight": torch.zeros(64)}, str(tmp_path / "head.safetensors"))
    with pytest.raises(PipelineError) as err:
        build_package(tmp_path, tiny_package[0].parent / "hf",
                      mtp={"family": "gemma3_mtp", "format": "safetensors", "path": "head.safetensors"})
    assert "mtp.architecture: not given" in str(err.value) and "\n" not in str(err.value)


def test_plain_forward_runs_without_the_context(engine_and_drafter):
    """Speculation off on the engine that holds the drafter (bench's baseline): the plain
    functions run, no context is kept, and speculation afterwards still equals plain decoding."""
    engine, drafter = engine_and_drafter
    prompt = np.random.default_rng(11).integers(4, 96, size=10).tolist()
    with engine.plain_forward():
        plain = list(generate(engine, prompt, 16, Sampler(0.0, 1.0)))
        assert engine.capture is None and engine.length == len(prompt) + 15
    assert engine.length == 0 and drafter.context.length == 0
    assert list(speculative_generate(engine, prompt, 16, Sampler(0.0, 1.0), drafter, 2)) == plain
