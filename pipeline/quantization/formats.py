"""How one quantized weight matrix is stored, encoded (numpy) and read back (numpy and TE).

A weight ``W`` of shape ``(..., N, K)`` (rows = output features / vocabulary entries) is cut along
``K`` into groups of ``group_size`` values; each group has a scale ``s`` (and, with ``with_min``, a
minimum ``m``).  A value is read back as

* symmetric 4-bit (MLC LLM's ``q4f16_1`` / ``q4f32_1``, ``python/mlc_llm/quantization/group_quantization.py``):
  ``(code - 7) * s`` with ``code`` in ``0..14``, eight codes per ``uint32`` word, low bits first;
* symmetric 8-bit: ``code * s`` with ``code`` an ``int8`` stored as is (``(N, K)``);
* 4-bit with a minimum: ``code * s - m`` with ``code`` in ``0..15``, packed as above — the value
  grid of llama.cpp's ``Q4_K`` sub-blocks (``ggml/src/ggml-quants.c``, ``dequantize_row_q4_K``:
  ``d * sc * q - dmin * m``), so such a tensor is carried over without rounding again.

Stored tensors: ``<name>.q_weight`` (``uint32`` ``(..., N, K / 8)`` or ``int8`` ``(..., N, K)``),
``<name>.q_scale`` ``(..., N, K / group_size)`` in ``scale_dtype`` and, with a minimum,
``<name>.q_min`` of the same shape.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import PipelineError


@dataclasses.dataclass(frozen=True)
class GroupFormat:
    """One storage format; ``name`` is what packages record per tensor (e.g. ``q8g32``)."""

    name: str
    bits: int  # 4 (packed into uint32) or 8 (int8)
    group_size: int
    scale_dtype: str
    with_min: bool = False

    @property
    def storage_dtype(self) -> str:
        """``uint32`` for packed 4-bit codes, ``int8`` for 8-bit codes."""
        return "int8" if self.bits == 8 else "uint32"

    @property
    def per_storage(self) -> int:
        """Codes per stored element (8 for 4-bit codes in uint32, 1 for int8)."""
        return 1 if self.bits == 8 else 32 // self.bits

    @property
    def max_int(self) -> int:
        """Largest magnitude of a symmetric code: ``2 ** (bits - 1) - 1`` (7, 127)."""
        return 2 ** (self.bits - 1) - 1

    @property
    def offset(self) -> int:
        """What is added to a symmetric code before it is stored (7 for packed 4-bit, 0 for int8
        and for formats with a minimum, whose codes are unsigned)."""
        return self.max_int if self.bits < 8 and not self.with_min else 0

    @property
    def code_range(self) -> tuple[int, int]:
        """Smallest and largest stored code."""
        if self.bits == 8:
            return -self.max_int, self.max_int
        return 0, (2 ** self.bits - 1 if self.with_min else 2 * self.max_int)

    @property
    def tensors(self) -> tuple[str, ...]:
        """Suffixes of the stored tensors, in the order the kernels take them."""
        return ("q_weight", "q_scale", "q_min") if self.with_min else ("q_weight", "q_scale")

    def shapes(self, lead: tuple[int, ...], k: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """``suffix -> (shape, dtype)`` of a weight ``(*lead, k)``."""
        groups = (*lead, k // self.group_size)
        out = {"q_weight": ((*lead, k // self.per_storage), self.storage_dtype), "q_scale": (groups, self.scale_dtype)}
        if self.with_min:
            out["q_min"] = (groups, self.scale_dtype)
        return out

    def describe(self) -> dict[str, object]:
        """The format's fields, as packages record them (``tensor-cache.json`` metadata)."""
        return {"bits": self.bits, "group_size": self.group_size, "storage_dtype": self.storage_dtype,
                "scale_dtype": self.scale_dtype, "with_min": self.with_min, "offset": self.offset}

    def bytes_per_value(self) -> float:
        """Stored bytes per weight value, scales included."""
        scale = np.dtype(self.scale_dtype).itemsize * (2 if self.with_min else 1)
        return self.bits / 8 + scale / self.group_size


def encode(weight: np.ndarray, fmt: GroupFormat, scale: np.ndarray | None = None,
           minimum: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Quantize a float ``(..., N, K)`` array into ``{suffix: array}`` (see the module docstring).

    ``scale`` / ``minimum`` (``(..., N, K / group_size)``, float32): the groups' scale and
    minimum as a quantized source stored them (e.g. a GGUF block's ``d``); the codes are then the
    source's own.  Without them, symmetric formats take ``s = max|w| / max_int`` and formats with a
    minimum ``s = (max w - min w) / 15``, ``m = -min w``.

    Raises:
        PipelineError: ``K`` is not a multiple of the group size.
    """
    *lead, k = weight.shape
    if k % fmt.group_size:
        raise PipelineError(f"cannot group-quantize a weight of shape {weight.shape}: {k} % {fmt.group_size} != 0")
    groups = weight.astype(np.float32).reshape(*lead, k // fmt.group_size, fmt.group_size)
    lo, hi = fmt.code_range
    if scale is None:
        if fmt.with_min:
            low, high = groups.min(axis=-1), groups.max(axis=-1)
            scale, minimum = (high - low) / hi, -low
        else:
            scale = np.abs(groups).max(axis=-1) / fmt.max_int
    scale = scale.astype(fmt.scale_dtype).astype(np.float32)  # quantize against the stored scale
    safe = np.where(scale == 0, 1, scale)[..., None]
    if fmt.with_min:
        minimum = np.zeros_like(scale) if minimum is None else minimum
        minimum = minimum.astype(fmt.scale_dtype).astype(np.float32)
        codes = np.round((groups + minimum[..., None]) / safe)
    else:
        codes = np.round(groups / safe) + fmt.offset
    codes = np.clip(codes, lo, hi).reshape(*lead, k)
    out = {"q_scale": scale.astype(fmt.scale_dtype)}
    if minimum is not None and fmt.with_min:
        out["q_min"] = minimum.astype(fmt.scale_dtype)
    if fmt.bits == 8:
        out["q_weight"] = codes.astype(np.int8)
    else:
        words = codes.astype(np.uint32).reshape(*lead, k // fmt.per_storage, fmt.per_storage)
        shifts = np.arange(fmt.per_storage, dtype=np.uint32) * fmt.bits
        out["q_weight"] = np.bitwise_or.reduce(words << shifts, axis=-1).astype(np.uint32)
    return out


def decode(stored: dict[str, np.ndarray], fmt: GroupFormat) -> np.ndarray:
    """Inverse of :func:`encode`: float32 ``(..., N, K)``; the numpy reference of the kernels."""
    q_weight = stored["q_weight"]
    if fmt.bits == 8:
        codes = q_weight.astype(np.float32)
    else:
        shifts = np.arange(fmt.per_storage, dtype=np.uint32) * fmt.bits
        words = (q_weight[..., None] >> shifts) & np.uint32(2 ** fmt.bits - 1)
        codes = words.reshape(*q_weight.shape[:-1], -1).astype(np.float32)
    value = (codes - fmt.offset) * np.repeat(stored["q_scale"].astype(np.float32), fmt.group_size, axis=-1)
    if fmt.with_min:
        value = value - np.repeat(stored["q_min"].astype(np.float32), fmt.group_size, axis=-1)
    return value


def weight_expr(tensors, lead: tuple, j, fmt: GroupFormat, dtype: str):
    """TE expression of weight ``(*lead, j)`` read back in ``dtype`` from the stored ``tensors``
    (TE tensors in :attr:`GroupFormat.tensors` order)."""
    from tvm import tirx  # the compiler's IR: imported only where kernels are defined

    q_weight, q_scale = tensors[0], tensors[1]
    group = lead + (j // fmt.group_size,)
    if fmt.bits == 8:
        code = q_weight[lead + (j,)].astype(dtype)
    else:
        word = q_weight[lead + (j // fmt.per_storage,)]
        shift = (j % fmt.per_storage * fmt.bits).astype("uint32")
        code = ((word >> shift) & tirx.const(2 ** fmt.bits - 1, "uint32")).astype(dtype)
        if fmt.offset:
            code = code - tirx.const(fmt.offset, dtype)
    value = code * q_scale[group].astype(dtype)
    if fmt.with_min:
        value = value - tensors[2][group].astype(dtype)
    return value


def q4_symmetric(scale_dtype: str) -> GroupFormat:
    """MLC LLM's ``q4*_1`` format: 4-bit symmetric codes, groups of 32, scales in ``scale_dtype``."""
    return GroupFormat("q4g32", 4, 32, scale_dtype)


Q8G32 = GroupFormat("q8g32", 8, 32, "float32")
Q8G16 = GroupFormat("q8g16", 8, 16, "float32")
Q4G32_MIN = GroupFormat("q4g32m", 4, 32, "float32", with_min=True)
