"""Read Hugging Face model directories: ``config.json`` plus safetensors, sharded or not.

Sharded checkpoints name their files in ``model.safetensors.index.json`` (``weight_map``:
tensor name -> file), the layout ``transformers`` writes with ``save_pretrained``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from ..errors import PipelineError


class HFSource:
    """A Hugging Face directory: ``config`` (the parsed ``config.json``) and tensors by name.

    Tensors come back as float32 numpy arrays (bf16/f16 widened).

    Raises (from the constructor):
        PipelineError: missing directory, ``config.json`` or safetensors files, bad JSON.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise PipelineError(f"{self.path}: Hugging Face model directory not found")
        config_path = self.path / "config.json"
        try:
            self.config: dict[str, Any] = json.loads(config_path.read_text())
        except FileNotFoundError:
            raise PipelineError(f"{config_path}: not found (a Hugging Face directory needs config.json)") from None
        except json.JSONDecodeError as err:
            raise PipelineError(f"{config_path}: invalid JSON: {err}") from None
        index = self.path / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.path.glob("*.safetensors"))
        if not files:
            raise PipelineError(f"{self.path}: no *.safetensors files found")
        self._location: dict[str, Path] = {}
        for name in files:
            file = self.path / name
            if not file.exists():
                raise PipelineError(f"{file}: listed in model.safetensors.index.json but missing")
            try:
                with safe_open(str(file), framework="numpy") as handle:
                    for key in handle.keys():
                        self._location[key] = file
            except Exception as err:
                raise PipelineError(f"{file}: unreadable safetensors file ({err})") from None

    def tensor_names(self) -> list[str]:
        """All tensor names across shards."""
        return list(self._location)

    def tensor_info(self, name: str) -> tuple[tuple[int, ...], str]:
        """``(shape, dtype name)`` of tensor ``name`` without reading its data."""
        with safe_open(str(self._location[name]), framework="numpy") as handle:
            sl = handle.get_slice(name)
            return tuple(sl.get_shape()), sl.get_dtype()

    def load(self, name: str) -> np.ndarray:
        """Tensor ``name`` as float32 (bf16 widened exactly)."""
        if name not in self._location:
            raise PipelineError(f"{self.path}: tensor {name!r} not found")
        with safe_open(str(self._location[name]), framework="numpy") as handle:
            array = handle.get_tensor(name)  # bf16 arrives as ml_dtypes.bfloat16
        return np.ascontiguousarray(array, dtype=np.float32)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every tensor as float32."""
        for name in self._location:
            yield name, self.load(name)
