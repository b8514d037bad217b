"""Where an MTP drafter's weights come from: a safetensors file in DeepSeek-V3 or transformers
naming -> our parameter names (:class:`~pipeline.models.gemma3_mtp.model.Gemma3MTP`), shapes checked with
:func:`pipeline.models.importer.match_tensors`.

Source names (everything after the first ``layers.N.``, any prefix before it):

- DeepSeek-V3 release (``model.layers.61.*``, the MTP module after the 61 base layers):
  ``enorm``, ``hnorm``, ``eh_proj``, ``shared_head.norm`` (our ``post_norm``), the decoder block's
  tensors directly under the layer (``self_attn.*``, ``mlp.*``, ``*_layernorm``), and copies of the
  base's ``embed_tokens`` / ``shared_head.head``, which are skipped (the base's are used).
- transformers' ``MtpModel`` state dict (``layers.0.*``): ``enorm``, ``hnorm``, ``eh_proj``,
  ``post_norm``, ``mtp_block.*``; ``mtp_block.enorm`` etc. are accepted too (transformers'
  ``conversion_mapping.py``, ``MtpModel`` renamings).

RMSNorm weights are stored as ``1 + w`` (transformers' ``Gemma3RMSNorm`` multiplies by ``1 + w``),
the Gemma 3 loader's convention (:func:`pipeline.models.gemma3.loader.hf_transform`).
"""

from __future__ import annotations

import re
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors import safe_open

from ...errors import PipelineError
from .. import importer
from ..draft_vocab import BUILT_FROM_BASE
from ..gemma3.loader import hf_transform
from ..name_map import NameMap
from ..registry import get_family
from .config import MTPConfig

FAMILY = "gemma3_mtp"

LAYER_NAME = re.compile(r"^(?P<prefix>.*?)layers\.(?P<index>\d+)\.(?P<rest>.+)$")
# Names under the MTP layer, after an optional ``mtp_block.``, that are not the block's.
OWN_NAMES = {
    "enorm.weight": "enorm.weight",
    "hnorm.weight": "hnorm.weight",
    "eh_proj.weight": "eh_proj.weight",
    "post_norm.weight": "post_norm.weight",
    "shared_head.norm.weight": "post_norm.weight",
}
SHARED_WITH_BASE = ("embed_tokens.weight", "shared_head.head.weight")
# Stored dtypes read (widened to float32); safetensors' numpy reader finds bfloat16 by name, which
# importing ml_dtypes registers with numpy.
READ_DTYPES = (np.float32, np.float16, ml_dtypes.bfloat16)


def mtp_name(rest: str) -> str | None:
    """Our parameter name for a source name with its ``...layers.N.`` prefix removed, or ``None``
    for a copy of the base's embedding or head."""
    inner = rest.removeprefix("mtp_block.")
    if inner in SHARED_WITH_BASE:
        return None
    return OWN_NAMES.get(inner, f"mtp_block.{inner}")


def expected_shapes(config: MTPConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the float32 drafter for ``config``, in parameter order, less
    those the build makes from the base (a reduced drafting vocabulary's rows and ids)."""
    shapes = importer.expected_shapes(get_family(FAMILY), config)
    return {name: shape for name, shape in shapes.items() if name not in BUILT_FROM_BASE}


def _mtp_layer_index(names: list[str], path: Path) -> int:
    indices = sorted({int(m["index"]) for m in map(LAYER_NAME.match, names)
                      if m and m["rest"].removeprefix("mtp_block.") == "enorm.weight"})
    if not indices:
        raise PipelineError(f"{path}: no MTP layer (no tensor named ...layers.N.enorm.weight)")
    return indices[0]


def _renamed(names: list[str], name_map: NameMap | None) -> dict[str, str]:
    """``{transformers-style name: stored name}``: the stored names themselves without a map;
    with one, the names its entries give (``unused:`` tensors and tensors it does not list left out)."""
    if name_map is None:
        return {name: name for name in names}
    renamed = {}
    for name in names:
        for target in name_map.lookup(name) or ():
            renamed[target] = name
    return renamed


def load_mtp_weights(path: str | Path, config: MTPConfig, layer_index: int | None = None,
                     name_map: NameMap | None = None) -> dict[str, np.ndarray]:
    """Read the MTP weights of ``path`` into ``{our name: float32 array}`` in parameter order.

    Args:
        path: a ``.safetensors`` file.
        config: the drafter's config (shapes follow from it).
        layer_index: ``N`` of the source's ``layers.N.`` holding the MTP module; default the
            lowest ``N`` with an ``enorm.weight`` (the first prediction depth).  Tensors outside
            that layer (a base model's, further depths) are not read.
        name_map: for a file in other names: renames its tensors to DeepSeek-V3 or transformers
            names first (:class:`~pipeline.models.name_map.NameMap`; ``constant:`` entries are not
            read here).

    Returns:
        Float32 arrays (bf16/f16 widened), RMSNorm weights as ``1 + w``.

    Raises:
        PipelineError: unreadable file; no MTP layer; a tensor of the layer that maps to no
            parameter (named with its shape); two tensors for one parameter; a shape that
            disagrees with the config; a missing parameter (named with its expected shape).
    """
    path = Path(path)
    try:
        handle = safe_open(str(path), framework="numpy")
    except Exception as err:
        raise PipelineError(f"{path}: unreadable safetensors file ({err})") from None
    with handle:
        renamed = _renamed(list(handle.keys()), name_map)
        index = _mtp_layer_index(list(renamed), path) if layer_index is None else layer_index
        shapes = expected_shapes(config)

        def found():  # (stored name, shape, our name) of each tensor of the MTP layer
            for src, stored in renamed.items():
                match = LAYER_NAME.match(src)
                if not match or int(match["index"]) != index:
                    continue
                dst = mtp_name(match["rest"])
                if dst is None:
                    continue
                shape = tuple(handle.get_slice(stored).get_shape())
                if dst not in shapes:
                    raise PipelineError(f"{path}: tensor {stored} (shape {list(shape)}) matches no MTP parameter")
                yield stored, shape, dst

        def missing_message(missing: list[str]) -> str:
            listed = ", ".join(f"{name} {list(shapes[name])}" for name in missing[:8])
            return (f"{len(missing)} MTP parameter(s) missing from layers.{index}: {listed}"
                    + (", ..." if len(missing) > 8 else ""))

        mapping = importer.match_tensors(path, found(), shapes, missing_message=missing_message)
        return {dst: hf_transform(dst, np.ascontiguousarray(handle.get_tensor(mapping[dst]), dtype=np.float32))
                for dst in shapes}


def import_mtp(family, source_format: str, path: str | Path, overrides: dict, progress: bool = True, *,
               architecture: tuple[dict, Path], name_map: NameMap | None = None,
               source_info: dict | None = None) -> tuple[MTPConfig, dict[str, np.ndarray]]:
    """The drafter's config and weights for the build's import stage (the registry row's loader
    for format ``safetensors``; the signature of :func:`pipeline.models.importer.import_weights`).

    Args:
        family: the ``gemma3_mtp`` registry row.
        source_format: ``safetensors``.
        path: the weights (``.safetensors``).
        overrides: ``{"base": the base model's config}`` (the MTP block takes its sizes).
        progress: unused (one layer's tensors are read).
        architecture: the ``mtp`` architecture file's content (``layer_type``, ``use_post_norm``,
            ``hidden_states_first``; keys starting with ``_`` are notes) and its path.
        name_map: as for :func:`load_mtp_weights`.
        source_info: not filled (a float source: every weight takes its scheme's default format).

    Raises:
        PipelineError: an architecture value the config refuses, or bad weights
            (:func:`load_mtp_weights`).
    """
    del progress, source_format, source_info
    content = architecture[0]
    fields = {key: value for key, value in content.items() if not key.startswith("_")}
    try:
        config = family.config_from_hf(content, **overrides)
    except (TypeError, ValueError) as err:
        raise PipelineError(f"{path}: MTP architecture {fields}: {err}") from None
    return config, load_mtp_weights(path, config, name_map=name_map)
