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

import numpy as np
from safetensors import safe_open

from ...errors import PipelineError
from ..gemma3.loader import hf_transform
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


def load_mtp_weights(path: str | Path, config: MTPConfig, layer_index: int | None = None) -> dict[str, np.ndarray]:
    """Read the MTP weights of ``path`` into ``{our name: float32 array}`` in parameter order.

    Args:
        path: a ``.safetensors`` file.
        config: the drafter's config (shapes follow from it).
        layer_index: ``N`` of the source's ``layers.N.`` holding the MTP module; default the
            lowest ``N`` with an ``enorm.weight`` (the first prediction depth).  Tensors outside
            that layer (a base model's, further depths) are not read.

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
        names = list(handle.keys())
        index = _mtp_layer_index(names, path) if layer_index is None else layer_index
        shapes = expected_shapes(config)
        mapping: dict[str, str] = {}
        for src in names:
            match = LAYER_NAME.match(src)
            if not match or int(match["index"]) != index:
                continue
            dst = mtp_name(match["rest"])
            if dst is None:
                continue
            shape = tuple(handle.get_slice(src).get_shape())
            if dst not in shapes:
                raise PipelineError(f"{path}: tensor {src} (shape {list(shape)}) matches no MTP parameter")
            if dst in mapping:
                raise PipelineError(f"{path}: tensors {mapping[dst]} and {src} both map to {dst}")
            if shape != shapes[dst]:
                raise PipelineError(
                    f"{path}: tensor {src} has shape {list(shape)}, expected {list(shapes[dst])} for {dst}")
            mapping[dst] = src
        missing = [name for name in shapes if name not in mapping]
        if missing:
            listed = ", ".join(f"{name} {list(shapes[name])}" for name in missing[:8])
            raise PipelineError(f"{path}: {len(missing)} MTP parameter(s) missing from layers.{index}: {listed}"
                                + (", ..." if len(missing) > 8 else ""))
        return {dst: hf_transform(dst, np.ascontiguousarray(handle.get_tensor(mapping[dst]), dtype=np.float32))
                for dst in shapes}
