"""A reduced drafting vocabulary (FR-Spec; pipeline/models/draft_vocab.py) on the tiny Gemma 3 with
its echoing MTP head, built through the pipeline with ``mtp.draft_vocab`` in q4f32_1.

The counts are made as the real ones are: token frequencies of the base's own greedy output
(here the tiny base's, on random prompts).  Checked: the drafter's rows are the base's stored rows
bit for bit and its ids the most frequent ones; a chain drafted in the library (``draft_step`` /
``draft_token``) equals the full-vocabulary chain with its argmax restricted to those ids (numpy);
speculative output equals plain decoding's; drafts never leave the set; bad counts files are one
clear error each.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
import tvm
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

from pipeline.errors import PipelineError
from pipeline.models.draft_vocab import read_token_counts
from pipeline.package.tensor_cache import read_tensor_cache
from pipeline.runtime.drafters import load_drafter, package_speculative
from pipeline.runtime.engine import Engine
from pipeline.runtime.generate import generate
from pipeline.runtime.sampling import Sampler
from pipeline.runtime.speculative import SpeculativeStats, speculative_generate
from tests.helpers.packages import build_package
from tests.helpers.references import echo_head

SIZE = 40  # of the tiny base's 96 tokens


def prompts(count, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(4, 96, size=int(rng.integers(3, 20))).tolist() for _ in range(count)]


def write_counts(path, counter):
    ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    ids, counts = np.array([t for t, _ in ranked], np.int32), np.array([c for _, c in ranked], np.int64)
    save_numpy({"ids": ids, "counts": counts}, str(path))


@pytest.fixture(scope="module")
def vocab_package(tiny_package, tmp_path_factory):
    """``(package, counter)``: the tiny base (q4f32_1) with the echo head over the SIZE tokens its
    q0f32 build generates most often."""
    root = tmp_path_factory.mktemp("draft-vocab")
    engine = Engine(tiny_package[0])
    counter = Counter()
    for prompt in prompts(12, 7):
        counter.update(generate(engine, prompt, 24, Sampler(0.0, 1.0)))
    counter.update({t: 0 for t in range(96)})  # every token listed: the tiny base's output uses fewer than SIZE
    write_counts(root / "counts.safetensors", counter)
    save_file(echo_head(tiny_package[1]), str(root / "head.safetensors"))
    (root / "head.json").write_text(json.dumps({"layer_type": "full_attention"}))
    package = build_package(
        root, tiny_package[0].parent / "hf", quantization="q4f32_1", speculative={"mode": "mtp", "draft_length": 3},
        mtp={"family": "gemma3_mtp", "format": "safetensors", "path": "head.safetensors",
             "architecture": "head.json", "draft_vocab": {"counts": "counts.safetensors", "size": SIZE}})
    return package, counter


@pytest.fixture(scope="module")
def engine_and_drafter(vocab_package):
    engine = Engine(vocab_package[0])
    return engine, load_drafter(engine, package_speculative(vocab_package[0], engine.runtime_config))


def test_rows_are_the_base_rows_and_ids_the_most_frequent(vocab_package):
    package, counter = vocab_package
    top = sorted(t for t, _ in sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:SIZE])
    speculative = json.loads((package / "mlc-mtp-config.json").read_text())["speculative"]
    assert speculative["draft_vocab"] == {"size": SIZE, "param": "draft_vocab", "counts": "counts.safetensors"}
    base = {k: v.numpy() for k, v in read_tensor_cache(package, tvm.cpu()).items()}
    drafter = {k: v.numpy() for k, v in read_tensor_cache(package / speculative["drafter_weights"], tvm.cpu()).items()}
    assert drafter["draft_vocab"].tolist() == top
    for part in ("q_weight", "q_scale"):
        np.testing.assert_array_equal(drafter[f"draft_embed.{part}"], base[f"model.embed_tokens.{part}"][top])


def test_library_chain_equals_restricted_argmax(engine_and_drafter):
    """The one-call chain (``draft_chain_<G>``), the chain of per-token calls and the
    full-vocabulary chain with numpy's argmax restricted to the ids draft the same tokens, and
    each leaves G - 1 speculative entries (the next chain, after they are popped, is the same)."""
    engine, drafter = engine_and_drafter
    chain = drafter.chain
    ids = chain.draft_vocab
    assert sorted(chain.chains) == list(range(2, 9))
    one_call = dict(chain.chains)
    for prompt in prompts(4, 30):
        engine.reset()
        pending = int(np.argmax(engine.prefill(prompt)))
        drafter.catch_up(engine.tokens + [pending])
        for length in (1, 2, 4, 8):
            chain.chains = one_call
            ours = chain.draft_tokens(length)
            assert chain.speculative == length - 1
            chain.chains = {}
            per_token = chain.draft_tokens(length)
            reference = chain.draft(length, choose=lambda row: int(ids[np.argmax(row[ids])])).tokens
            assert ours == per_token == reference, (prompt, length)
            assert set(ours) <= set(ids.tolist())
    chain.chains = one_call


def test_speculative_output_equals_plain_decoding(engine_and_drafter):
    engine, drafter = engine_and_drafter
    totals = SpeculativeStats()
    vocab = set(drafter.chain.draft_vocab.tolist())
    proposed = []
    original = drafter.propose

    def spy(history, n):
        tokens, q = original(history, n)
        proposed.extend(tokens)
        return tokens, q

    drafter.propose = spy
    try:
        for prompt in prompts(6, 50):
            plain = list(generate(engine, prompt, 32, Sampler(0.0, 1.0)))
            spec = list(speculative_generate(engine, prompt, 32, Sampler(0.0, 1.0), drafter, 3, stats=totals))
            assert spec == plain, prompt
            sampled = list(speculative_generate(engine, prompt, 16, Sampler(0.8, 0.95, seed=3), drafter, 3))
            assert len(sampled) == 16 or engine.tokens[-1] in engine.stop_token_ids
    finally:
        drafter.propose = original
    assert set(proposed) <= vocab
    assert 0 < totals.accepted < totals.drafted  # drafts accepted and rejected


def test_bad_counts_files_are_one_clear_error(tmp_path):
    save_numpy({"ids": np.array([5, 3, 3], np.int32), "counts": np.array([9, 4, 1], np.int64)},
               str(tmp_path / "dup.st"))
    save_numpy({"ids": np.array([5, 300], np.int32), "counts": np.array([9, 4], np.int64)}, str(tmp_path / "big.st"))
    save_numpy({"tokens": np.array([5], np.int32)}, str(tmp_path / "keys.st"))
    (tmp_path / "junk.st").write_bytes(b"not safetensors")
    cases = {"dup.st": (3, "listed twice"), "big.st": (2, "token id 300 outside the base's vocabulary (0..95)"),
             "keys.st": (1, "expected 'ids' and 'counts'"), "junk.st": (1, "unreadable safetensors file")}
    for name, (size, message) in cases.items():
        with pytest.raises(PipelineError, match=f"^cfg: mtp.draft_vocab: .*{name}.*{re.escape(message)}"):
            read_token_counts(tmp_path / name, size, 96, "cfg: mtp.draft_vocab")
    with pytest.raises(PipelineError, match="counts 2 tokens, fewer than the 5 asked for"):
        read_token_counts(tmp_path / "big.st", 5, 96, "cfg")
    assert read_token_counts(tmp_path / "dup.st", 2, 96, "cfg").tolist() == [3, 5]
