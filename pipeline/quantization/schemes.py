"""Quantization scheme names as MLC LLM defines them (``python/mlc_llm/quantization/quantization.py``).

``q0f32`` / ``q0f16``: no quantization, float32 / float16 weights and activations.
``q4f16_1`` / ``q4f32_1``: 4-bit symmetric group quantization, group size 32, eight values per
uint32, per-group scale in float16 / float32, activations in that float type.

``qsrcf32`` (ours): each matrix keeps the precision its source stored, float32 activations.  A
quantized source's groups are carried over with their own scales, so no value is rounded again:
``Q8_0`` / ``Q5_0`` -> 8-bit codes in groups of 32, ``Q6_K`` -> 8-bit codes in groups of 16 (its
sub-blocks), ``Q4_K`` / ``Q4_0`` -> 4-bit codes with a per-group minimum (groups of 32).  Other
matrices (float sources, other GGUF types) become 8-bit symmetric groups of 32.  Formats:
:mod:`pipeline.quantization.formats`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..errors import PipelineError
from .formats import Q4G32_MIN, Q8G16, Q8G32, GroupFormat, q4_symmetric


@dataclasses.dataclass(frozen=True)
class QuantScheme:
    """One scheme: ``model_dtype`` is the activation/scale dtype; ``bits == 0`` means none."""

    name: str
    model_dtype: str
    bits: int = 0
    group_size: int = 32
    storage_dtype: str = "uint32"
    keeps_source: bool = False  # per-tensor formats from the source's types (``qsrcf32``)

    @property
    def quantized(self) -> bool:
        """Whether weights are group-quantized."""
        return self.bits > 0 or self.keeps_source

    def tensor_format(self, source_type: str | None = None) -> GroupFormat | None:
        """The storage format of a weight matrix whose source stored it as ``source_type`` (a GGML
        type name such as ``Q4_K``, or a float dtype name such as ``BF16``; None: unknown); None
        for unquantized schemes."""
        if self.keeps_source:
            return SOURCE_FORMATS.get(source_type or "", Q8G32)
        return q4_symmetric(self.model_dtype) if self.bits == 4 else None

    @property
    def max_int(self) -> int:
        """Largest magnitude of a symmetric code: ``2 ** (bits - 1) - 1`` (7 for 4 bits)."""
        return 2 ** (self.bits - 1) - 1

    @property
    def per_storage(self) -> int:
        """Codes packed into one storage word (8 for 4-bit codes in uint32)."""
        return 32 // self.bits


# qsrcf32: GGML type -> format whose codes and scales hold that type's values exactly
# (pipeline.sources.gguf_file.GGUFSource.group_scales gives the scales).
SOURCE_FORMATS = {"Q8_0": Q8G32, "Q5_0": Q8G32, "Q6_K": Q8G16, "Q4_K": Q4G32_MIN, "Q4_0": Q4G32_MIN}

SCHEMES = {
    "q0f32": QuantScheme("q0f32", "float32"),
    "q0f16": QuantScheme("q0f16", "float16"),
    "q4f16_1": QuantScheme("q4f16_1", "float16", bits=4),
    "q4f32_1": QuantScheme("q4f32_1", "float32", bits=4),
    "qsrcf32": QuantScheme("qsrcf32", "float32", keeps_source=True),
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
    return next(s for s in SCHEMES.values() if s.model_dtype == "float32" and (s.bits, s.group_size, s.storage_dtype,
                s.keeps_source) == (scheme.bits, scheme.group_size, scheme.storage_dtype, scheme.keeps_source))


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
