"""Gemma's chat template in MLC LLM's ``Conversation`` form (``conversation_template/gemma.py``),
the ``conv_template`` of a Gemma 3 package's ``mlc-chat-config.json``."""

TEMPLATE = {
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
