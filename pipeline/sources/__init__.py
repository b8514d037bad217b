"""Readers for base-weight files: GGUF (llama.cpp) and Hugging Face safetensors directories."""
