"""Weights read by tensor name from one file, for imports through a name map
(:mod:`pipeline.models.name_map`): a single ``.safetensors`` file, or the TFLite model of a
``.litertlm`` section.

Both offer ``tensor_names()``, ``tensor_info(name) -> (shape, dtype name)`` and
``load(name) -> float32 array`` (the interface of :class:`pipeline.sources.hf_dir.HFSource`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import safe_open

from ..errors import PipelineError
from ..extras import require_extra

if TYPE_CHECKING:  # the LiteRT readers need the litert extra; imported where used
    from .tflite import TensorInfo, TFLiteModel


class SafetensorsFile:
    """One ``.safetensors`` file (format: huggingface/safetensors), tensors as float32 (bf16 and
    f16 widened exactly, integers converted).

    Raises (from the constructor):
        PipelineError: the file is missing or not a safetensors file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise PipelineError(f"{self.path}: safetensors file not found")
        try:
            self._handle = safe_open(str(self.path), framework="numpy")
        except Exception as err:  # the safetensors binding raises many kinds
            raise PipelineError(f"{self.path}: unreadable safetensors file ({err})") from None

    def tensor_names(self) -> list[str]:
        """Tensor names in file order."""
        return list(self._handle.keys())

    def tensor_info(self, name: str) -> tuple[tuple[int, ...], str]:
        """``(shape, dtype name)`` of ``name`` without reading its data."""
        tensor = self._handle.get_slice(name)
        return tuple(tensor.get_shape()), tensor.get_dtype()

    def load(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a float32 array."""
        return np.ascontiguousarray(self._handle.get_tensor(name), dtype=np.float32)


class TFLiteTensors:
    """The constant tensors of a TFLite model's main subgraph (subgraph 0, the schema's main
    model), dequantized as :meth:`pipeline.sources.tflite.TFLiteModel.load` does, as float32.

    A name that several constants of the subgraph carry can be listed but not loaded.
    """

    def __init__(self, model: TFLiteModel):
        self.model = model
        constants = [t for t in model.constant_tensors() if t.subgraph == 0]
        self._infos: dict[str, TensorInfo] = {}
        for info in constants:
            self._infos.setdefault(info.name, info)
        self._counts = Counter(t.name for t in constants)

    @classmethod
    def from_litertlm(cls, path: str | Path, role: str) -> TFLiteTensors:
        """The TFLite model of the ``.litertlm`` section whose ``model_type`` is ``role``.

        Raises:
            PipelineError: the ``litert`` extra is not installed; see also
                :class:`~pipeline.sources.litertlm.LiteRTLMFile` and its ``tflite_model``.
        """
        require_extra("litert", f"{path}: reading a LiteRT-LM file")
        from .litertlm import LiteRTLMFile  # the litert extra

        return cls(LiteRTLMFile(path).tflite_model(role))

    def tensor_names(self) -> list[str]:
        """Names of the constant tensors, in file order, each once."""
        return list(self._infos)

    def tensor_info(self, name: str) -> tuple[tuple[int, ...], str]:
        """``(shape, TFLite type name)`` of ``name``."""
        info = self._infos[name]
        return info.shape, info.dtype

    def load(self, name: str) -> np.ndarray:
        """Constant ``name`` as float32: quantized integers dequantized, floats widened, float
        tensors' stray quantization metadata ignored.

        Raises:
            PipelineError: several constants carry ``name``, or the tensor cannot be read.
        """
        if self._counts[name] > 1:
            raise PipelineError(f"{self.model.name}: {self._counts[name]} constant tensors are named {name!r}; "
                                f"expected one")
        return np.ascontiguousarray(self.model.load(self._infos[name]), dtype=np.float32)
