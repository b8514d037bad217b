"""One layer's part of a KV cache, as a family describes it (its registry row's ``kv_layers``);
the dry run (:mod:`pipeline.dry_run`) sums these into cache sizes."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class KVLayer:
    """One layer's part of the KV cache: its own KV heads and head dimension, the window it
    attends over (``None``: the whole context, tokens) and whether it stores K/V (a KV-shared
    layer reads its producer's)."""

    index: int
    kind: str
    kv_heads: int
    head_dim: int
    window: int | None
    stores: bool
