"""Gemma 4's chat template in MLC LLM's ``Conversation`` form: Gemma's
(:data:`pipeline.models.gemma3.chat.TEMPLATE`) with Gemma 4's turn markers (Google's "Gemma 4
prompt formatting" page, ai.google.dev/gemma/docs/core/prompt-formatting-gemma4):
``<|turn>{role}\\n ... <turn|>``, roles system / user / model.  The system role makes a system
message its own turn (Gemma 3 has none: :mod:`pipeline.runtime.chat` puts it at the top of the
first user turn)."""

from ..gemma3.chat import TEMPLATE as GEMMA_TEMPLATE

TEMPLATE = {
    **GEMMA_TEMPLATE,
    "name": "gemma4_instruction",
    "roles": {"system": "<|turn>system", "user": "<|turn>user", "assistant": "<|turn>model"},
    "seps": ["<turn|>\n"],
    "stop_str": ["<turn|>"],
}
