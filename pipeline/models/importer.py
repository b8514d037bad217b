"""Import base weights from a source file into a family's parameter names, checking every shape.

Output: the family config and an ordered ``{our name: float32 array}`` covering exactly the
parameters of the (unquantized) model definition.  A missing parameter, a shape that disagrees
with the config, or a source tensor nothing maps to is reported by name and shape.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import PipelineError
from ..sources.gguf_file import GGUFSource
from ..sources.hf_dir import HFSource
from .registry import Family

log = logging.getLogger(__name__)


def expected_shapes(family: Family, config: Any) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the float32 model definition for ``config``."""
    model = family.model_cls(config, "float32")
    return {name: tuple(int(x) for x in param.shape) for name, param in model.named_parameters()}


def import_weights(family: Family, source_format: str, path: Path, overrides: dict[str, Any],
                   progress: bool = True) -> tuple[Any, dict[str, np.ndarray]]:
    """Read ``path`` (``gguf`` or ``hf-safetensors``) into ``(config, {name: float32 array})``.

    Raises:
        PipelineError: unreadable source, wrong architecture, a missing tensor, or a tensor whose
            shape disagrees with the config (names the tensor, its shape and the expected one).
    """
    if source_format == "gguf":
        source = GGUFSource(path)
        if source.architecture != family.gguf_architecture:
            raise PipelineError(
                f"{path}: general.architecture is {source.architecture!r}, expected {family.gguf_architecture!r}"
            )
        config = family.config_from_gguf(source, **overrides)
        ours = family.gguf_name_map(config.num_hidden_layers).get

        def transform(_name, array):  # GGUF tensors are already in our convention
            return array
    else:
        source = HFSource(path)
        try:
            config = family.config_from_hf(source.config, **overrides)
        except (KeyError, ValueError) as err:
            raise PipelineError(f"{path / 'config.json'}: {err}") from None
        ours, transform = family.hf_name, family.hf_transform

    shapes = expected_shapes(family, config)
    mapping: dict[str, str] = {}
    skipped = []
    for src in source.tensor_names():
        dst = ours(src)
        if dst is None or dst not in shapes:
            skipped.append(src)
            continue
        if dst in mapping:
            raise PipelineError(f"{path}: tensors {mapping[dst]!r} and {src!r} both map to {dst!r}")
        mapping[dst] = src
        shape = source.tensor_info(src)[0]
        if tuple(shape) != shapes[dst]:
            raise PipelineError(
                f"{path}: tensor {src} has shape {list(shape)}, expected {list(shapes[dst])} for {dst} from the config"
            )
    missing = [name for name in shapes if name not in mapping]
    if missing:
        raise PipelineError(
            f"{path}: {len(missing)} parameter(s) missing, first {missing[0]} (shape {list(shapes[missing[0]])})"
        )
    if skipped:
        groups = Counter(".".join(name.split(".")[:2]) for name in skipped)
        log.warning("%s: skipped %d source tensor(s) the text model does not use: %s", path, len(skipped),
                    ", ".join(f"{group}.* ({count})" for group, count in sorted(groups.items())))
    weights = {}
    for dst in tqdm(shapes, desc="import", unit="tensor", disable=not progress):
        weights[dst] = transform(dst, source.load(mapping[dst]))
    return config, weights
