"""TIR kernels and the paged KV cache that the model definitions use.

- :mod:`.attention`: the windowed attention kernels (ragged prefill, paged prefill, paged decode)
  for TVM's paged KV cache, and :func:`~.attention.sliding_sm_scale`, the ``sm_scale`` sign that
  marks a sliding layer; built from :mod:`.attention_common` (index and softmax-state
  expressions), :mod:`.attention_cpu` and :mod:`.attention_gpu` (the two softmax loops);
- :mod:`.merge_state`: the GPU kernel merging two partial attention states;
- :mod:`.kv_cache`: the cache's construction with those kernels (``create_paged_kv_cache``);
- :data:`PAGE_SIZE`, defined here and not in :mod:`.kv_cache` so that the runtimes import it
  without TVM's compiler (``TVM_USE_RUNTIME_LIB=1`` deployments).

Which TVM target kinds get which kernels is the target presets' knowledge
(:mod:`pipeline.presets`); nothing here imports :mod:`pipeline.models`.
"""

PAGE_SIZE = 16  # tokens per KV-cache page: the kernels are specialized to it, the runtimes pass it
