"""A package built from a tiny random Gemma 4 base and a drafter read from a ``.litertlm`` file
(``mtp.format: litertlm``, the default name map, an architecture file): the compiled drafter's
4-step chain equals transformers' ``Gemma4AssistantForCausalLM`` holding the dequantized LiteRT
tensors (float32; within 1e-5 of the largest magnitude, as the dequantized test weights reach
+-25 and logits +-100), so every tensor reached its parameter.

The drafter has the real one's structure (three sliding layers and a full one, the sliding
layers' query norms one folded constant, no layer scalars) at toy sizes fitting the E2B-like base.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.models.importer import expected_shapes
from pipeline.models.registry import get_family
from pipeline.runtime.drafters.assistant import AssistantDrafter
from pipeline.runtime.engine import Engine
from tests.helpers.gemma4 import make_tiny_gemma4
from tests.helpers.litert import gemma4_drafter_litertlm, gemma4_drafter_tensors
from tests.helpers.packages import build_package
from tests.helpers.references import reference_chain

pytestmark = pytest.mark.compile

TEXT = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=1, head_dim=16, global_head_dim=32, sliding_window=8, max_position_embeddings=512,
            layer_types=["sliding_attention"] * 3 + ["full_attention"])
RELATIVE = 1e-5
ARCHITECTURE = {"model_type": "gemma4_assistant", "backbone_hidden_size": 64, "use_ordered_embeddings": False,
                "text_config": TEXT}


def transformers_assistant(tensors: dict[str, np.ndarray]):
    """transformers' drafter for :data:`ARCHITECTURE` holding ``tensors`` (transformers names)."""
    from transformers import Gemma4AssistantConfig, Gemma4AssistantForCausalLM, Gemma4TextConfig

    text = Gemma4TextConfig(**TEXT, hidden_size_per_layer_input=0, vocab_size_per_layer_input=0)
    model = Gemma4AssistantForCausalLM(Gemma4AssistantConfig(
        text_config=text, backbone_hidden_size=64, use_ordered_embeddings=False, attn_implementation="eager")).eval()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # the head is tied to the embedding
    return model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``(engine, drafter, hf base, hf assistant)``."""
    root = tmp_path_factory.mktemp("litert-drafter")
    base = make_tiny_gemma4(root / "hf", "e2b")
    family = get_family("gemma4_assistant")
    tensors, expected = gemma4_drafter_tensors(expected_shapes(family, family.config_from_hf(ARCHITECTURE)), seed=7)
    litertlm = gemma4_drafter_litertlm(root / "litert", tensors)
    (root / "drafter.json").write_text(json.dumps(ARCHITECTURE))
    package = build_package(
        root, root / "hf", name="tiny-litert",
        # a context window of its own: the compile stage's cache key leaves out the library name
        model={"family": "gemma4", "overrides": {"context_window_size": 128, "prefill_chunk_size": 64}},
        mtp={"family": "gemma4_assistant", "format": "litertlm", "path": str(litertlm),
             "architecture": str(root / "drafter.json")})
    engine = Engine(package)
    speculative = engine.runtime_config["speculative"]
    assert speculative["drafter_family"] == "gemma4_assistant"
    drafter = AssistantDrafter(engine, package / speculative["drafter_lib"]["cpu"],
                               package / speculative["drafter_weights"])
    return engine, drafter, base, transformers_assistant(expected)


def test_litertlm_drafter_chain_matches_transformers(built):
    engine, drafter, base, assistant = built
    ids = np.random.default_rng(11).integers(4, 96, size=16).tolist()
    reference = reference_chain(base, assistant, ids, 4)  # [(token, logits, projected hidden)] per step
    engine.reset()
    chain, token, hidden = [], int(np.argmax(engine.prefill(ids))), drafter.context.last_hidden()
    while len(chain) < len(reference):
        step = drafter.step(token, hidden)
        np.testing.assert_array_equal(step.ids.numpy(), np.arange(TEXT["vocab_size"]))  # the dense head
        logits = step.logits.numpy()
        assert step.token == int(np.argmax(logits))
        chain.append((token, logits, step.hidden.numpy().reshape(-1)))
        token, hidden = step.token, step.hidden
    assert [step[0] for step in chain] == [step[0] for step in reference]
    for index, what in ((1, "logits"), (2, "projected hidden state")):
        ours, theirs = np.stack([step[index] for step in chain]), np.stack([step[index] for step in reference])
        np.testing.assert_allclose(ours, theirs, atol=RELATIVE * np.abs(theirs).max(), rtol=0, err_msg=what)
    assert np.ptp(reference[-1][1]) > 1.0  # the logits are not flat: the weights took part
