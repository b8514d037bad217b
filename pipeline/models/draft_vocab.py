"""A drafter's reduced vocabulary (FR-Spec, Zhao et al. 2025, arXiv 2502.14856): a drafter that
shares its base's tied embedding and head (:mod:`pipeline.models.gemma3_mtp`) drafts over the N
tokens the base generates most often, so a draft token costs N rows of the head instead of the
whole vocabulary.  Verification stays with the base's full head, so the output does not change;
a token outside the N is simply never drafted.

The token counts come from the base's own generated text (``tools/train_mtp_head.py`` counts them
while it makes the drafter's training data): a safetensors file with ``ids`` (int32, token ids by
count, most frequent first) and ``counts`` (int64, same order).  The build
(:mod:`pipeline.build`) takes the first N ids, sorts them, and gives the drafter the base's
imported tied-embedding rows of those ids (``draft_embed.weight``), with the base's source types and
group scales, so that the drafter's convert stage stores them exactly as the base stores its own
rows, plus the ids themselves (``draft_vocab``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from ..errors import PipelineError

DRAFT_EMBED = "draft_embed.weight"
DRAFT_VOCAB = "draft_vocab"
# The drafter parameters the build makes from the base (not read from the drafter's own weights).
BUILT_FROM_BASE = (DRAFT_EMBED, DRAFT_VOCAB)


def read_token_counts(path: Path, size: int, vocab_size: int, where: str) -> np.ndarray:
    """The ``size`` most frequent token ids of a counts file, sorted ascending: int32 ``(size,)``.

    ``where``: the config key that named ``path`` (for messages).

    Raises:
        PipelineError: unreadable file; no ``ids``/``counts`` tensors, or of other lengths; an id
            outside ``0..vocab_size-1`` or repeated; fewer than ``size`` ids.
    """
    try:
        with safe_open(str(path), framework="numpy") as handle:
            keys = set(handle.keys())
            if not {"ids", "counts"} <= keys:
                raise PipelineError(f"{where}: {path} has tensors {sorted(keys)}, expected 'ids' and 'counts'")
            ids, counts = handle.get_tensor("ids"), handle.get_tensor("counts")
    except PipelineError:
        raise
    except Exception as err:  # safetensors raises its own errors for a damaged file
        raise PipelineError(f"{where}: {path}: unreadable safetensors file ({err})") from None
    if ids.ndim != 1 or ids.shape != counts.shape or not np.issubdtype(ids.dtype, np.integer):
        raise PipelineError(f"{where}: {path}: ids {ids.dtype} {list(ids.shape)} and counts {list(counts.shape)}, "
                            f"expected two equal-length vectors of integers")
    if len(ids) < size:
        raise PipelineError(f"{where}: {path} counts {len(ids)} tokens, fewer than the {size} asked for")
    top = ids[:size].astype(np.int64)
    if top.min() < 0 or top.max() >= vocab_size:
        raise PipelineError(f"{where}: {path}: token id {int(top.max() if top.max() >= vocab_size else top.min())} "
                            f"outside the base's vocabulary (0..{vocab_size - 1})")
    if len(np.unique(top)) != size:
        raise PipelineError(f"{where}: {path}: a token id is listed twice among the first {size}")
    return np.sort(top).astype(np.int32)


def base_rows(ids: np.ndarray, weights: Path, groups: Path, embedding: str, source_types: dict[str, str]
              ) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, tuple[np.ndarray | None, np.ndarray | None]]]:
    """The drafter tensors made from the base's import stage for drafting vocabulary ``ids``.

    Args:
        ids: int32 ``(N,)`` token ids (:func:`read_token_counts`).
        weights, groups: the base's imported ``weights.safetensors`` and source group scales
            (``<name>.scale`` / ``<name>.min``, rows first) files.
        embedding: the base's tied-embedding weight name (:func:`tied_embedding_name`).
        source_types: the base's source types (weight name -> GGML type or dtype name).

    Returns:
        ``(weights, source types, group scales)`` to add to the drafter's import, in the import's
        own forms: float32 ``draft_embed.weight`` ``(N, hidden)`` and int32 ``draft_vocab``
        ``(N,)``; the embedding's source type; ``{draft_embed.weight: (scale rows, minimum rows)}``
        (None where the base has none; empty without source groups).
    """
    with safe_open(str(weights), framework="numpy") as handle:
        rows = np.ascontiguousarray(handle.get_tensor(embedding)[ids])
    tensors = {DRAFT_EMBED: rows.astype(np.float32), DRAFT_VOCAB: ids.astype(np.int32)}
    types = {DRAFT_EMBED: source_types[embedding]} if embedding in source_types else {}
    with safe_open(str(groups), framework="numpy") as handle:
        names = set(handle.keys())
        scale, minimum = (np.ascontiguousarray(handle.get_tensor(f"{embedding}.{part}")[ids])
                          if f"{embedding}.{part}" in names else None for part in ("scale", "min"))
    return tensors, types, ({DRAFT_EMBED: (scale, minimum)} if scale is not None else {})


def tied_embedding_name(model: Any) -> str:
    """The weight name of the tied embedding (:class:`pipeline.models.layers.TiedEmbedding`) of an
    unquantized ``tvm.relax.frontend.nn`` model.

    Raises:
        PipelineError: the model has no tied embedding (its drafters cannot share its head).
    """
    from .layers import TiedEmbedding

    def walk(prefix: str, module: Any):
        if isinstance(module, TiedEmbedding):
            yield f"{prefix}weight"
            return
        for attr, value in vars(module).items():
            if hasattr(value, "named_parameters") and not attr.startswith("_"):
                yield from walk(f"{prefix}{attr}.", value)

    found = next(walk("", model), None)
    if found is None:
        raise PipelineError(f"{type(model).__name__} has no tied embedding for a reduced drafting vocabulary")
    return found
