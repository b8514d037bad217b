"""transformers-driven references: an MTP head (``MtpModel``) over a tiny Gemma 3 and its catch-up and
chained runs, an MTP head that mostly echoes the base, and a Gemma 4 assistant's draft chain."""

from __future__ import annotations

import torch
from transformers.cache_utils import MtpCache
from transformers.modeling_layers import MtpModel

from pipeline.models.gemma3.config import Gemma3Config

TINY_BASE = Gemma3Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=8,
                         layer_types=["sliding_attention"] * 4, query_pre_attn_scalar=24)


def reference_mtp(hf_base, layer_type, use_post_norm, hidden_states_first, seed=1):
    """transformers' MtpModel over ``hf_base`` with random weights (norm weights too)."""
    config = hf_base.config
    extra = {"num_mtp_layers": 1, "mtp_layer_types": [layer_type], "mtp_hidden_states_first": hidden_states_first}
    if not use_post_norm:
        extra["chain_hidden_post_norm"] = False  # transformers: no per-layer, no shared post-norm
    for key, value in extra.items():
        setattr(config, key, value)
    try:
        mtp = MtpModel(hf_base, 1).eval()
    finally:
        for key in extra:
            delattr(config, key)
    assert mtp.use_post_norm == use_post_norm and not mtp.use_shared_post_norm
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in mtp.layers.named_parameters():
            param.normal_(0.0, 0.3 if "norm" in name else 0.08)
    return mtp


def reference_run(hf_base, mtp, ids, chain_tokens):
    """Catch-up over pairs ``(h_j, ids[j+1])``, j < len(ids) - 1, then one chained step per
    token of ``chain_tokens``; returns ``(hidden (n, h), logits (n, vocab))`` of every step."""
    n = len(ids) - 1
    cache = MtpCache(config=mtp.config)
    with torch.no_grad():
        base_hidden = hf_base(torch.tensor([ids[:n]]), output_hidden_states=True).hidden_states[-1]
        out = mtp.forward_layer(0, base_hidden, torch.arange(1, n + 1)[None], cache,
                                input_ids=torch.tensor([ids[1:]]))
        outputs = [out[0]]
        for step, token in enumerate(chain_tokens):
            out = mtp.forward_layer(0, out[:, -1:], torch.tensor([[n + 1 + step]]), cache,
                                    input_ids=torch.tensor([[token]]))
            outputs.append(out[0])
        hidden = torch.cat(outputs)
        return hidden.numpy(), mtp._project_to_logits(hidden).numpy()


def echo_head(hf_base, layer_type="full_attention"):
    """A random transformers ``MtpModel`` over ``hf_base`` that mostly echoes the base's prediction."""
    mtp = reference_mtp(hf_base, layer_type, True, False, seed=2)
    layer, hidden = mtp.layers[0], hf_base.config.hidden_size
    with torch.no_grad():
        layer.eh_proj.weight[:, hidden:] = torch.eye(hidden)
        layer.mtp_block.post_attention_layernorm.weight.fill_(-0.8)
        layer.mtp_block.post_feedforward_layernorm.weight.fill_(-0.8)
        layer.post_norm.weight.fill_(2.0)
    return {k: v.contiguous() for k, v in mtp.state_dict().items() if k.startswith("layers.")}


def reference_chain(base, assistant, ids, steps):
    """transformers: the base over ``ids``, then ``steps`` assistant steps from its argmax token."""
    with torch.no_grad():
        out = base(torch.tensor([ids]), output_hidden_states=True, return_shared_kv_states=True)
        token = int(out.logits[0, -1].argmax())
        hidden = out.hidden_states[-1][:, -1:]
        position = torch.tensor([[len(ids)]])
        chain = []
        for _ in range(steps):
            embeds = torch.cat([base.model.embed_tokens(torch.tensor([[token]])), hidden], dim=-1)
            step = assistant(inputs_embeds=embeds, position_ids=position, shared_kv_states=out.shared_kv_states)
            hidden = step.last_hidden_state
            chain.append((token, step.logits[0, 0].numpy(), hidden[0, 0].numpy()))
            token = int(step.logits[0, 0].argmax())
    return chain
