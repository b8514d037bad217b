"""Read the weights of a TFLite model (the ``.tflite`` flatbuffer, LiteRT's model format).

Format: ``tflite/converter/schema/schema.fbs`` in google-ai-edge/LiteRT (formerly
``tensorflow/lite/schema/schema.fbs``), read through its generated Python module
``ai_edge_litert.schema_py_generated`` and the ``flatbuffers`` runtime.  The facts used here:

* the file identifier ``TFL3`` sits at bytes 4-7; the root table is ``Model``;
* ``Model.subgraphs[i].tensors[j]`` has ``shape`` (int32, row-major, C order), ``type``
  (``TensorType``), ``buffer`` (index into ``Model.buffers``; 0 is the empty sentinel), ``name`` and
  optional ``quantization``; ``external_buffer`` (non-zero) names an ``ExternalBuffer`` whose
  bytes live in another file (group);
* ``Buffer{data, offset, size}``: the bytes are either inline (``data``) or, in models past 2 GB,
  ``size`` bytes at ``offset`` counted from the start of the model (valid only when ``offset > 1``);
* ``QuantizationParameters{scale[], zero_point[], quantized_dimension}``: ``real = scale * (q -
  zero_point)``, one scale per tensor or one per index along ``quantized_dimension``; when
  ``details`` (blockwise / multi-axis quantization) is set, the scale fields are not used;
* ``INT4``/``UINT4`` pack two values per byte over the flattened tensor, the element with the
  lower index in the low nibble; ``BFLOAT16`` is the upper half of a float32.

The Python flatbuffers runtime has no verifier and silently reads from the wrong place (negative
offsets wrap around) on corrupt input, so every table, vector and string that is read is first
bounds-checked (:func:`pipeline.sources.flatbuffer_bounds.check_flatbuffer`) against a
description of the schema fields used.

All multi-byte values are little-endian, as the format prescribes.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flatbuffers  # noqa: F401  (the runtime the generated module uses)
import ml_dtypes
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from ..errors import PipelineError
from .flatbuffer_bounds import FbTable, FlatbufferLayoutError, check_flatbuffer

TFLITE_IDENTIFIER = b"TFL3"

# The parts of schema.fbs read below (slots checked against schema_py_generated's vtable offsets).
_QUANT = FbTable("QuantizationParameters", {
    2: ("scale", "vector", 4),
    3: ("zero_point", "vector", 8),
    4: ("details_type", "scalar", 1),
    5: ("details", "union", (4, {})),
    6: ("quantized_dimension", "scalar", 4),
})
_TENSOR = FbTable("Tensor", {
    0: ("shape", "vector", 4),
    1: ("type", "scalar", 1),
    2: ("buffer", "scalar", 4),
    3: ("name", "string", None),
    4: ("quantization", "table", _QUANT),
    6: ("sparsity", "table", FbTable("SparsityParameters", {})),
    10: ("external_buffer", "scalar", 4),
})
_SUBGRAPH = FbTable("SubGraph", {
    0: ("tensors", "tables", _TENSOR),
    3: ("operators", "vector", 4),
    4: ("name", "string", None),
})
_BUFFER = FbTable("Buffer", {0: ("data", "vector", 1), 1: ("offset", "scalar", 8), 2: ("size", "scalar", 8)})
_SIGNATURE = FbTable("SignatureDef", {2: ("signature_key", "string", None), 4: ("subgraph_index", "scalar", 4)})
_MODEL = FbTable("Model", {
    0: ("version", "scalar", 4),
    2: ("subgraphs", "tables", _SUBGRAPH),
    3: ("description", "string", None),
    4: ("buffers", "tables", _BUFFER),
    7: ("signature_defs", "tables", _SIGNATURE),
    8: ("external_buffer_groups", "tables", FbTable("ExternalBufferGroup", {0: ("name", "string", None)})),
    9: ("external_buffers", "tables", FbTable("ExternalBuffer", {
        0: ("id", "scalar", 4), 1: ("group", "scalar", 4), 2: ("offset", "scalar", 8),
        3: ("length", "scalar", 8), 4: ("packing", "string", None)})),
})

# ----------------------------------------------------------------------------------------------
# tensor types
# ----------------------------------------------------------------------------------------------

TENSOR_TYPE_NAMES: dict[int, str] = {
    value: name for name, value in vars(tfl.TensorType).items() if not name.startswith("_")
}

# TensorType -> numpy dtype of the stored elements (little-endian), for byte-sized types.
_STORAGE: dict[str, np.dtype] = {
    "FLOAT32": np.dtype("<f4"), "FLOAT16": np.dtype("<f2"), "FLOAT64": np.dtype("<f8"),
    "INT8": np.dtype("i1"), "UINT8": np.dtype("u1"), "INT16": np.dtype("<i2"), "UINT16": np.dtype("<u2"),
    "INT32": np.dtype("<i4"), "UINT32": np.dtype("<u4"), "INT64": np.dtype("<i8"), "UINT64": np.dtype("<u8"),
    "BOOL": np.dtype("?"), "COMPLEX64": np.dtype("<c8"), "COMPLEX128": np.dtype("<c16"),
    "BFLOAT16": np.dtype("<u2"),
    "FLOAT8_E4M3FN": np.dtype(ml_dtypes.float8_e4m3fn), "FLOAT8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_PACKED = {"INT4": 4, "UINT4": 4, "INT2": 2}  # bits per element, packed low bits first
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16", "FLOAT8_E4M3FN", "FLOAT8_E5M2"})
INTEGER_TYPES = frozenset({"INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64",
                           "INT4", "UINT4", "INT2"})
_DETAILS_NAMES = {value: name for name, value in vars(tfl.QuantizationDetails).items() if not name.startswith("_")}


def stored_nbytes(dtype: str, count: int) -> int | None:
    """Bytes that ``count`` elements of TFLite type ``dtype`` occupy, or None for types without a
    fixed size (STRING, RESOURCE, VARIANT)."""
    if dtype in _PACKED:
        per_byte = 8 // _PACKED[dtype]
        return (count + per_byte - 1) // per_byte
    if dtype in _STORAGE:
        return count * _STORAGE[dtype].itemsize
    return None


def unpack_int4(packed: np.ndarray, count: int, signed: bool = True) -> np.ndarray:
    """Unpack ``count`` 4-bit values from uint8 bytes, low nibble first, as int8.

    Element ``2*i`` is ``packed[i] & 0xF`` and element ``2*i+1`` is ``packed[i] >> 4``; signed
    values are sign-extended (nibble ``0x8..0xF`` -> -8..-1).
    """
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    out = np.empty(packed.size * 2, dtype=np.int8)
    out[0::2] = packed & 0x0F
    out[1::2] = packed >> 4
    out = out[:count]
    if signed:
        out = np.where(out >= 8, out - 16, out).astype(np.int8)
    return out


def _unpack_int2(packed: np.ndarray, count: int) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    out = np.empty(packed.size * 4, dtype=np.int8)
    for k in range(4):
        out[k::4] = (packed >> (2 * k)) & 0x3
    out = out[:count]
    return np.where(out >= 2, out - 4, out).astype(np.int8)


# ----------------------------------------------------------------------------------------------
# public description of tensors
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantization:
    """A tensor's affine quantization: ``real = scale * (q - zero_point)``.

    ``scale`` float32 ``[n]`` and ``zero_point`` int64 ``[n]`` (zeros when the file has none);
    ``n == 1`` is per-tensor, otherwise per-channel along axis ``quantized_dimension``.
    ``details`` names a ``QuantizationDetails`` union member (e.g. ``BlockwiseQuantization``)
    when the file uses one instead of the scale fields, else None.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    quantized_dimension: int
    details: str | None = None

    @property
    def per_channel(self) -> bool:
        """True when there is more than one scale."""
        return self.scale.size > 1

    def describe(self) -> str:
        """A short text, e.g. ``per-channel(axis 0, 8 scales)`` or ``per-tensor(scale 0.02, zp 0)``."""
        if self.details:
            return f"{self.details}"
        if self.per_channel:
            return f"per-channel(axis {self.quantized_dimension}, {self.scale.size} scales)"
        zero = int(self.zero_point[0]) if self.zero_point.size else 0
        return f"per-tensor(scale {float(self.scale[0]):.6g}, zp {zero})"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of one subgraph.

    ``shape`` in numpy (row-major) order; ``dtype`` the TFLite ``TensorType`` name (``INT8``,
    ``FLOAT32``, ...); ``buffer`` the index into ``Model.buffers``; ``nbytes`` the stored bytes
    (0 for tensors without data, e.g. activations); ``storage`` is ``inline``, ``offset`` (after
    the flatbuffer), ``external`` or ``none``.  ``quantization`` is whatever the file carries,
    also on float tensors, where it is never applied (see :attr:`is_quantized`).
    """

    subgraph: int
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: int
    quantization: Quantization | None
    nbytes: int
    storage: str
    external_buffer: int = 0
    sparse: bool = False

    @property
    def has_data(self) -> bool:
        """True for constant tensors (weights)."""
        return self.storage != "none"

    @property
    def is_quantized(self) -> bool:
        """True when loading applies the quantization (an integer type with scales)."""
        return (
            self.quantization is not None
            and self.dtype in INTEGER_TYPES
            and (self.quantization.scale.size > 0 or self.quantization.details is not None)
        )


def _text(raw: bytes | None) -> str:
    if raw is None:
        return ""
    return raw.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------


class TFLiteModel:
    """A TFLite model read from a path or from bytes (e.g. a LiteRT-LM section).

    Args:
        source: path of a ``.tflite`` file (memory-mapped) or a bytes-like object holding one.
        name: what error messages call the model (defaults to the path or ``<tflite bytes>``).
        external: bytes of external buffer groups (TFLite ``ExternalBufferGroup``), either one
            bytes-like used for every group or a mapping group name -> bytes-like.

    Attributes:
        tensors: every tensor of every subgraph, in file order (list of :class:`TensorInfo`).
        subgraph_names, signatures (key -> subgraph index), description, version.

    Raises (from the constructor):
        PipelineError: missing file, no ``TFL3`` identifier, a flatbuffer whose tables, vectors or
            strings run outside the data, a tensor naming a buffer that does not exist, a buffer
            whose ``offset/size`` runs past the end of the model.
    """

    def __init__(self, source: str | Path | bytes | bytearray | memoryview, *, name: str | None = None,
                 external: Any = None):
        self._mmap: mmap.mmap | None = None
        if isinstance(source, (str, Path)):
            path = Path(source)
            self.name = name or str(path)
            if not path.is_file():
                raise PipelineError(f"{self.name}: TFLite file not found")
            with open(path, "rb") as handle:
                size = path.stat().st_size
                if size == 0:
                    raise PipelineError(f"{self.name}: empty file, not a TFLite model")
                self._mmap = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._data = memoryview(self._mmap)
        else:
            self.name = name or "<tflite bytes>"
            self._data = memoryview(source).cast("B")
        self._external = external
        data = self._data
        if len(data) < 8:
            raise PipelineError(f"{self.name}: {len(data)} bytes, too short for a TFLite model (needs at least 8)")
        if bytes(data[4:8]) != TFLITE_IDENTIFIER:
            raise PipelineError(
                f"{self.name}: not a TFLite model (file identifier {bytes(data[4:8])!r} at bytes 4-7, expected b'TFL3')"
            )
        try:
            check_flatbuffer(data, _MODEL)
        except FlatbufferLayoutError as err:
            raise PipelineError(f"{self.name}: corrupt TFLite flatbuffer: {err}") from None
        try:
            self._read()
        except PipelineError:
            raise
        except Exception as err:  # flatbuffers raises many kinds
            raise PipelineError(f"{self.name}: corrupt TFLite flatbuffer ({type(err).__name__}: {err})") from None

    # -- reading the flatbuffer -----------------------------------------------------------------

    def _read(self) -> None:
        model = tfl.Model.GetRootAs(self._data, 0)
        self._model = model
        self.version = int(model.Version())
        self.description = _text(model.Description())
        self.buffer_count = int(model.BuffersLength())
        self._buffers: list[tuple[int, int, int]] = []  # (kind 0 none/1 inline/2 offset, start, size)
        total = len(self._data)
        for i in range(self.buffer_count):
            buf = model.Buffers(i)
            offset, size = int(buf.Offset()), int(buf.Size())
            if offset > 1:
                if offset + size > total:
                    raise PipelineError(
                        f"{self.name}: buffer {i}: offset {offset} + size {size} = {offset + size} "
                        f"runs past the end of the model ({total} bytes)"
                    )
                self._buffers.append((2, offset, size))
            elif not buf.DataIsNone() and buf.DataLength() > 0:
                vec = buf._tab.Vector(buf._tab.Offset(4))
                self._buffers.append((1, int(vec), int(buf.DataLength())))
            else:
                self._buffers.append((0, 0, 0))
        self.external_groups = [_text(model.ExternalBufferGroups(i).Name())
                                for i in range(model.ExternalBufferGroupsLength())]
        self._external_buffers: dict[int, tuple[int, int, int, str]] = {}
        for i in range(model.ExternalBuffersLength()):
            ext = model.ExternalBuffers(i)
            self._external_buffers[int(ext.Id())] = (int(ext.Group()), int(ext.Offset()), int(ext.Length()),
                                                     _text(ext.Packing()))
        self.signatures: dict[str, int] = {}
        for i in range(model.SignatureDefsLength()):
            sig = model.SignatureDefs(i)
            self.signatures[_text(sig.SignatureKey())] = int(sig.SubgraphIndex())
        self.subgraph_names: list[str] = []
        self.operator_counts: list[int] = []
        self.tensors: list[TensorInfo] = []
        for s in range(model.SubgraphsLength()):
            subgraph = model.Subgraphs(s)
            self.subgraph_names.append(_text(subgraph.Name()))
            self.operator_counts.append(int(subgraph.OperatorsLength()))
            for t in range(subgraph.TensorsLength()):
                self.tensors.append(self._tensor_info(s, t, subgraph.Tensors(t)))

    def _tensor_info(self, s: int, t: int, tensor: Any) -> TensorInfo:
        name = _text(tensor.Name())
        shape = tuple(int(x) for x in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        type_code = int(tensor.Type())
        dtype = TENSOR_TYPE_NAMES.get(type_code, f"UNKNOWN({type_code})")
        buffer = int(tensor.Buffer())
        if buffer >= self.buffer_count and buffer != 0:
            raise PipelineError(
                f"{self.name}: tensor {name!r} (subgraph {s}, index {t}): buffer index {buffer} "
                f"is past the {self.buffer_count} buffers of the model"
            )
        quant = None
        qp = tensor.Quantization()
        if qp is not None:
            details_type = int(qp.DetailsType())
            details = None
            if details_type:
                details = _DETAILS_NAMES.get(details_type, f"QuantizationDetails({details_type})")
            scale = np.array(qp.ScaleAsNumpy(), dtype=np.float32) if qp.ScaleLength() else np.zeros(0, np.float32)
            zero = np.array(qp.ZeroPointAsNumpy(), dtype=np.int64) if qp.ZeroPointLength() else np.zeros(0, np.int64)
            if scale.size or zero.size or details:
                quant = Quantization(scale.reshape(-1), zero.reshape(-1), int(qp.QuantizedDimension()), details)
        external_id = int(tensor.ExternalBuffer())
        if external_id:
            if external_id not in self._external_buffers:
                raise PipelineError(
                    f"{self.name}: tensor {name!r}: external_buffer id {external_id} is not among the "
                    f"model's {len(self._external_buffers)} external buffers"
                )
            storage, nbytes = "external", self._external_buffers[external_id][2]
        else:
            kind, _, size = self._buffers[buffer] if buffer < len(self._buffers) else (0, 0, 0)
            storage, nbytes = ("none", "inline", "offset")[kind], size
        return TensorInfo(s, t, name, shape, dtype, buffer, quant, nbytes, storage, external_id,
                          tensor.Sparsity() is not None)

    # -- access ---------------------------------------------------------------------------------

    def constant_tensors(self) -> list[TensorInfo]:
        """Tensors that hold data (weights), each (name, storage location) once, in file order.

        Subgraphs of one model (e.g. prefill and decode signatures) usually share their weights;
        the copies after the first are left out.
        """
        seen: set[tuple[str, int, int]] = set()
        out = []
        for info in self.tensors:
            if not info.has_data:
                continue
            key = (info.name, info.buffer, info.external_buffer)
            if key in seen:
                continue
            seen.add(key)
            out.append(info)
        return out

    def tensor(self, name: str) -> TensorInfo:
        """The first tensor called ``name``, preferring one that holds data.

        Raises:
            PipelineError: no tensor has that name.
        """
        candidates = [t for t in self.tensors if t.name == name]
        if not candidates:
            raise PipelineError(f"{self.name}: tensor {name!r} not found")
        with_data = [t for t in candidates if t.has_data]
        return (with_data or candidates)[0]

    def raw_bytes(self, info: TensorInfo) -> memoryview:
        """The stored bytes of ``info`` (zero-copy view; external groups resolved).

        Raises:
            PipelineError: the tensor has no data, or its external group is not available or
                too short.
        """
        if info.storage == "external":
            group, offset, length, packing = self._external_buffers[info.external_buffer]
            if packing not in ("", "unpacked"):
                raise PipelineError(f"{self.name}: tensor {info.name!r}: external buffer packing "
                                    f"{packing!r} is not supported (expected 'unpacked')")
            group_name = self.external_groups[group] if group < len(self.external_groups) else f"#{group}"
            source = self._external
            if isinstance(source, Mapping):
                source = source.get(group_name)
            if source is None:
                raise PipelineError(f"{self.name}: tensor {info.name!r} is stored in external buffer group "
                                    f"{group_name!r}, which was not provided")
            view = memoryview(source).cast("B")
            if offset + length > len(view):
                raise PipelineError(
                    f"{self.name}: tensor {info.name!r}: external buffer offset {offset} + length {length} "
                    f"runs past the end of group {group_name!r} ({len(view)} bytes)"
                )
            return view[offset:offset + length]
        if info.storage == "none":
            raise PipelineError(f"{self.name}: tensor {info.name!r} has no data (not a constant tensor)")
        _, start, size = self._buffers[info.buffer]
        return self._data[start:start + size]

    def load(self, tensor: str | TensorInfo) -> np.ndarray:
        """The values of a constant tensor as a numpy array of shape ``info.shape``.

        * FLOAT32 -> float32, FLOAT16 -> float16 (kept), FLOAT64 -> float64, BFLOAT16 and FLOAT8 ->
          float32 (exact widening).  Quantization metadata on float tensors is ignored.
        * Integer types with quantization scales (INT8, INT4, UINT8, INT16, ...) -> float32
          ``scale * (q - zero_point)``, per tensor or per channel along ``quantized_dimension``.
          The product is formed in float32 when that is exact (|q - zero_point| < 2**24), which
          equals TFLite's ``(float)(double(scale) * (q - zero_point))``, otherwise in float64.
        * Integer types without scales -> their integers (INT4/UINT4/INT2 unpacked to int8/uint8),
          BOOL -> bool.

        Raises:
            PipelineError: unknown tensor, no data, a stored size that differs from
                ``prod(shape) * element size``, unsupported types (STRING, RESOURCE, VARIANT),
                sparse tensors, blockwise quantization, or scale / zero point counts that do not
                match the quantized dimension.
        """
        info = self.tensor(tensor) if isinstance(tensor, str) else tensor
        label = f"{self.name}: tensor {info.name!r}"
        if info.sparse:
            raise PipelineError(f"{label}: sparse tensors are not supported")
        if any(d < 0 for d in info.shape):
            raise PipelineError(f"{label}: shape {list(info.shape)} has unknown dimensions")
        count = int(np.prod(info.shape, dtype=object)) if info.shape else 1
        expected = stored_nbytes(info.dtype, count)
        if expected is None:
            raise PipelineError(f"{label}: tensor type {info.dtype} is not supported")
        raw = self.raw_bytes(info)
        if len(raw) != expected:
            raise PipelineError(
                f"{label}: buffer holds {len(raw)} bytes, expected {expected} for shape {list(info.shape)} "
                f"of {info.dtype}"
            )
        dtype = info.dtype
        if dtype in ("INT4", "UINT4"):
            values = unpack_int4(np.frombuffer(raw, dtype=np.uint8), count, signed=dtype == "INT4")
            if dtype == "UINT4":
                values = values.astype(np.uint8)
        elif dtype == "INT2":
            values = _unpack_int2(np.frombuffer(raw, dtype=np.uint8), count)
        else:
            values = np.frombuffer(raw, dtype=_STORAGE[dtype], count=count)
        values = values.reshape(info.shape)
        if dtype == "BFLOAT16":
            return (values.astype(np.uint32) << 16).view(np.float32)
        if dtype in ("FLOAT8_E4M3FN", "FLOAT8_E5M2"):
            return values.astype(np.float32)
        if dtype in FLOAT_TYPES or not info.is_quantized:
            return values.copy()
        return self._dequantize(info, values, label)

    @staticmethod
    def _dequantize(info: TensorInfo, q: np.ndarray, label: str) -> np.ndarray:
        quant = info.quantization
        assert quant is not None
        if quant.details is not None:
            raise PipelineError(f"{label}: {quant.details} quantization is not supported")
        scale, zero = quant.scale, quant.zero_point
        if zero.size == 0:
            zero = np.zeros(scale.size, dtype=np.int64)
        elif zero.size == 1 and scale.size > 1:
            zero = np.full(scale.size, zero[0], dtype=np.int64)
        if zero.size != scale.size:
            raise PipelineError(f"{label}: {scale.size} scales but {zero.size} zero points")
        if scale.size == 1:
            shape_b: tuple[int, ...] = ()
        else:
            axis = quant.quantized_dimension
            if not 0 <= axis < q.ndim:
                raise PipelineError(
                    f"{label}: quantized_dimension {axis} is outside the tensor's {q.ndim} dimensions"
                )
            if q.shape[axis] != scale.size:
                raise PipelineError(
                    f"{label}: {scale.size} scales for dimension {axis} of size {q.shape[axis]} "
                    f"(shape {list(q.shape)})"
                )
            shape_b = tuple(scale.size if d == axis else 1 for d in range(q.ndim))
        q_range = max(abs(int(q.min())), abs(int(q.max()))) if q.size else 0
        z_range = int(np.abs(zero).max()) if zero.size else 0
        with np.errstate(over="ignore", invalid="ignore"):  # huge scales give inf, as the formula does
            if q_range + z_range < 2**24:
                diff = q.astype(np.float32) - zero.astype(np.float32).reshape(shape_b)
                return diff * scale.reshape(shape_b)
            diff = q.astype(np.float64) - zero.astype(np.float64).reshape(shape_b)
            return (diff * scale.astype(np.float64).reshape(shape_b)).astype(np.float32)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, array)`` for every constant tensor (see :meth:`constant_tensors`)."""
        for info in self.constant_tensors():
            yield info.name, self.load(info)

    def close(self) -> None:
        """Release the memory map of a model opened from a path (views handed out stay valid
        until they are garbage-collected)."""
        if self._mmap is not None:
            self._data.release()
            try:
                self._mmap.close()
            except BufferError:
                pass  # views still exported; the map closes when they are collected
            self._mmap = None

    def __enter__(self) -> TFLiteModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
