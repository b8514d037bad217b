"""Weight quantization: MLC LLM's schemes and ours, applied to any model family by module rewriting.

The model rewriting (:mod:`.group_quant`) needs TVM's compiler and is imported on first use, so
that the schemes' names (:mod:`.schemes`, which the config schema lists) import without it.
"""

from .formats import GroupFormat
from .schemes import QuantScheme, float32_variant, get_scheme, scheme_for_targets

__all__ = ["GroupFormat", "QuantScheme", "float32_variant", "get_scheme", "scheme_for_targets", "quantize_model",
           "quantize_params"]


def __getattr__(name: str):
    if name in ("quantize_model", "quantize_params"):
        from . import group_quant

        return getattr(group_quant, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
