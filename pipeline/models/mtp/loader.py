"""Where an MTP drafter's weights come from: a safetensors file in DeepSeek-V3 or transformers
naming -> our parameter names (:class:`~pipeline.models.mtp.model.Gemma3MTP`), shapes checked.

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
from ..gemma3.loader import hf_transform
from ..gemma3.model import Gemma3Config
from ..name_map import NameMap
from .model import Gemma3MTP, MTPConfig

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
    """Parameter name -> shape of the float32 drafter for ``config``, in parameter order."""
    model = Gemma3MTP(config, "float32")
    return {name: tuple(int(x) for x in p.shape) for name, p in model.named_parameters()}


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
    except Exception as err:  # pylint: disable=broad-except
        raise PipelineError(f"{path}: unreadable safetensors file ({err})") from None
    with handle:
        renamed = _renamed(list(handle.keys()), name_map)
        index = _mtp_layer_index(list(renamed), path) if layer_index is None else layer_index
        shapes = expected_shapes(config)
        mapping: dict[str, str] = {}
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
            if dst in mapping:
                raise PipelineError(f"{path}: tensors {mapping[dst]} and {stored} both map to {dst}")
            if shape != shapes[dst]:
                raise PipelineError(
                    f"{path}: tensor {stored} has shape {list(shape)}, expected {list(shapes[dst])} for {dst}")
            mapping[dst] = stored
        missing = [name for name in shapes if name not in mapping]
        if missing:
            listed = ", ".join(f"{name} {list(shapes[name])}" for name in missing[:8])
            raise PipelineError(f"{path}: {len(missing)} MTP parameter(s) missing from layers.{index}: {listed}"
                                + (", ..." if len(missing) > 8 else ""))
        return {dst: hf_transform(dst, np.ascontiguousarray(handle.get_tensor(mapping[dst]), dtype=np.float32))
                for dst in shapes}


def import_mtp(path: str | Path, base: Gemma3Config, architecture: dict, name_map: NameMap | None = None,
               ) -> tuple[MTPConfig, dict[str, np.ndarray]]:
    """The drafter's config and weights for the build's import stage.

    Args:
        path: the weights (``.safetensors``).
        base: the base model's config (the MTP block takes its sizes).
        architecture: the ``mtp`` architecture file's content (``layer_type``, ``use_post_norm``,
            ``hidden_states_first``; keys starting with ``_`` are notes).
        name_map: as for :func:`load_mtp_weights`.

    Raises:
        PipelineError: an architecture value the config refuses, or bad weights
            (:func:`load_mtp_weights`).
    """
    fields = {key: value for key, value in architecture.items() if not key.startswith("_")}
    try:
        config = MTPConfig(base, **fields)
    except (TypeError, ValueError) as err:
        raise PipelineError(f"{path}: MTP architecture {fields}: {err}") from None
    return config, load_mtp_weights(path, config, name_map=name_map)
