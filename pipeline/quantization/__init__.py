"""Weight quantization schemes of MLC LLM, applied to any model family by module rewriting."""

from .schemes import QuantScheme, float32_variant, get_scheme
from .group_quant import quantize_model, quantize_params

__all__ = ["QuantScheme", "float32_variant", "get_scheme", "quantize_model", "quantize_params"]
