"""``mlc-chat-config.json`` as mlc-llm writes it (``python/mlc_llm/protocol/mlc_chat_config.py``),
with the family's chat template in MLC's ``Conversation`` form (its registry row's ``chat_template``)."""

from __future__ import annotations

from typing import Any

from ..models.registry import get_family

# The format version of mlc-llm's chat config (mlc_llm.support.constants.MLC_CHAT_CONFIG_VERSION, the
# default of MLCChatConfig.version), not this package's version (pipeline.__version__).
MLC_CHAT_CONFIG_VERSION = "0.1.0"
RUNTIME_CONFIG = "mlc-mtp-config.json"  # our runtime's own config, written beside MLC's
# What a reply uses where neither the request nor the package says.
FALLBACK_GENERATION = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64}



def conv_template(family: str) -> dict[str, Any]:
    """Base family ``family``'s chat template in MLC LLM's ``Conversation`` form (the registry row's
    ``chat_template``, imported on first use, so that the runtime importing this module loads no
    family's code).  Raises PipelineError for an unknown family."""
    return get_family(family).template()


def chat_config(model_config: Any, family: str, quantization: str, generation: dict[str, Any],
                tokenizer_files: list[str]) -> dict[str, Any]:
    """The ``mlc-chat-config.json`` dict for a packaged model.

    ``sliding_window_size`` is -1: the model applies its own window inside its attention kernels,
    so a runtime must not evict KV pages (the window is recorded in ``model_config``).
    """
    cfg = model_config.to_dict()
    return {
        "version": MLC_CHAT_CONFIG_VERSION,
        "model_type": family,
        "quantization": quantization,
        "model_config": cfg,
        "vocab_size": cfg["vocab_size"],
        "context_window_size": cfg["context_window_size"],
        "sliding_window_size": -1,
        "prefill_chunk_size": cfg["prefill_chunk_size"],
        "attention_sink_size": -1,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "temperature": generation["temperature"],
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "top_p": generation["top_p"],
        "tokenizer_files": tokenizer_files,
        "tokenizer_info": {
            "token_postproc_method": "byte_fallback",
            "prepend_space_in_encode": False,
            "strip_space_in_decode": False,
        },
        "conv_template": conv_template(family),
        "pad_token_id": cfg["pad_token_id"],
        "bos_token_id": cfg["bos_token_id"],
        "eos_token_id": cfg["eos_token_id"],
    }


def generation_defaults(chat_config: dict[str, Any], runtime_config: dict[str, Any]) -> dict[str, Any]:
    """A package's sampling defaults: ``temperature``, ``top_p`` and ``max_tokens`` (and ``stop``
    where recorded) from its ``mlc-chat-config.json`` (``chat_config``), overridden by the build
    config's ``generation`` section recorded in ``mlc-mtp-config.json`` (``runtime_config``), else
    :data:`FALLBACK_GENERATION`."""
    given = {**chat_config, **runtime_config.get("generation", {})}
    defaults = {name: given.get(name, value) for name, value in FALLBACK_GENERATION.items()}
    if "stop" in given:
        defaults["stop"] = list(given["stop"])
    return defaults
