"""Quantization scheme names as MLC LLM defines them (``python/mlc_llm/quantization/quantization.py``).

``q0f32`` / ``q0f16``: no quantization, float32 / float16 weights and activations.
``q4f16_1`` / ``q4f32_1``: 4-bit symmetric group quantization, group size 32, eight values per
uint32, per-group scale in float16 / float32, activations in that float type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..errors import PipelineError


@dataclasses.dataclass(frozen=True)
class QuantScheme:
    """One scheme: ``model_dtype`` is the activation/scale dtype; ``bits == 0`` means none."""

    name: str
    model_dtype: str
    bits: int = 0
    group_size: int = 32
    storage_dtype: str = "uint32"

    @property
    def quantized(self) -> bool:
        """Whether weights are group-quantized."""
        return self.bits > 0

    @property
    def max_int(self) -> int:
        """Largest magnitude of a symmetric code: ``2 ** (bits - 1) - 1`` (7 for 4 bits)."""
        return 2 ** (self.bits - 1) - 1

    @property
    def per_storage(self) -> int:
        """Codes packed into one storage word (8 for 4-bit codes in uint32)."""
        return 32 // self.bits


SCHEMES = {
    "q0f32": QuantScheme("q0f32", "float32"),
    "q0f16": QuantScheme("q0f16", "float16"),
    "q4f16_1": QuantScheme("q4f16_1", "float16", bits=4),
    "q4f32_1": QuantScheme("q4f32_1", "float32", bits=4),
}


def get_scheme(name: str) -> QuantScheme:
    """The scheme called ``name``.  Raises PipelineError listing the known names."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise PipelineError(f"quantization {name!r} is unknown; expected one of {sorted(SCHEMES)}") from None


def float32_variant(scheme: QuantScheme) -> QuantScheme:
    """The scheme with the same weight quantization (bits, group size) computing in float32:
    ``q4f16_1`` -> ``q4f32_1``, ``q0f16`` -> ``q0f32``; a float32 scheme is returned as is."""
    return next(s for s in SCHEMES.values() if s.model_dtype == "float32" and (s.bits, s.group_size, s.storage_dtype)
                == (scheme.bits, scheme.group_size, scheme.storage_dtype))


def scheme_for_targets(scheme: QuantScheme, presets: list, explicit: bool, where: str,
                       say: Callable[[str], None]) -> QuantScheme:
    """``scheme``, or its float32 variant (:func:`float32_variant`) when one of ``presets``
    (:class:`~pipeline.compile.targets.TargetPreset`) has no float16 (``supports_fp16: false``,
    e.g. WebGPU without ``shader-f16``) and the scheme came from the config (not ``explicit``);
    the switch is said through ``say``, prefixed by ``where``.  One package has one weight format,
    so every target of the build then computes in float32.

    Raises:
        PipelineError: a float16 scheme asked for explicitly (``--quantization``) with such a target.
    """
    no_fp16 = [p.name for p in presets if not p.supports_fp16]
    if scheme.model_dtype != "float16" or not no_fp16:
        return scheme
    variant = float32_variant(scheme)
    if explicit:
        raise PipelineError(f"--quantization {scheme.name}: target {', '.join(no_fp16)} has no float16 "
                            f"support; expected a float32 scheme such as {variant.name}")
    say(f"{where}: target {', '.join(no_fp16)} has no float16: building {variant.name} (float32 compute) "
        f"instead of {scheme.name}")
    return variant
