"""mlc-mtp: import language models and their multi-token-prediction heads, compile them with TVM,
package them in MLC LLM's layout, and run them with speculative decoding."""

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)
