"""MLC LLM's artifact layout: weights, ``mlc-chat-config.json``, tokenizer files, model libraries."""
