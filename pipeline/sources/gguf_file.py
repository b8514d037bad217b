"""Read GGUF files (llama.cpp's format, ``gguf-py/gguf``) through the ``gguf`` package.

Tensors are dequantized to float32 with ``gguf.quants.dequantize`` (one formula per type:
F32, F16, BF16, Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, ...).  GGUF stores a tensor's dimensions
innermost-first; the arrays returned here are in numpy order, e.g. a linear weight is
``(out_features, in_features)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ..errors import PipelineError


class GGUFFileNotFoundError(PipelineError, FileNotFoundError):
    """The GGUF path does not name an existing regular file."""


class GGUFFormatError(PipelineError, ValueError):
    """A file that is not a readable GGUF (bad magic, truncated, corrupt header, a tensor past the
    end of the file), or GGUF content a reader cannot use; one line naming the file."""


class _Reader(gguf.GGUFReader):
    """gguf's reader, parsing over a plain ``ndarray`` view of its memory map instead of the
    ``np.memmap`` itself.  The reader slices the map once per metadata value and array element
    (Gemma 3's 262,144-token vocabulary: about 786,000 fields parts); every slice of an
    ``np.memmap`` runs its Python ``__array_finalize__``, which made opening the 241 MiB Gemma 3
    270M GGUF take 24 s here; over the plain view it takes 6 s.  Same bytes, still mapped (the
    view's base is the map), nothing read into memory."""

    @property  # type: ignore[override]
    def data(self) -> np.ndarray:
        return self._plain

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._plain = value.view(np.ndarray)


class GGUFSource:
    """An opened GGUF file: ``metadata`` (key -> value), the typed ``fields`` and float32 tensors
    by name.  The file is opened and checked once here; readers of its parts (the tokenizer,
    :mod:`pipeline.sources.gguf_tokenizer`) take a GGUFSource.

    Raises (from the constructor):
        GGUFFileNotFoundError: missing file.
        GGUFFormatError: a file the GGUF reader rejects (bad magic, truncated, corrupt header) or
            a tensor that ends past the end of the file; the message names the file.
        Both are PipelineErrors.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.is_file():
            raise GGUFFileNotFoundError(f"{self.path}: GGUF file not found (expected an existing regular file)")
        with open(self.path, "rb") as handle:
            magic = handle.read(4)
        if magic != b"GGUF":
            raise GGUFFormatError(f"{self.path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        try:
            self._reader = _Reader(str(self.path))
        except Exception as err:  # the reader raises ValueError/IndexError/struct errors alike
            raise GGUFFormatError(f"{self.path}: corrupt or truncated GGUF ({type(err).__name__}: {err})") from None
        self._tensors = {t.name: t for t in self._reader.tensors}
        size = self.path.stat().st_size
        for tensor in self._reader.tensors:
            end = int(tensor.data_offset) + int(tensor.n_bytes)
            if end > size:
                raise GGUFFormatError(
                    f"{self.path}: tensor {tensor.name} ends at byte {end}, past the end of the file ({size} bytes)"
                )

    @property
    def fields(self) -> Mapping[str, gguf.ReaderField]:
        """The reader's metadata fields by key, with their GGUF value types (``field.types``) and
        ``field.contents()``; includes the ``GGUF.*`` header pseudo-fields."""
        return self._reader.fields

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """Metadata key -> Python value (``GGUF.*`` header fields and values that do not decode,
        e.g. strings that are not UTF-8, left out).  Decoded on first use."""
        metadata: dict[str, Any] = {}
        for key, field in self._reader.fields.items():
            if key.startswith("GGUF."):
                continue
            try:
                metadata[key] = field.contents()
            except Exception:
                continue
        return metadata

    @property
    def architecture(self) -> str:
        """``general.architecture`` (e.g. ``gemma3``)."""
        return str(self.metadata.get("general.architecture", ""))

    def require(self, key: str) -> Any:
        """The value of metadata ``key``.  Raises PipelineError naming the key when absent."""
        if key not in self.metadata:
            raise PipelineError(f"{self.path}: metadata key {key!r} is missing")
        return self.metadata[key]

    def tensor_names(self) -> list[str]:
        """Names of all tensors, in file order."""
        return list(self._tensors)

    def tensor_info(self, name: str) -> tuple[tuple[int, ...], str]:
        """``(numpy-order shape, GGML type name)`` of tensor ``name``."""
        tensor = self._tensors[name]
        return tuple(int(x) for x in reversed(tensor.shape.tolist())), tensor.tensor_type.name

    def tensor_nbytes(self, name: str) -> int:
        """Bytes tensor ``name``'s data takes in the file (its blocks, as stored)."""
        return int(self._tensors[name].n_bytes)

    def load(self, name: str) -> np.ndarray:
        """Dequantize tensor ``name`` to a float32 array in numpy order.

        Raises:
            PipelineError: unknown tensor or unsupported quantization type.
        """
        if name not in self._tensors:
            raise PipelineError(f"{self.path}: tensor {name!r} not found")
        tensor = self._tensors[name]
        try:
            array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError:
            raise PipelineError(
                f"{self.path}: tensor {name}: quantization type {tensor.tensor_type.name} is not supported"
            ) from None
        shape = self.tensor_info(name)[0]
        return np.ascontiguousarray(array.reshape(shape), dtype=np.float32)

    def group_scales(self, name: str) -> tuple[int, np.ndarray, np.ndarray | None] | None:
        """The per-group scale (and minimum) a block-quantized tensor stores, so that its codes can
        be recovered exactly from :meth:`load`'s values: ``(group_size, scale, minimum)`` with
        float32 arrays of shape ``(..., N, K / group_size)``; a value is ``code * scale - minimum``
        (``minimum`` None: 0).  None for types without such groups (floats, other quantizations).

        Block layouts (``ggml/src/ggml-common.h``, and ``gguf.quants``' dequantizers):
        ``Q8_0`` / ``Q5_0`` / ``Q4_0``: ``d`` (float16) first, codes ``q``, ``q - 16``, ``q - 8``;
        ``Q6_K``: 16 ``int8`` sub-block scales at bytes 192..207 and ``d`` at 208..209, value
        ``d * sc * (q - 32)`` per 16 values; ``Q4_K``: ``d``, ``dmin`` then 12 bytes of 6-bit
        scales and minimums (``gguf.quants.Q4_K.get_scale_min``), value ``d * sc * q - dmin * m``
        per 32 values.  For ``Q4_0`` the minimum is ``8 d`` (codes ``0..15``).
        """
        tensor = self._tensors[name]
        kind = tensor.tensor_type
        shape = self.tensor_info(name)[0]
        blocks = np.asarray(tensor.data).view(np.uint8).reshape(-1, gguf.GGML_QUANT_SIZES[kind][1])
        Q = gguf.GGMLQuantizationType  # noqa: N806
        if kind in (Q.Q8_0, Q.Q5_0, Q.Q4_0):
            d = blocks[:, :2].copy().view(np.float16).astype(np.float32)[:, 0]
            group, scale = 32, d[:, None]
            minimum = 8 * scale if kind == Q.Q4_0 else None
        elif kind == Q.Q6_K:
            sc = blocks[:, 192:208].copy().view(np.int8).astype(np.float32)
            d = blocks[:, 208:210].copy().view(np.float16).astype(np.float32)
            group, scale, minimum = 16, d * sc, None
        elif kind == Q.Q4_K:
            d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
            dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
            sc, m = gguf.quants.Q4_K.get_scale_min(blocks[:, 4:16].copy())
            group, scale, minimum = 32, d * sc.astype(np.float32), dmin * m.astype(np.float32)
        else:
            return None
        groups = (*shape[:-1], shape[-1] // group)
        return group, scale.reshape(groups), None if minimum is None else minimum.reshape(groups)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every tensor, dequantized, in file order."""
        for name in self._tensors:
            yield name, self.load(name)
