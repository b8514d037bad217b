"""Where a ``gemma4_assistant`` drafter's parameters come from: Hugging Face tensor names -> ours
(other namings reach these through a name map, :mod:`pipeline.models.name_map`).

Our names are those of transformers' ``Gemma4AssistantForCausalLM`` (``pre_projection.weight``,
``model.layers.N.self_attn.q_proj.weight``, ...); the head ``lm_head.weight`` is the embedding
(tied).  The centroid head's ``masked_embedding.token_ordering`` (a permutation of the vocabulary,
the token ids of cluster ``c`` at ``c * vocab / num_centroids`` onwards) is checked and kept as
int32, the ids the drafter gathers embedding rows by.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import PipelineError

ORDERING = "masked_embedding.token_ordering"
# The name map a ``litertlm`` drafter is read with when the config names none: the tensor names
# of the tf_lite_mtp_drafter model in Google's Gemma 4 LiteRT-LM exports (evidence in its header).
# Shipped in the package (pyproject.toml's package-data), beside the community extraction's map;
# configs/name-maps/ links to both, for configs that name them by that path.
LITERTLM_NAME_MAP = Path(__file__).resolve().parent / "name_maps" / "litertlm-gemma4-mtp-drafter.yaml"


def hf_name(source_name: str) -> str | None:
    """Our name for a Hugging Face tensor name, or ``None`` for ``lm_head.weight`` (tied)."""
    if source_name == "lm_head.weight":
        return None
    return source_name


def hf_transform(our_name: str, array: np.ndarray) -> np.ndarray:
    """``token_ordering`` -> int32 (checked to be a permutation); others unchanged.

    Raises:
        PipelineError: ``token_ordering`` is not a permutation of the vocabulary.
    """
    if our_name != ORDERING:
        return array
    ordering = np.asarray(array).astype(np.int64).reshape(-1)
    if not np.array_equal(np.sort(ordering), np.arange(ordering.size)):
        raise PipelineError(f"{ORDERING}: not a permutation of 0..{ordering.size - 1}")
    return ordering.astype(np.int32)


def config_from_gguf(source, **_overrides):
    """Not supported: drafters import from Hugging Face directories or ``.litertlm`` files.

    Raises:
        PipelineError: always.
    """
    raise PipelineError(f"{source.path}: a gemma4_assistant drafter does not come as GGUF")


def gguf_name_map(_num_layers: int) -> dict[str, str]:
    """No GGUF names (see :func:`config_from_gguf`)."""
    return {}
