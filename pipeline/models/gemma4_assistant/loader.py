"""Where a ``gemma4_assistant`` drafter's parameters come from: Hugging Face tensor names -> ours
(other namings reach these through a name map, :mod:`pipeline.models.name_map`).

Our names are those of transformers' ``Gemma4AssistantForCausalLM`` (``pre_projection.weight``,
``model.layers.N.self_attn.q_proj.weight``, ...), except that the centroid head's
``masked_embedding.token_ordering`` (a permutation of the vocabulary, clusters laid out one after
another) is stored as its inverse ``masked_embedding.token_rank``: the place of each token in the
ordering, ``token_rank[token_ordering[i]] = i``, so that a token's cluster is
``token_rank[t] // (vocab / num_centroids)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import PipelineError

ORDERING, RANK = "masked_embedding.token_ordering", "masked_embedding.token_rank"
# The name map a ``litertlm`` drafter is read with when the config names none: the tensor names
# of the tf_lite_mtp_drafter model in Google's Gemma 4 LiteRT-LM exports (evidence in its header).
# Shipped in the package (pyproject.toml's package-data), beside the community extraction's map;
# configs/name-maps/ links to both, for configs that name them by that path.
LITERTLM_NAME_MAP = Path(__file__).resolve().parent / "name_maps" / "litertlm-gemma4-mtp-drafter.yaml"


def hf_name(source_name: str) -> str | None:
    """Our name for a Hugging Face tensor name, or ``None`` for ``lm_head.weight`` (tied)."""
    if source_name == "lm_head.weight":
        return None
    return RANK if source_name == ORDERING else source_name


def hf_transform(our_name: str, array: np.ndarray) -> np.ndarray:
    """``token_ordering`` -> its inverse permutation, int32 ``token_rank``; others unchanged.

    Raises:
        PipelineError: ``token_ordering`` is not a permutation of the vocabulary.
    """
    if our_name != RANK:
        return array
    ordering = np.asarray(array).astype(np.int64).reshape(-1)
    if not np.array_equal(np.sort(ordering), np.arange(ordering.size)):
        raise PipelineError(f"{ORDERING}: not a permutation of 0..{ordering.size - 1}")
    rank = np.empty(ordering.size, np.int32)
    rank[ordering] = np.arange(ordering.size, dtype=np.int32)
    return rank


def config_from_gguf(source, **_overrides):
    """Not supported: drafters import from Hugging Face directories or ``.litertlm`` files.

    Raises:
        PipelineError: always.
    """
    raise PipelineError(f"{source.path}: a gemma4_assistant drafter does not come as GGUF")


def gguf_name_map(_num_layers: int) -> dict[str, str]:
    """No GGUF names (see :func:`config_from_gguf`)."""
    return {}
