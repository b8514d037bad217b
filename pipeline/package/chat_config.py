"""``mlc-chat-config.json`` as mlc-llm writes it (``python/mlc_llm/protocol/mlc_chat_config.py``),
with Gemma's chat template in MLC's ``Conversation`` form (``conversation_template/gemma.py``)."""

from __future__ import annotations

from typing import Any

# The format version of mlc-llm's chat config (mlc_llm.support.constants.MLC_CHAT_CONFIG_VERSION, the
# default of MLCChatConfig.version), not this package's version (pipeline.__version__).
MLC_CHAT_CONFIG_VERSION = "0.1.0"
RUNTIME_CONFIG = "mlc-mtp-config.json"  # our runtime's own config, written beside MLC's

GEMMA_TEMPLATE = {
    "name": "gemma3_instruction",
    "system_template": "{system_message}",
    "system_message": "",
    "system_prefix_token_ids": [2],
    "add_role_after_system_message": True,
    "roles": {"user": "<start_of_turn>user", "assistant": "<start_of_turn>model"},
    "role_templates": {"user": "{user_message}", "assistant": "{assistant_message}", "tool": "{tool_message}"},
    "messages": [],
    "seps": ["<end_of_turn>\n"],
    "role_content_sep": "\n",
    "role_empty_sep": "\n",
    "stop_str": ["<end_of_turn>"],
    "stop_token_ids": [1, 106],
    "function_string": "",
    "use_function_calling": False,
}


# Gemma 4's turn markers (Google's "Gemma 4 prompt formatting" page, ai.google.dev/gemma/docs/core/
# prompt-formatting-gemma4): <|turn>{role}\n ... <turn|>, roles system / user / model.  The system
# role makes a system message its own turn (Gemma 3 has none: pipeline.runtime.chat puts it in the
# first user turn).
GEMMA4_TEMPLATE = {
    **GEMMA_TEMPLATE,
    "name": "gemma4_instruction",
    "roles": {"system": "<|turn>system", "user": "<|turn>user", "assistant": "<|turn>model"},
    "seps": ["<turn|>\n"],
    "stop_str": ["<turn|>"],
}
TEMPLATES = {"gemma3": GEMMA_TEMPLATE, "gemma4": GEMMA4_TEMPLATE}


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
        "conv_template": TEMPLATES[family],
        "pad_token_id": cfg["pad_token_id"],
        "bos_token_id": cfg["bos_token_id"],
        "eos_token_id": cfg["eos_token_id"],
    }
