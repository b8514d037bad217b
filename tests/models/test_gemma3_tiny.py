"""The compiled Gemma 3 definition against transformers on a tiny random model (float32).

The tiny model's sliding window is 8 tokens, so every check below runs far past the window:
prefill chunks longer than the window, decode beyond it, verify passes and roll-back.
Tolerance: 1e-4 absolute on logits of magnitude ~1 (float32 on both sides).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.runtime.engine import Engine

ATOL = 1e-4


def reference_logits(hf_model, ids):
    with torch.no_grad():
        return hf_model(torch.tensor([ids], dtype=torch.long)).logits[0].float().numpy()


@pytest.fixture(scope="module")
def engine(tiny_package):
    return Engine(tiny_package[0])


@pytest.fixture(scope="module")
def hf_model(tiny_package):
    return tiny_package[1]


@pytest.mark.parametrize("prompt_len", [3, 8, 9, 40, 150])
def test_prefill_then_decode_matches_transformers(engine, hf_model, prompt_len):
    rng = np.random.default_rng(prompt_len)
    ids = rng.integers(4, 96, size=prompt_len + 12).tolist()
    ref = reference_logits(hf_model, ids)
    engine.reset()
    ours = [engine.prefill(ids[:prompt_len])]
    for token in ids[prompt_len:-1]:
        ours.append(engine.decode(token))
    ours = np.stack(ours)
    np.testing.assert_allclose(ours, ref[prompt_len - 1:-1], atol=ATOL, rtol=0)


def test_prefill_in_chunks_matches_one_pass(engine, hf_model):
    """A 150-token prompt crosses the 64-token prefill chunk twice; the window spans chunk edges."""
    ids = np.random.default_rng(7).integers(4, 96, size=150).tolist()
    engine.reset()
    last = engine.prefill(ids)
    np.testing.assert_allclose(last, reference_logits(hf_model, ids)[-1], atol=ATOL, rtol=0)


def test_verify_then_rollback_equals_plain_decoding(engine, hf_model):
    """batch_verify over 5 tokens gives every position's logits; popping 3 of them leaves a cache
    whose next logits equal those of plain decoding of the kept prefix."""
    rng = np.random.default_rng(3)
    ids = rng.integers(4, 96, size=30).tolist()
    draft = rng.integers(4, 96, size=5).tolist()
    ref = reference_logits(hf_model, ids + draft)
    engine.reset()
    engine.prefill(ids)
    verified = engine.verify(draft)
    np.testing.assert_allclose(verified, ref[len(ids):], atol=ATOL, rtol=0)
    engine.rollback(3)
    assert engine.length == len(ids) + 2
    nxt = engine.decode(draft[2])
    np.testing.assert_allclose(nxt, reference_logits(hf_model, ids + draft[:3])[-1], atol=ATOL, rtol=0)


def test_window_changes_the_result(engine, hf_model):
    """Guard against a test that cannot fail: the same model with the window disabled differs."""
    ids = np.random.default_rng(11).integers(4, 96, size=40).tolist()
    engine.reset()
    ours = engine.prefill(ids)
    wide = type(hf_model)(hf_model.config.__class__(**{**hf_model.config.to_dict(), "sliding_window": 512}))
    wide.load_state_dict(hf_model.state_dict())
    wide.eval()
    assert np.abs(ours - reference_logits(wide, ids)[-1]).max() > 100 * ATOL


def test_library_exports_mlc_entry_points_and_metadata(engine):
    for name in ("embed", "prefill", "decode", "batch_prefill", "batch_decode", "batch_verify",
                 "create_paged_kv_cache", "_metadata"):
        assert engine.vm[name] is not None  # the VM raises for a function the library lacks
    meta = engine.metadata
    assert meta["model_type"] == "gemma3" and meta["kv_state_kind"] == "kv_cache"
    assert [p["name"] for p in meta["params"]][0] == "model.embed_tokens.weight"


def test_library_exports_mlc_function_set(engine, hf_model):
    """What MLC's engine and WebLLM look up beyond the entry points (pipeline/compile/mlc_functions.py),
    the metadata they read, and a cache made through MLC's creator name serving a prefill."""
    import tvm_ffi

    from pipeline.kernels import PAGE_SIZE

    def look(name):  # MLC's lookup: the VM's functions, then the library's TIR functions
        return engine.vm.module.get_function(name, True)

    for name in ("create_tir_paged_kv_cache", "apply_logit_bias_inplace", "apply_penalty_inplace",
                 "apply_bitmask_inplace", "softmax_with_temperature", "argsort_probs", "sample_with_top_p",
                 "multinomial_from_uniform", "renormalize_by_top_p", "sampler_take_probs", "alloc_embedding_tensor",
                 "batch_select_last_hidden_states", "gather_probs", "scatter_probs", "gather_hidden_states",
                 "scatter_hidden_states", "get_logits", "prefill_to_last_hidden_states",
                 "batch_verify_to_last_hidden_states"):
        assert look(name) is not None, name
    meta = engine.metadata
    config = hf_model.config
    assert meta["kv_cache"] == {"num_hidden_layers": config.num_hidden_layers,
                                "num_attention_heads": config.num_attention_heads,
                                "num_key_value_heads": config.num_key_value_heads, "head_dim": config.head_dim}
    assert meta["model_task"] == "chat" and meta["active_vocab_size"] is None
    assert meta["memory_usage"]["prefill"] > 0 and meta["memory_usage"]["decode"] > 0
    assert look("alloc_embedding_tensor")().shape == (meta["prefill_chunk_size"], config.hidden_size)

    ids = np.random.default_rng(13).integers(4, 96, size=20).tolist()
    engine.reset()
    shape = tvm_ffi.Shape
    engine.kv_cache = look("create_tir_paged_kv_cache")(
        shape((1,)), shape((engine.context_window,)), shape((engine.prefill_chunk,)), shape((PAGE_SIZE,)), shape((0,)))
    import tvm

    tvm.get_global_func("vm.builtin.kv_state_add_sequence")(engine.kv_cache, 0)
    np.testing.assert_allclose(engine.prefill(ids), reference_logits(hf_model, ids)[-1], atol=ATOL, rtol=0)
    engine.reset()


def test_batch_prefill_and_batch_decode_agree_with_prefill_and_decode(engine):
    import tvm
    import tvm_ffi

    ids = np.random.default_rng(5).integers(4, 96, size=20).tolist()
    engine.reset()
    ref_last = engine.prefill(ids)
    ref_next = engine.decode(ids[0])

    begin = tvm.get_global_func("vm.builtin.kv_state_begin_forward")
    end = tvm.get_global_func("vm.builtin.kv_state_end_forward")
    engine.reset()
    embeds = engine.vm["embed"](tvm.runtime.tensor(np.array(ids, np.int32)), engine.params)
    embeds = embeds._create_view((1, len(ids), engine.hidden_size))
    begin(engine.kv_cache, tvm_ffi.Shape([0]), tvm_ffi.Shape([len(ids)]))
    logits, _ = engine.vm["batch_prefill"](embeds, tvm.runtime.tensor(np.array([len(ids) - 1], np.int32)),
                                           engine.kv_cache, engine.params)
    end(engine.kv_cache)
    np.testing.assert_allclose(logits.numpy()[0, 0], ref_last, atol=ATOL, rtol=0)
    one = engine.vm["embed"](tvm.runtime.tensor(np.array([ids[0]], np.int32)), engine.params)
    begin(engine.kv_cache, tvm_ffi.Shape([0]), tvm_ffi.Shape([1]))
    logits, _ = engine.vm["batch_decode"](one._create_view((1, 1, engine.hidden_size)),
                                          engine.kv_cache, engine.params)
    end(engine.kv_cache)
    np.testing.assert_allclose(logits.numpy()[0, 0], ref_next, atol=ATOL, rtol=0)
