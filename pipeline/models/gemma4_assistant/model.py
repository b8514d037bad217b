"""Gemma 4 MTP drafter (``gemma4_assistant``) as a ``tvm.relax.frontend.nn`` module.

Follows transformers 5.24 ``models/gemma4_assistant/modeling_gemma4_assistant.py``
(``Gemma4AssistantForCausalLM``) and the way ``generation/candidate_generator.py``
(``SinglePositionMultiTokenCandidateGenerator``) drives it.  One draft step:

1. ``x = pre_projection(concat(e, h))`` where ``e`` is the **base** model's scaled embedding of
   the last token and ``h`` the base's final-normed hidden state that predicted it (or, after the
   first step, the previous step's projected output);
2. Gemma 4 decoder layers (:class:`pipeline.models.gemma4.model.Gemma4DecoderLayer` maths) whose
   attention projects queries only and attends to the base model's K/V of its last sliding and
   last full non-shared layer (``Gemma4ForCausalLM.prefill_to_mtp_context``); the query sits at the
   position of the last token, which stays constant through a draft chain; full layers see the
   whole context, sliding layers its last ``sliding_window + 1`` entries (transformers'
   bidirectional sliding mask, flipped to look back);
3. final norm; logits from the head tied to the drafter's own embedding, or (``use_ordered_embeddings``)
   the centroid head: ``centroids`` scores ``num_centroids`` clusters, the ``centroid_intermediate_top_k``
   best are kept, and only their tokens' logits are computed, from those tokens' rows of the tied
   embedding (gathered by the checkpoint's ``token_ordering``, whose ``c``-th run of
   ``per_cluster = vocab / num_centroids`` ids is cluster ``c``);
4. ``post_projection`` of the normed hidden state is the ``h`` of the next step.

The drafter holds no KV cache of its own: its state is the base model's context K/V, so rolling
back the base model rolls back the drafter.

``draft_step`` returns the drafted token (the argmax over the kept logits, the lowest token id on
ties, computed on the device), the kept ids and their logits, and the projected state; no
vocabulary-sized tensor is made with the centroid head.  Its head reads ``top_k * per_cluster``
embedding rows (4,096 of 262,144 for E2B/E4B: 32 of 2,048 clusters of 128) instead of ``vocab``,
quantized or not (:class:`~pipeline.quantization.group_quant.GroupQuantEmbedding` dequantizes only
the gathered rows), plus the ``num_centroids x hidden`` centroid scores.  transformers scatters the
kept logits into a ``(vocab,)`` row filled with ``min(kept) - 1``; numpy's argmax over that row
is the token returned here.  Without the centroid head every token's logit is computed and the
kept ids are ``0..vocab-1``.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ..base import packed_method
from ..gemma4.model import Gemma4LayerBody
from ..layers import RMSNorm, TiedEmbedding, apply_rope
from .config import Gemma4AssistantConfig


def context_attention(q: Tensor, k: Tensor, v: Tensor, window: int | None) -> Tensor:
    """One query position against a given context, scale 1.0 (Gemma 4), grouped heads.

    ``q``: ``(h_q, d)``; ``k``, ``v``: ``(n, h_kv, d)``; ``window``: attend to the last
    ``window`` entries only, ``None`` for all.  Returns float32 ``(h_q, d)``.
    """
    def scores(qt: te.Tensor, kt: te.Tensor):
        h_q, d = qt.shape
        n, h_kv, _ = kt.shape
        group = h_q // h_kv
        r = te.reduce_axis((0, d), name="r")
        raw = te.compute((h_q, n), lambda h, j: te.sum(
            qt[h, r].astype("float32") * kt[j, h // group, r].astype("float32"), axis=r), name="scores")
        if window is None:
            return raw
        return te.compute((h_q, n), lambda h, j: tirx.if_then_else(
            j + window < n, tirx.min_value("float32"), raw[h, j]), name="windowed_scores")

    def weighted(pt: te.Tensor, vt: te.Tensor):
        h_q, n = pt.shape
        _, h_kv, d = vt.shape
        group = h_q // h_kv
        j = te.reduce_axis((0, n), name="j")
        return te.compute((h_q, d), lambda h, c: te.sum(pt[h, j] * vt[j, h // group, c].astype("float32"), axis=j),
                          name="weighted_values")

    probs = op.softmax(op.tensor_expr_op(scores, "context_scores", [q, k]), axis=-1)
    return op.tensor_expr_op(weighted, "context_values", [probs, v])


def position_of_next(k_full: Tensor) -> Tensor:
    """``(n, h, d)`` context -> int32 ``(1,)`` holding ``n``, the position of the token after it."""
    def compute(t: te.Tensor):
        return te.compute((1,), lambda _: t.shape[0].astype("int32"), name="position_of_next")

    return op.tensor_expr_op(compute, "position_of_next", [k_full])


class AssistantAttention(nn.Module):
    """Query-only attention of a drafter layer over the base model's context K/V."""

    def __init__(self, config: Gemma4AssistantConfig, layer_id: int, dtype: str):
        self.sliding = config.is_sliding(layer_id)
        self.h_q, self.d = config.num_attention_heads, config.layer_head_dim(layer_id)
        self.window = config.sliding_window + 1 if self.sliding else None
        self.rope: tuple[float, float, int | None]  # theta, scaling factor, rotary pairs (None: all)
        if self.sliding:
            self.rope = (config.rope_theta_sliding, 1.0, None)
        else:
            self.rope = (config.rope_theta_full, config.rope_factor_full, config.rotary_pairs_full)
        h = config.hidden_size
        self.q_proj = nn.Linear(h, self.h_q * self.d, bias=False, dtype=dtype)
        self.o_proj = nn.Linear(self.h_q * self.d, h, bias=False, dtype=dtype)
        self.q_norm = RMSNorm(self.d, config.rms_norm_eps, dtype)

    def forward(self, x: Tensor, position: Tensor, context: dict[bool, tuple[Tensor, Tensor]]) -> Tensor:
        """``(1, 1, hidden)`` -> ``(1, 1, hidden)``; ``context[sliding]`` = ``(k, v)``."""
        q = apply_rope(self.q_norm(self.q_proj(x).reshape(1, self.h_q, self.d)), position, *self.rope)
        k, v = context[self.sliding]
        out = context_attention(q.reshape(self.h_q, self.d), k, v, self.window)
        return self.o_proj(out.astype(x.dtype).reshape(1, 1, self.h_q * self.d))


class AssistantLayer(Gemma4LayerBody):
    """A Gemma 4 decoder layer whose attention is :class:`AssistantAttention`."""

    attention = AssistantAttention

    def forward(self, x: Tensor, position: Tensor,
                context: dict[bool, tuple[Tensor, Tensor]]) -> Tensor:
        """float32 ``(1, 1, hidden)`` -> the same, attending to the base model's ``context``."""
        return self.after_attention(x, self.self_attn(self.input_layernorm(x), position, context), None)


def drafted_token(logits: Tensor, ids: Tensor) -> Tensor:
    """Float32 ``(n,)`` logits of the int32 ``(n,)`` token ``ids`` -> int32 ``(1,)``: the id of the
    largest logit, the lowest such id on ties (numpy's ``argmax`` over the vocabulary's logits in
    token order, whatever order ``ids`` come in)."""
    def compute(lt: te.Tensor, it: te.Tensor):
        n = lt.shape[0]
        r = te.reduce_axis((0, n), name="r")
        best = te.compute((1,), lambda _: te.max(lt[r], axis=r), name="kept_max")
        s = te.reduce_axis((0, n), name="s")
        return te.compute((1,), lambda _: te.min(
            tirx.Select(lt[s] == best[0], it[s], tirx.max_value("int32")), axis=s), name="drafted_token")

    return op.tensor_expr_op(compute, "drafted_token", [logits, ids])


class MaskedEmbedder(nn.Module):
    """The centroid head (``Gemma4AssistantMaskedEmbedder``, see the module docstring).

    Parameters: ``centroids.weight`` ``(num_centroids, hidden)``; ``token_ordering`` int32
    ``(vocab,)``, the checkpoint's permutation of the vocabulary whose ``c``-th run of
    ``vocab / num_centroids`` entries holds cluster ``c``'s token ids.
    """

    def __init__(self, config: Gemma4AssistantConfig, dtype: str):
        self.top_k = config.centroid_intermediate_top_k
        self.num_centroids = config.num_centroids
        self.centroids = nn.Linear(config.hidden_size, config.num_centroids, bias=False, dtype=dtype)
        self.per_cluster = config.vocab_size // config.num_centroids
        self.token_ordering = nn.Parameter((config.vocab_size,), "int32")

    def forward(self, hidden: Tensor) -> Tensor:
        """``(1, 1, hidden)`` -> int32 ``(top_k * per_cluster,)``: the token ids of the ``top_k``
        clusters of the largest centroid logits, cluster by cluster (best first), each in the
        checkpoint's order."""
        _, chosen = op.topk(self.centroids(hidden).astype("float32"), self.top_k, axis=-1,
                            ret_type="both", largest=True, dtype="int32")
        clusters = op.reshape(self.token_ordering, (self.num_centroids, self.per_cluster))
        return op.reshape(op.take(clusters, op.reshape(chosen, (self.top_k,)), axis=0),
                          (self.top_k * self.per_cluster,))


def assistant_head(hidden: Tensor, embedding: TiedEmbedding, masked: MaskedEmbedder | None):
    """The drafter's head (module docstring, step 3) on the final-normed ``(1, 1, hidden)`` state.

    ``embedding``: the tied embedding (:class:`~pipeline.models.layers.TiedEmbedding` or its
    quantized twin); ``masked``: the centroid head, or ``None`` for the dense head.  Returns int32
    ``(1,)`` the drafted token (:func:`drafted_token`), int32 ``(kept,)`` the kept ids and float32
    ``(kept,)`` their logits (``kept``: ``top_k * per_cluster`` or ``vocab``).
    """
    if masked is not None:
        ids = masked(hidden)
        rows = embedding(ids)  # (kept, hidden): only the kept tokens' rows are read
        logits = op.matmul(op.reshape(hidden, (1, embedding.hidden_size)), op.permute_dims(rows))
    else:
        ids = op.arange(0, embedding.vocab_size, dtype="int32")
        logits = embedding.lm_head_forward(hidden)
    logits = op.reshape(logits.astype("float32"), (ids.shape[0],))
    return drafted_token(logits, ids), ids, logits


class Gemma4AssistantModel(nn.Module):
    """The drafter's text model: embedding (head only), layers, final norm."""

    def __init__(self, config: Gemma4AssistantConfig, dtype: str):
        self.embed_tokens = TiedEmbedding(config.vocab_size, config.hidden_size, dtype)
        self.layers = nn.ModuleList([AssistantLayer(config, i, dtype) for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)


class Gemma4AssistantForCausalLM(nn.Module):
    """The drafter with one entry point, ``draft_step`` (see the module docstring)."""

    def __init__(self, config: Gemma4AssistantConfig, dtype: str = "float32"):
        self.config = config
        self.dtype = dtype
        self.model = Gemma4AssistantModel(config, dtype)
        hb, h = config.backbone_hidden_size, config.hidden_size
        self.pre_projection = nn.Linear(2 * hb, h, bias=False, dtype=dtype)
        self.post_projection = nn.Linear(h, hb, bias=False, dtype=dtype)
        if config.use_ordered_embeddings:
            self.masked_embedding = MaskedEmbedder(config, dtype)

    def draft_step(self, input_embed: Tensor, hidden_states: Tensor,
                   k_sliding: Tensor, v_sliding: Tensor, k_full: Tensor, v_full: Tensor):
        """One draft step.

        Args:
            input_embed: ``(1, 1, backbone_hidden)`` the base's scaled embedding of the last token.
            hidden_states: ``(1, 1, backbone_hidden)`` the base's final hidden state before it, or
                the previous draft step's projected state.
            k_sliding, v_sliding: ``(n_s, h_kv, head_dim)`` base context of its last sliding layer
                (at least its last ``sliding_window + 1`` entries).
            k_full, v_full: ``(n, h_kv_full, global_head_dim)`` the whole base context of its last
                full layer; ``n`` is the position of the last token.

        Returns:
            int32 ``(1,)`` the drafted token (:func:`drafted_token` over the kept tokens); int32
            ``(kept,)`` the kept token ids and float32 ``(kept,)`` their logits (``kept`` is
            ``top_k * vocab / num_centroids`` with the centroid head, in its order, else ``vocab``
            in token order); ``(1, 1, backbone_hidden)`` the projected state.
        """
        position = position_of_next(k_full)
        context = {True: (k_sliding, v_sliding), False: (k_full, v_full)}
        x = self.pre_projection(op.concat([input_embed, hidden_states], dim=-1)).astype("float32")
        for layer in self.model.layers:
            x = layer(x, position, context)
        hidden = self.model.norm(x)
        masked = self.masked_embedding if self.config.use_ordered_embeddings else None
        token, ids, logits = assistant_head(hidden, self.model.embed_tokens, masked)
        return token, ids, logits, self.post_projection(hidden)

    def get_default_spec(self) -> nn.spec.ModuleSpec:
        """The export spec: symbolic context lengths, params packed as in MLC."""
        c = self.config
        hb = c.backbone_hidden_size
        sliding = [i for i in range(c.num_hidden_layers) if c.is_sliding(i)]
        full = [i for i in range(c.num_hidden_layers) if not c.is_sliding(i)]
        d_s = c.layer_head_dim(sliding[0]) if sliding else c.head_dim
        kv_s = c.layer_kv_heads(sliding[0]) if sliding else c.num_key_value_heads
        d_f, kv_f = c.layer_head_dim(full[0]), c.layer_kv_heads(full[0])
        spec = {
            "draft_step": packed_method(
                input_embed=nn.spec.Tensor([1, 1, hb], self.dtype),
                hidden_states=nn.spec.Tensor([1, 1, hb], self.dtype),
                k_sliding=nn.spec.Tensor(["n_sliding", kv_s, d_s], self.dtype),
                v_sliding=nn.spec.Tensor(["n_sliding", kv_s, d_s], self.dtype),
                k_full=nn.spec.Tensor(["n_full", kv_f, d_f], self.dtype),
                v_full=nn.spec.Tensor(["n_full", kv_f, d_f], self.dtype)),
        }
        return nn.spec.ModuleSpec.from_raw(spec, self)
