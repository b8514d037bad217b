"""The training script of the MTP head (tools/train_mtp_head.py) against the references it
claims to follow, on the tiny random Gemma 3 (float32, CPU):

- its chained forward pass over whole sequences (every anchor, three depths, one call per
  depth with :func:`chain_mask`) equals transformers' ``MtpModel`` run step by step with its
  ``MtpCache`` (catch-up, then chained steps), past the tiny model's 8-token window;
- the head it builds leaves the base untouched, and the file it saves loads through
  :func:`pipeline.models.gemma3_mtp.loader.load_mtp_weights`;
- its q4 unpacking and its q4 rounding of the head are MLC's ``q4f32_1``
  (:mod:`pipeline.quantization.group_quant`).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from pipeline.models.gemma3_mtp.loader import load_mtp_weights
from pipeline.models.gemma3_mtp.model import MTPConfig
from pipeline.quantization import get_scheme
from pipeline.quantization.formats import decode, encode
from tests.helpers.references import TINY_BASE, reference_mtp, reference_run
from tools import train_mtp_head as script

ATOL = 1e-4
DEPTH = 3


@pytest.fixture(scope="module")
def hf_base(tiny_package):
    return tiny_package[1]


@pytest.mark.parametrize("case", [("sliding_attention", True, False), ("full_attention", False, True)],
                         ids=["sliding-postnorm", "full-no-postnorm-hidden-first"])
def test_chain_forward_matches_step_by_step_transformers(hf_base, case):
    mtp = reference_mtp(hf_base, *case)
    ids = np.random.default_rng(5).integers(4, 96, size=20).tolist()
    with torch.no_grad():
        hidden = hf_base.model(input_ids=torch.tensor([ids])).last_hidden_state
        outputs = script.chain_forward(mtp, hidden, torch.tensor([ids]), DEPTH)
    assert [tuple(o.shape) for o in outputs] == [(1, 19, 64)] * DEPTH
    for anchor in (0, 3, 9, 16):  # 9 and 16: the window of 8 is passed
        # transformers: catch-up over pairs (h_j, ids[j+1]) for j <= anchor, then chained steps
        # fed with the sequence's own next tokens, as the drafter sees them when its drafts are right
        steps = min(DEPTH, len(ids) - 1 - anchor)
        ref_hidden, _ = reference_run(hf_base, mtp, ids[:anchor + 2], ids[anchor + 2:anchor + 1 + steps])
        for d in range(steps):
            np.testing.assert_allclose(outputs[d][0, anchor].numpy(), ref_hidden[anchor + d], atol=ATOL, rtol=0,
                                       err_msg=f"anchor {anchor}, depth {d + 1}")


def test_chain_mask_sees_exact_entries_then_its_own_chain():
    mask = script.chain_mask(4, 3, window=2).numpy()
    entry = lambda m, i: m * 4 + i  # noqa: E731
    # depth 1, anchor 3: itself and anchor 2 (window 2), not anchor 1
    assert mask[entry(0, 3)].nonzero()[0].tolist() == [entry(0, 2), entry(0, 3)]
    # depth 3, anchor 2 sits at position 4: every exact entry (positions <= 2) is outside a window
    # of 2; it sees its own chain's depth-2 entry (position 3) and itself
    assert mask[entry(2, 2)].nonzero()[0].tolist() == [entry(1, 2), entry(2, 2)]
    wide = script.chain_mask(4, 3, window=None).numpy()
    assert wide[entry(2, 2)].nonzero()[0].tolist() == [entry(0, 0), entry(0, 1), entry(0, 2), entry(1, 2), entry(2, 2)]


def test_saved_head_loads_and_base_is_untouched(hf_base, tmp_path):
    before = {k: v.clone() for k, v in hf_base.state_dict().items()}
    head = script.build_head(hf_base, "sliding_attention", seed=3, output_scale=2.5)
    for name, value in hf_base.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)
    args = argparse.Namespace(layer_type="sliding_attention")
    script.save(head, args, tmp_path, {"note": "test"})
    architecture = json.loads((tmp_path / "mtp-architecture.json").read_text())
    config = MTPConfig(TINY_BASE, architecture["layer_type"], architecture["use_post_norm"],
                       architecture["hidden_states_first"])
    loaded = load_mtp_weights(tmp_path / "mtp.safetensors", config)
    state = script.head_state(head)
    assert len(loaded) == len(state)
    for name, value in state.items():
        ours = name.removeprefix("layers.0.")
        expected = value.to(torch.bfloat16).float().numpy() + (1.0 if ours.endswith("norm.weight") else 0.0)
        np.testing.assert_array_equal(loaded[ours], expected, err_msg=name)
    np.testing.assert_array_equal(loaded["post_norm.weight"], np.full(64, 2.5, np.float32))  # 1 + w = scale


@pytest.mark.parametrize("scheme", ["q4f32_1", "qsrcf32"])
def test_head_rounding_is_the_packages(hf_base, scheme):
    """The report's rounded head equals the weights a package of ``scheme`` stores for a bf16 head."""
    fmt = get_scheme(scheme).tensor_format()
    head = script.build_head(hf_base, "sliding_attention", seed=4)
    rounded = script.stored_round_trip(head, fmt)
    for name, value in script.head_state(head).items():
        exact = value.to(torch.bfloat16).float().numpy()
        if value.ndim == 2:
            exact = decode(encode(exact, fmt), fmt)
            assert not np.array_equal(exact, value.to(torch.bfloat16).float().numpy()), name  # it did round
        np.testing.assert_allclose(rounded[name].numpy(), exact, rtol=0, atol=1e-7, err_msg=name)
