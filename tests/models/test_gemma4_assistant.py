"""The compiled ``gemma4_assistant`` drafter against transformers 5.24 (float32).

A tiny random Gemma 4 base (E2B-like: per-layer embeddings and KV sharing; 31B-like: keys as
values, one global KV head) and a tiny random drafter with the centroid head are built into one
package; a 4-step draft chain after a 16-token prompt (twice the sliding window) is compared
with transformers' assistant driven as ``SinglePositionMultiTokenCandidateGenerator`` drives it:
the same tokens kept (only theirs computed), drafted exactly.  Tolerance: 1e-4 absolute on logits
and projected hidden states.  The head alone is also checked against numpy (ties, quantized rows).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax.frontend import nn

from pipeline.errors import PipelineError
from pipeline.models.gemma4_assistant.config import Gemma4AssistantConfig
from pipeline.models.gemma4_assistant.model import MaskedEmbedder, assistant_head
from pipeline.models.layers import TiedEmbedding
from pipeline.quantization.formats import Q8G32, decode, encode, q4_symmetric
from pipeline.quantization.group_quant import GroupQuantEmbedding
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
    config = assistant.config
    kept_size = config.centroid_intermediate_top_k * (config.text_config.vocab_size // config.num_centroids)
    assert 0 < kept_size < config.text_config.vocab_size
    token, hidden = first, drafter.context.last_hidden()
    for ref_token, ref_logits, ref_hidden in reference:
        assert token == ref_token
        step = drafter.step(token, hidden)
        kept, logits = step.ids.numpy(), step.logits.numpy()
        assert kept.shape == logits.shape == (kept_size,)  # only the chosen clusters' rows were read
        np.testing.assert_array_equal(np.sort(kept), np.flatnonzero(ref_logits > ref_logits.min()))
        np.testing.assert_allclose(logits, ref_logits[kept], atol=ATOL, rtol=0)
        dense = np.full(ref_logits.shape, logits.min() - 1, np.float32)  # transformers' layout of them
        dense[kept] = logits
        np.testing.assert_allclose(dense, ref_logits, atol=ATOL, rtol=0)
        np.testing.assert_allclose(step.hidden.numpy().reshape(-1), ref_hidden, atol=ATOL, rtol=0)
        assert step.token == int(np.argmax(dense)) == int(np.argmax(ref_logits))
        token, hidden = step.token, step.hidden
    tokens, q = drafter.propose(ids + [first], 4)
    assert tokens == [int(np.argmax(r[1])) for r in reference]
    assert q is None  # greedy: one-hot draft distributions, made only where sampling needs them


def test_a_library_with_the_dense_draft_step_is_refused_in_one_line(built, monkeypatch):
    """A drafter library built before the sparse head (``draft_step`` -> logits, state) is named,
    with what was expected."""
    engine, drafter, _, _ = built
    engine.reset()
    engine.prefill([5, 6, 7])
    dense = tvm.runtime.tensor(np.zeros((1, 1, 96), np.float32))
    monkeypatch.setattr(drafter, "vm", {"draft_step": lambda *args: [dense, dense]})
    with pytest.raises(PipelineError, match=r"draft_step returns 2 values, expected 4 .*rebuild it$") as err:
        drafter.propose(engine.tokens + [8], 2)
    assert str(drafter.library) in str(err.value) and "\n" not in str(err.value)


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


class _Head(nn.Module):
    """The drafter's head alone: :func:`assistant_head` over a tied embedding (float32 or
    group-quantized) and, when ``ordered``, the centroid head."""

    def __init__(self, config, fmt, ordered: bool):
        self.embed_tokens = (TiedEmbedding(config.vocab_size, config.hidden_size, "float32") if fmt is None
                             else GroupQuantEmbedding(config.vocab_size, config.hidden_size, fmt, "float32"))
        self.masked_embedding = MaskedEmbedder(config, "float32") if ordered else None

    def forward(self, hidden):
        return assistant_head(hidden, self.embed_tokens, self.masked_embedding)


HEAD = Gemma4AssistantConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=1, num_key_value_heads=1, head_dim=32,
                             layer_types=["full_attention"], num_centroids=8, centroid_intermediate_top_k=2,
                             use_ordered_embeddings=True)


def head_case(seed: int = 3):
    """Weights and a state for :class:`_Head` under :data:`HEAD` where the state picks clusters 5
    then 2 and the largest logit is shared by two tokens of cluster 5, the higher id first in the
    ordering: ``(hidden, embedding, centroids, ordering, tied)``."""
    rng = np.random.default_rng(seed)
    c, v, per = HEAD.hidden_size, HEAD.vocab_size, HEAD.vocab_size // HEAD.num_centroids
    hidden = np.zeros((1, 1, c), np.float32)
    hidden[..., 0] = 1.0
    centroids = rng.uniform(-1, 0, (HEAD.num_centroids, c)).astype(np.float32)
    centroids[5, 0], centroids[2, 0] = 3.0, 2.0
    ordering = rng.permutation(v)
    embedding = rng.uniform(-1, 1, (v, c)).astype(np.float32)
    tied = sorted(ordering[5 * per:6 * per][[3, 7]])[::-1]  # two tokens of cluster 5, higher id first
    ordering[5 * per + 3], ordering[5 * per + 7] = tied
    embedding[tied] = embedding[tied[0]]
    embedding[tied, 0] = 4.0  # two equal rows whose logit, 4, beats every other (below 1)
    return hidden, embedding, centroids, ordering.astype(np.int32), tied


@pytest.mark.parametrize("fmt", [None, Q8G32, q4_symmetric("float32")], ids=["float32", "q8g32", "q4g32"])
@pytest.mark.parametrize("ordered", [True, False], ids=["centroid", "dense"])
def test_head_reads_the_chosen_clusters_rows_and_breaks_ties_to_the_lowest_id(fmt, ordered):
    """The centroid head keeps ``top_k * per_cluster`` ids (clusters best first, each in the
    checkpoint's order; the dense head: every id in order) with logits equal to numpy's from the
    (dequantized) rows; the drafted
    token is numpy's argmax over the dense masked row (transformers' layout): of two equal
    largest logits, the lower token id, though the ordering lists the higher one first."""
    hidden, embedding, centroids, ordering, tied = head_case()
    module = _Head(HEAD, fmt, ordered)
    spec = {"forward": {"hidden": nn.spec.Tensor([1, 1, HEAD.hidden_size], "float32"),
                        "$": {"param_mode": "packed", "effect_mode": "none"}}}
    mod, named = module.export_tvm(spec=spec)
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    values = {"masked_embedding.centroids.weight": centroids, "masked_embedding.token_ordering": ordering}
    rows = embedding
    if fmt is None:
        values["embed_tokens.weight"] = embedding
    else:
        stored = encode(embedding, fmt)
        rows = decode(stored, fmt)
        values.update({f"embed_tokens.{suffix}": array for suffix, array in stored.items()})
    token, ids, logits = (a.numpy() for a in vm["forward"](
        tvm.runtime.tensor(hidden), [tvm.runtime.tensor(values[n]) for n, _ in named]))
    per = HEAD.vocab_size // HEAD.num_centroids
    expected_ids = (ordering.reshape(HEAD.num_centroids, per)[[5, 2]].reshape(-1) if ordered
                    else np.arange(HEAD.vocab_size))
    assert ids.shape == (HEAD.centroid_intermediate_top_k * per if ordered else HEAD.vocab_size,)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(logits, rows[expected_ids] @ hidden.reshape(-1), atol=1e-5, rtol=0)
    dense = np.full(HEAD.vocab_size, logits.min() - 1, np.float32)
    dense[ids] = logits
    assert logits.max() == logits[list(ids).index(tied[0])] == logits[list(ids).index(tied[1])]
    assert token.tolist() == [int(np.argmax(dense))] == [min(tied)]
