"""The compiled MTP drafter (pipeline/models/gemma3_mtp) against transformers' MtpModel on a tiny random
Gemma 3 base (float32, CPU), and its weight import.

Reference: transformers 5.24 ``modeling_layers.MtpModel`` hosted by the tiny ``Gemma3ForCausalLM``
(its config given ``num_mtp_layers`` / ``mtp_layer_types``, which Gemma 3 does not declare), run
with ``forward_layer`` and an ``MtpCache``: a 16-position catch-up, then a chain that feeds each
output back in with the drafted token, positions past the tiny model's 8-token window.  Ours:
the base library's hidden states, embed and head plus the compiled drafter, driven by
:class:`MTPDraftChain`.  Tolerance: 1e-4 absolute on logits and hidden states (float32 on both
sides; the base's own hidden states already differ by ~1e-5).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi
from safetensors.torch import save_file
from tvm import relax

from pipeline.compile.compiler import compile_module, export_model
from pipeline.compile.targets import load_target
from pipeline.errors import PipelineError
from pipeline.models.gemma3.config import Gemma3Config
from pipeline.models.gemma3_mtp.loader import load_mtp_weights
from pipeline.models.gemma3_mtp.model import MTPConfig
from pipeline.models.registry import get_family
from pipeline.quantization import get_scheme
from pipeline.runtime.drafters.mtp_head import MTPDraftChain
from tests.helpers.references import TINY_BASE, reference_mtp, reference_run

ATOL = 1e-4
PREFILL = 16  # catch-up pairs (h_j, t_{j+1}), j = 0..15
CHAIN = 5  # drafted tokens: one from the catch-up, four from chained steps
CASES = {  # layer_type, use_post_norm, hidden_states_first
    "sliding-postnorm": ("sliding_attention", True, False),
    "full-no-postnorm-hidden-first": ("full_attention", False, True),
}


def set_window(mtp, window):
    """Set the reference's sliding window (its masks read the config, its attention the module)."""
    mtp.config.sliding_window = window
    mtp.layers[0].mtp_block.self_attn.sliding_window = window


def base_hidden_states(engine, function, token_ids):
    """Run the base library's ``function`` (``*_to_last_hidden_states``) over ``token_ids``,
    appending them to the engine's KV cache; ``(len, hidden)`` float32."""
    n = len(token_ids)
    embeds = engine.vm["embed"](tvm.runtime.tensor(np.array(token_ids, np.int32)), engine.params)
    tvm.get_global_func("vm.builtin.kv_state_begin_forward")(engine.kv_cache, tvm_ffi.Shape([0]), tvm_ffi.Shape([n]))
    hidden, engine.kv_cache = engine.vm[function](
        embeds._create_view((1, n, engine.hidden_size)), engine.kv_cache, engine.params)
    tvm.get_global_func("vm.builtin.kv_state_end_forward")(engine.kv_cache)
    return hidden.numpy()[0]


@pytest.fixture(scope="module")
def engine(tiny_package):
    from pipeline.runtime.engine import Engine

    return Engine(tiny_package[0])


@pytest.fixture(scope="module", params=list(CASES))
def drafter(request, tiny_package, engine, tmp_path_factory):
    """The case's reference MtpModel and our compiled drafter over the same weights, loaded
    through :func:`load_mtp_weights` from the reference's own state dict."""
    layer_type, use_post_norm, hidden_first = CASES[request.param]
    hf_base = tiny_package[1]
    mtp = reference_mtp(hf_base, layer_type, use_post_norm, hidden_first)
    tmp = tmp_path_factory.mktemp(request.param)
    save_file({k: v.contiguous() for k, v in mtp.state_dict().items() if k.startswith("layers.")},
              str(tmp / "mtp.safetensors"))
    base_config = Gemma3Config(**engine.chat_config["model_config"])
    config = MTPConfig(base_config, layer_type, use_post_norm, hidden_first)
    weights = load_mtp_weights(tmp / "mtp.safetensors", config)
    preset = load_target("cpu")
    mod, params, _ = export_model(get_family("gemma3_mtp"), config, get_scheme("q0f32"), preset, "tiny-mtp")
    compile_module(mod, preset, tmp / "mtp.so")
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(tmp / "mtp.so")), tvm.cpu())
    chain = MTPDraftChain(vm, [tvm.runtime.tensor(weights[name]) for name, _, _ in params], engine.vm,
                          engine.params, max_total_seq_len=engine.context_window,
                          prefill_chunk_size=engine.prefill_chunk)
    return chain, mtp, request.param


def test_catch_up_and_chain_match_transformers(engine, drafter, tiny_package):
    chain, mtp, case = drafter
    ids = np.random.default_rng(21).integers(4, 96, size=PREFILL + 1).tolist()
    engine.reset()
    chain.reset()
    hidden = chain.accept(base_hidden_states(engine, "prefill_to_last_hidden_states", ids[:PREFILL]), ids[1:]).numpy()
    draft = chain.draft(CHAIN)
    assert chain.length == PREFILL and chain.speculative == CHAIN - 1

    ref_hidden, ref_logits = reference_run(tiny_package[1], mtp, ids, draft.tokens[:-1])
    np.testing.assert_allclose(hidden, ref_hidden[:PREFILL], atol=ATOL, rtol=0, err_msg=case)
    np.testing.assert_allclose(draft.hidden_states, ref_hidden[PREFILL - 1:], atol=ATOL, rtol=0, err_msg=case)
    np.testing.assert_allclose(draft.logits, ref_logits[PREFILL - 1:], atol=ATOL, rtol=0, err_msg=case)
    assert draft.tokens == [int(t) for t in ref_logits[PREFILL - 1:].argmax(-1)]


def test_chain_roll_back_then_catch_up_matches_a_fresh_run(engine, drafter, tiny_package):
    """After a verify that accepts 2 of 5 drafts, popping the chain's entries and catching up on
    the 3 exact pairs leaves the drafter where a run over the accepted sequence from scratch is."""
    chain, mtp, case = drafter
    ids = np.random.default_rng(22).integers(4, 96, size=PREFILL + 1).tolist()
    engine.reset()
    chain.reset()
    chain.accept(base_hidden_states(engine, "prefill_to_last_hidden_states", ids[:PREFILL]), ids[1:])
    draft = chain.draft(CHAIN)
    verified = base_hidden_states(engine, "batch_verify_to_last_hidden_states", [ids[-1]] + draft.tokens)
    accepted, extra = 2, 7  # as if the base model rejected the third draft and chose token 7
    tvm.get_global_func("vm.builtin.kv_state_popn")(engine.kv_cache, 0, CHAIN - accepted)
    chain.accept(verified[:accepted + 1], draft.tokens[:accepted] + [extra])
    assert chain.length == PREFILL + accepted + 1 and chain.speculative == 0
    again = chain.draft(4)

    sequence = ids + draft.tokens[:accepted] + [extra]
    ref_hidden, ref_logits = reference_run(tiny_package[1], mtp, sequence, again.tokens[:-1])
    np.testing.assert_allclose(again.hidden_states, ref_hidden[len(sequence) - 2:], atol=ATOL, rtol=0, err_msg=case)
    np.testing.assert_allclose(again.logits, ref_logits[len(sequence) - 2:], atol=ATOL, rtol=0, err_msg=case)


@pytest.mark.parametrize("drafter", ["sliding-postnorm"], indirect=True)
def test_sliding_window_changes_the_reference(engine, drafter, tiny_package):
    """Guard against a comparison that cannot fail: the sliding case's reference with the window
    widened differs from ours past the window."""
    chain, mtp, _ = drafter
    ids = np.random.default_rng(21).integers(4, 96, size=PREFILL + 1).tolist()
    engine.reset()
    chain.reset()
    hidden = chain.accept(base_hidden_states(engine, "prefill_to_last_hidden_states", ids[:PREFILL]), ids[1:]).numpy()
    window = mtp.config.sliding_window
    set_window(mtp, 512)
    try:
        wide_hidden, _ = reference_run(tiny_package[1], mtp, ids, [])
    finally:
        set_window(mtp, window)
    assert np.abs(hidden - wide_hidden).max() > 100 * ATOL


# --- weight import -------------------------------------------------------------------------
def deepseek_named(mtp, index=4):
    """The reference's MTP tensors under DeepSeek-V3's release names (``model.layers.N.*`` with the
    block's tensors directly under the layer, ``shared_head.norm``/``shared_head.head``,
    a copy of the embedding) plus one base-model tensor."""
    tensors = {}
    for name, value in mtp.state_dict().items():
        if not name.startswith("layers.0."):
            continue
        rest = name.removeprefix("layers.0.").removeprefix("mtp_block.").replace("post_norm.", "shared_head.norm.")
        tensors[f"model.layers.{index}.{rest}"] = value.clone().contiguous()
    embedding = mtp.embed_tokens.weight.detach().clone()
    tensors[f"model.layers.{index}.embed_tokens.weight"] = embedding
    tensors[f"model.layers.{index}.shared_head.head.weight"] = embedding.clone()
    tensors["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(128, 64)
    return tensors


@pytest.fixture(scope="module")
def reference_weights():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from tests.helpers.gemma3 import TINY

    base = Gemma3ForCausalLM(Gemma3TextConfig(**TINY, attn_implementation="eager")).eval()
    return reference_mtp(base, "sliding_attention", True, False)


def test_deepseek_and_transformers_names_load_the_same_weights(reference_weights, tmp_path):
    mtp = reference_weights
    config = MTPConfig(TINY_BASE, "sliding_attention")
    save_file(deepseek_named(mtp), str(tmp_path / "deepseek.safetensors"))
    save_file({k: v.contiguous() for k, v in mtp.state_dict().items() if k.startswith("layers.")},
              str(tmp_path / "transformers.safetensors"))
    ours = load_mtp_weights(tmp_path / "deepseek.safetensors", config)
    again = load_mtp_weights(tmp_path / "transformers.safetensors", config)
    source = {k.removeprefix("layers.0."): v.numpy() for k, v in mtp.state_dict().items() if k.startswith("layers.")}
    assert list(ours) == list(again) == list(source)  # every parameter, in the module's order
    for name, value in ours.items():
        expected = source[name] + (1.0 if name.endswith("norm.weight") else 0.0)
        np.testing.assert_array_equal(value, expected, err_msg=name)
        np.testing.assert_array_equal(again[name], expected, err_msg=name)


@pytest.mark.parametrize("edit, config_change, expected", [
    (lambda t: t.pop("model.layers.4.hnorm.weight"), {}, "missing from layers.4: hnorm.weight [64]"),
    (lambda t: t.update({"model.layers.4.eh_proj.weight": torch.zeros(64, 64)}), {},
     "model.layers.4.eh_proj.weight has shape [64, 64], expected [64, 128] for eh_proj.weight"),
    (lambda t: t.update({"model.layers.4.mystery.weight": torch.zeros(3)}), {},
     "model.layers.4.mystery.weight (shape [3]) matches no MTP parameter"),
    (lambda t: None, {"use_post_norm": False},
     "model.layers.4.shared_head.norm.weight (shape [64]) matches no MTP parameter"),
    (lambda t: [t.pop(k) for k in list(t) if k.endswith("enorm.weight")], {}, "no MTP layer"),
], ids=["missing", "shape", "unmatched", "unexpected-post-norm", "no-mtp-layer"])
def test_bad_weights_are_named_in_one_line(reference_weights, tmp_path, edit, config_change, expected):
    tensors = deepseek_named(reference_weights)
    edit(tensors)
    save_file(tensors, str(tmp_path / "mtp.safetensors"))
    config = dataclasses.replace(MTPConfig(TINY_BASE, "sliding_attention"), **config_change)
    with pytest.raises(PipelineError) as err:
        load_mtp_weights(tmp_path / "mtp.safetensors", config)
    assert expected in str(err.value) and "\n" not in str(err.value)
