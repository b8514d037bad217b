"""A DeepSeek-V3-style multi-token-prediction (MTP) drafter over a Gemma 3 base, as a
``tvm.relax.frontend.nn`` module with a one-layer paged KV cache of its own.

The module (DeepSeek-V3, arXiv 2412.19437, sec. 2.2; transformers 5.24
``modeling_layers.MtpLayer``): for the pair of a base hidden state ``h_i`` and the embedding of
the token after it, ``e_{i+1} = emb(t_{i+1})``,

    h'_i = eh_proj(concat(enorm(e_{i+1}), hnorm(h_i)))
    o_i  = post_norm(block(h'_i))                            (``post_norm`` optional)
    logits of t_{i+2} = head(o_i)

where ``block`` is one Gemma 3 decoder layer (:class:`~pipeline.models.gemma3.model.Gemma3DecoderLayer`,
sliding or full attention as ``layer_type`` says, attending over the drafter's own cache).
The concatenation order is transformers' default (``MtpLayer``); the paper writes
``[RMSNorm(h); RMSNorm(Emb(t))]``, which ``hidden_states_first`` selects.

**Embedding and head are the base's, taken from the base library.**  This library holds only
the MTP weights (``enorm``, ``hnorm``, ``eh_proj``, ``mtp_block.*``, ``post_norm``): its inputs
are embeddings made by the base's ``embed`` (scaled by ``sqrt(hidden)``) and the base's final,
normed hidden states (``prefill_to_last_hidden_states`` / ``batch_verify_to_last_hidden_states``,
what transformers passes as ``hidden_states[-1]``), and its outputs ``o_i`` go to the base's
``get_logits`` (tied head, soft-capping if configured).  No second copy of the 262144-row table.
The base's final norm is not applied to ``o`` (transformers' ``MtpModel`` puts ``post_norm`` or
nothing before the shared head); a drafter trained to reuse the base's final norm is this module
with the base's ``model.norm.weight`` loaded as ``post_norm``.

Chaining: the output ``o_i`` is also the hidden state of the next draft step (transformers'
``MtpModel.forward`` feeds each layer's output to the next); one module is reused for every
step of a chain.

Exported functions (names of MLC LLM's EAGLE drafter, ``python/mlc_llm/model/eagle``):
``fuse_embed_hidden_states``, ``prefill_to_last_hidden_states``, ``decode_to_last_hidden_states``,
``batch_prefill_to_last_hidden_states``, ``batch_decode_to_last_hidden_states``,
``create_paged_kv_cache``, plus ``_metadata`` from the build.

**Reduced drafting vocabulary** (``draft_vocab_size`` N > 0; FR-Spec, arXiv 2502.14856): the
library then also holds ``draft_embed`` (the base's tied-embedding rows of N tokens, stored as the
base stores them, :mod:`pipeline.models.draft_vocab`) and ``draft_vocab`` (their token ids), and
exports ``draft_token`` (``o`` -> the argmax token over the N rows), ``draft_step`` (``o`` and
the cache -> that token and the next chain output, one block step) and ``draft_chain_G`` for
G = 2..:data:`MAX_CHAIN` (the whole chain of G drafts in one call: G - 1 ``draft_step`` calls, each
bracketed by the cache's ``kv_state_begin_forward`` / ``kv_state_end_forward``, then
``draft_token``; ``(G,)`` int32 token ids and the cache come back, nothing else leaves the device).  A token
outside the N is never drafted; verification by the base is unchanged, so the output is too.
The row of a drafted token is the base's row bit for bit, so ``draft_step``'s embedding equals the
base's ``embed``.

**How a runtime drives it** (greedy chain; :class:`pipeline.runtime.drafters.mtp_head.MTPDraftChain`
does exactly this).  State: the drafter's KV cache, whose entry ``j`` holds the pair
``(h_j, t_{j+1})``; the output ``o`` of its last exact entry; the number of speculative entries
added by the last chain.

1. Base prefill of ``t_0..t_{n-1}`` with ``prefill_to_last_hidden_states`` gives ``h_0..h_{n-1}``;
   ``get_logits(h_{n-1})`` gives ``t_n``.
2. Catch-up: ``fuse_embed_hidden_states(embed(t_1..t_n), h_0..h_{n-1})`` then
   ``prefill_to_last_hidden_states`` appends ``n`` exact entries; keep the last output ``o``.
3. Draft ``G`` tokens: ``d_1 = argmax get_logits(o)``; for ``k = 2..G``:
   ``o = decode_to_last_hidden_states(fuse_embed_hidden_states(embed(d_{k-1}), o))``,
   ``d_k = argmax get_logits(o)``.  This appends ``G - 1`` speculative entries.
4. Base verify of ``[t_n, d_1..d_G]`` with ``batch_verify_to_last_hidden_states`` (+ ``get_logits``);
   ``a`` drafts accepted, then the base's next token ``e``.
5. Pop the ``G - 1`` speculative entries (``vm.builtin.kv_state_popn``), then catch up with the
   ``a + 1`` exact pairs ``(h_n, d_1), .., (h_{n+a-1}, d_a), (h_{n+a}, e)`` (verify rows ``0..a``);
   go to 3.

Every cache call is bracketed by ``kv_state_begin_forward`` / ``kv_state_end_forward`` as for the
base.  The drafter's cache positions run one behind transformers' ``position_ids`` (entry ``j`` is
RoPE position ``j``, transformers uses ``j + 1`` with ``MtpCache``'s offset); attention depends
only on position differences, so the two agree.
"""

from __future__ import annotations

import math

from tvm import relax, topi
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ...kernels.kv_cache import WindowedKVCacheMixin
from ..base import cache_spec, packed_method
from ..gemma3.model import Gemma3DecoderLayer
from ..layers import RMSNorm, TiedEmbedding
from .config import MTPConfig

# Longest draft chain exported as one call (``draft_chain_<G>``); longer chains are drafted step by step.
MAX_CHAIN = 8


def add_draft_chains(mod, lengths) -> object:
    """Add ``draft_chain_<G>`` for each G in ``lengths`` (>= 2) to ``mod``, an exported module with
    ``draft_step`` and ``draft_token`` (see the module docstring): an impure Relax function
    ``(hidden_states (1, 1, hidden), paged_kv_cache, packed params) -> ((G,) int32 tokens, cache)``
    that brackets each ``draft_step`` by the cache's begin/end-forward builtins (with sequence 0,
    one token), as a runtime does between calls.  Returns the new module."""
    step = mod["draft_step"]
    hidden_type, cache_type, params_type = (param.ty for param in step.params)
    width = hidden_type.shape[-1]
    builder = relax.BlockBuilder(mod)

    def builtin(name: str, *args):
        return builder.emit(relax.Call(relax.ExternFunc(name), list(args), ty_args=[relax.ObjectType()]))

    for length in lengths:
        hidden = relax.Var("hidden_states", hidden_type)
        cache = relax.Var("paged_kv_cache", cache_type)
        params = relax.Var("packed_params", params_type)
        with builder.function(f"draft_chain_{length}", [hidden, cache, params], pure=False):
            state, kv, tokens = hidden, cache, []
            for _ in range(length - 1):
                builtin("vm.builtin.kv_state_begin_forward", kv, relax.ShapeExpr([0]), relax.ShapeExpr([1]))
                out = builder.emit(relax.Call(mod.get_global_var("draft_step"), [state, kv, params]))
                tokens.append(builder.emit(relax.TupleGetItem(out, 0)))
                state = builder.emit(relax.TupleGetItem(out, 1))
                kv = builder.emit(relax.TupleGetItem(out, 2))
                builtin("vm.builtin.kv_state_end_forward", kv)
            last = relax.Call(mod.get_global_var("draft_token"),
                              [builder.emit(relax.op.reshape(state, [1, width])), params])
            tokens.append(builder.emit(last))
            builder.emit_func_output(relax.Tuple([builder.emit(relax.op.concat(tokens, axis=0)), kv]))
    return builder.get()


class Gemma3MTP(WindowedKVCacheMixin, nn.Module):
    """The MTP drafter module with MLC-style entry points (see the module docstring).

    Parameters (transformers' ``MtpLayer`` names): ``enorm.weight``, ``hnorm.weight`` ``(hidden,)``;
    ``eh_proj.weight`` ``(hidden, 2 * hidden)``; ``mtp_block.*`` (a Gemma 3 decoder layer);
    ``post_norm.weight`` ``(hidden,)`` when ``use_post_norm``.  RMSNorm weights hold the full
    multiplier ``1 + w`` (:mod:`pipeline.models.gemma3_mtp.loader` adds the 1).  With a reduced
    drafting vocabulary of N tokens: ``draft_embed.weight`` ``(N, hidden)`` and ``draft_vocab``
    ``(N,)`` int32, made by the build from the base (:mod:`pipeline.models.draft_vocab`).
    """

    def __init__(self, config: MTPConfig, dtype: str = "float32"):
        self.config = config
        self.dtype = dtype
        base = config.base
        h, eps = base.hidden_size, base.rms_norm_eps
        self.hidden_size = h
        self.enorm = RMSNorm(h, eps, dtype)
        self.hnorm = RMSNorm(h, eps, dtype)
        self.eh_proj = nn.Linear(2 * h, h, bias=False, dtype=dtype)
        self.mtp_block = Gemma3DecoderLayer(config.block_config(), 0, dtype)
        self.post_norm = RMSNorm(h, eps, dtype) if config.use_post_norm else None
        n = config.draft_vocab_size
        self.draft_embed = TiedEmbedding(n, h, dtype) if n else None
        self.draft_vocab = nn.Parameter((n,), "int32") if n else None

    def _block(self, hidden_states: Tensor, cache: PagedKVCache) -> Tensor:
        """``(b, s, hidden)`` fused inputs -> ``(b, s, hidden)`` outputs ``o`` (model dtype)."""
        x = self.mtp_block(hidden_states.astype("float32"), cache)  # float32 residual stream, as the base
        return self.post_norm(x) if self.post_norm is not None else x.astype(self.dtype)

    # --- MLC entry points -----------------------------------------------------------------
    def fuse_embed_hidden_states(self, input_embed: Tensor, hidden_states: Tensor) -> Tensor:
        """``eh_proj(concat(enorm(e), hnorm(h)))`` (DeepSeek-V3 sec. 2.2; halves swapped when
        ``hidden_states_first``).

        Args:
            input_embed: ``(seq_len, hidden)`` base embeddings of tokens ``t_{i+1}`` (model dtype).
            hidden_states: ``(seq_len, hidden)`` base final hidden states ``h_i``, or the drafter's
                previous output when chaining (model dtype).

        Returns:
            ``(seq_len, hidden)`` block inputs, model dtype.
        """
        parts = [self.enorm(input_embed), self.hnorm(hidden_states)]
        if self.config.hidden_states_first:
            parts.reverse()
        return self.eh_proj(op.concat(parts, dim=-1))

    def prefill_to_last_hidden_states(self, hidden_states: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, s, hidden)`` fused inputs -> ``(1, s, hidden)`` outputs ``o``, and the cache."""
        return self._block(hidden_states, paged_kv_cache), paged_kv_cache

    def decode_to_last_hidden_states(self, hidden_states: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, 1, hidden)`` fused input -> ``(1, 1, hidden)`` output ``o``, and the cache."""
        return self._block(hidden_states, paged_kv_cache), paged_kv_cache

    def batch_prefill_to_last_hidden_states(self, hidden_states: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, s, hidden)`` packed sequences -> ``(1, s, hidden)`` outputs, and the cache."""
        return self._block(hidden_states, paged_kv_cache), paged_kv_cache

    def batch_decode_to_last_hidden_states(self, hidden_states: Tensor, paged_kv_cache: PagedKVCache):
        """``(b, 1, hidden)`` -> ``(b, 1, hidden)`` outputs, and the cache."""
        return self._block(hidden_states, paged_kv_cache), paged_kv_cache

    def draft_token(self, hidden_states: Tensor) -> Tensor:
        """``(1, hidden)`` chain output ``o`` -> ``(1,)`` int32: the token of the largest logit
        over the drafting vocabulary (ties: the lowest row; soft-capping, monotonic, is skipped)."""
        return op.take(self.draft_vocab, self._draft_row(hidden_states), axis=0)

    def draft_step(self, hidden_states: Tensor, paged_kv_cache: PagedKVCache):
        """``(1, 1, hidden)`` chain output ``o`` -> the token :meth:`draft_token` gives ``(1,)``
        int32, the next output ``(1, 1, hidden)`` (the block over ``fuse(embed(token), o)``,
        appending one entry to the cache), and the cache."""
        h = self.hidden_size
        o = hidden_states.reshape(1, h)
        row = self._draft_row(o)
        embed = self._draft_rows()(row) * Tensor.from_const(math.sqrt(h)).astype(self.dtype)
        fused = self.fuse_embed_hidden_states(embed, o)
        out = self._block(fused.reshape(1, 1, h), paged_kv_cache)
        return op.take(self.draft_vocab, row, axis=0), out, paged_kv_cache

    def _draft_rows(self) -> TiedEmbedding:
        if self.draft_embed is None:
            raise ValueError("this drafter has no reduced drafting vocabulary (draft_vocab_size 0)")
        return self.draft_embed

    def _draft_row(self, o: Tensor) -> Tensor:
        """``(1, hidden)`` -> ``(1,)`` int32 row of the largest drafting logit."""
        logits = self._draft_rows().lm_head_forward(o)
        return op.tensor_expr_op(lambda x: topi.cast(topi.argmax(x, axis=1), "int32"), "draft_argmax", [logits])

    def extend_module(self, mod):
        """The exported module plus what is built from its functions: the one-call draft chains
        (:func:`add_draft_chains`) when this drafter has a reduced drafting vocabulary."""
        return add_draft_chains(mod, range(2, MAX_CHAIN + 1)) if self.draft_embed is not None else mod

    def kv_cache_shape(self) -> tuple[int, int, int, int, int]:
        """``(layers, query heads, KV heads, head_dim, sliding_window)`` of the drafter's one-layer
        paged KV cache (its block's attention shape)."""
        c = self.config.block_config()
        return 1, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.sliding_window

    def get_default_spec(self) -> nn.spec.ModuleSpec:
        """The export spec: symbolic ``seq_len``/``batch_size``, params packed as in MLC."""
        h, dtype = self.hidden_size, self.dtype

        def forward_spec(shape):
            return packed_method(hidden_states=nn.spec.Tensor(shape, dtype), paged_kv_cache=cache_spec())

        spec = {
            "fuse_embed_hidden_states": packed_method(input_embed=nn.spec.Tensor(["seq_len", h], dtype),
                                                      hidden_states=nn.spec.Tensor(["seq_len", h], dtype)),
            "prefill_to_last_hidden_states": forward_spec([1, "seq_len", h]),
            "decode_to_last_hidden_states": forward_spec([1, 1, h]),
            "batch_prefill_to_last_hidden_states": forward_spec([1, "seq_len", h]),
            "batch_decode_to_last_hidden_states": forward_spec(["batch_size", 1, h]),
            "create_paged_kv_cache": WindowedKVCacheMixin.create_spec(),
        }
        if self.draft_embed is not None:
            spec["draft_token"] = packed_method(hidden_states=nn.spec.Tensor([1, h], dtype))
            spec["draft_step"] = forward_spec([1, 1, h])
        return nn.spec.ModuleSpec.from_raw(spec, self)
