"""Weight quantization schemes of MLC LLM, applied to any model family by module rewriting."""

from .group_quant import quantize_model, quantize_params
from .schemes import QuantScheme, float32_variant, get_scheme, scheme_for_targets

__all__ = ["QuantScheme", "float32_variant", "get_scheme", "scheme_for_targets", "quantize_model", "quantize_params"]
