"""Building blocks shared by the model families: RoPE, tied embedding, gated MLP.

Every block is a ``tvm.relax.frontend.nn`` module or op; quantization
(:mod:`pipeline.quantization`) swaps ``nn.Linear`` and :class:`TiedEmbedding` for group-quantized
twins with the same methods, so the families never see how their weights are stored.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op


def apply_rope(x: Tensor, positions: Tensor, theta: float, scaling_factor: float = 1.0,
               rotary_pairs: int | None = None) -> Tensor:
    """Rotate ``x`` by rotary position embeddings, in the "rotate half" layout.

    Formula (Su et al. 2021, arXiv 2104.09864; layout of transformers'
    ``modeling_gemma3.rotate_half``): with ``f_j = theta ** (-2 (j mod d/2) / d) / scaling_factor``
    and angle ``a = position * f_j``, ``out_j = x_j cos a - x_{j+d/2} sin a`` for ``j < d/2`` and
    ``out_j = x_j cos a + x_{j-d/2} sin a`` otherwise.  Angles are computed in float32.

    Partial ("proportional") RoPE (transformers' ``modeling_rope_utils.
    _compute_proportional_rope_parameters``, Gemma 4's full-attention layers): only the first
    ``rotary_pairs`` frequencies rotate (``j mod d/2 < rotary_pairs``), still with exponent
    denominator ``d``; the other dimensions pass through unchanged (frequency 0).

    Args:
        x: ``(tokens, heads, head_dim)``, any float dtype; head_dim even.
        positions: ``(tokens,)`` int32 absolute positions.
        theta: RoPE base.
        scaling_factor: linear position scaling (``rope_scaling.factor``; 1 for none).
        rotary_pairs: number of rotating frequency pairs, ``None`` for all ``head_dim / 2``.

    Returns:
        Tensor of ``x``'s shape and dtype.
    """
    _, _, d = x.shape
    half = d // 2
    pairs = half if rotary_pairs is None else rotary_pairs

    def compute(x_te: te.Tensor, pos_te: te.Tensor):
        def body(i, h, j):
            jj = tirx.floormod(j, half).astype("float32")
            inv_freq = tirx.exp(jj * tirx.const(-2.0 / d, "float32") * tirx.log(tirx.const(theta, "float32")))
            angle = pos_te[i].astype("float32") * inv_freq / tirx.const(scaling_factor, "float32")
            if pairs < half:
                angle = tirx.if_then_else(tirx.floormod(j, half) < pairs, angle, tirx.const(0.0, "float32"))
            partner = tirx.if_then_else(j < half, -x_te[i, h, j + half], x_te[i, h, j - half])
            value = x_te[i, h, j].astype("float32") * tirx.cos(angle) + partner.astype("float32") * tirx.sin(angle)
            return value.astype(x_te.dtype)

        return te.compute(x_te.shape, body, name="rope")

    return op.tensor_expr_op(compute, "rope", [x, positions])


class RMSNorm(nn.Module):
    """Root-mean-square normalization ``x / sqrt(mean(x^2) + eps) * weight`` (Zhang & Sennrich 2019,
    arXiv 1910.07467), computed in float32 whatever the input dtype.

    ``weight``: ``(hidden,)`` in the model dtype, the full multiplier (Gemma's ``1 + w``); absent
    with ``with_scale=False`` (Gemma 4's ``v_norm`` and router norm multiply by nothing).
    ``forward(x, out_dtype)``: ``(..., hidden)`` of any float dtype -> same shape in ``out_dtype``
    (default: the weight's dtype).  The float32 input path lets a float16 model keep its residual
    stream in float32.
    """

    def __init__(self, hidden_size: int, eps: float, dtype: str, with_scale: bool = True):
        self.eps = eps
        self.hidden_size = hidden_size
        self.dtype = dtype
        self.weight = nn.Parameter((hidden_size,), dtype) if with_scale else None

    def forward(self, x: Tensor, out_dtype: str | None = None) -> Tensor:
        """Normalize over the last axis."""
        dtype = out_dtype or self.dtype
        eps = self.eps
        hidden_size = float(self.hidden_size)

        def compute(x_te: te.Tensor, *w_te: te.Tensor):
            # Two stages (a row reduction, then an elementwise product) with the casts inline, the
            # shape dlight's CPU reduction rule schedules (a separate cast stage of the weight made
            # it redo the reduction once per element).
            *lead, hidden = x_te.shape
            k = te.reduce_axis((0, hidden), name="k")
            sumsq = te.compute(
                tuple(lead),
                lambda *i: te.sum(x_te[i + (k,)].astype("float32") * x_te[i + (k,)].astype("float32"), axis=k),
                name="sumsq",
            )

            def body(*i):
                value = x_te[i].astype("float32") * tirx.rsqrt(
                    sumsq[i[:-1]] / tirx.const(hidden_size, "float32") + tirx.const(eps, "float32"))
                if w_te:
                    value = value * w_te[0][i[-1]].astype("float32")
                return value.astype(dtype)

            return te.compute(x_te.shape, body, name="rms_norm")

        inputs = [x] if self.weight is None else [x, self.weight]
        return op.tensor_expr_op(compute, "rms_norm", inputs)


class TiedEmbedding(nn.Module):
    """Token embedding whose transpose is also the output head.

    ``weight``: ``(vocab_size, hidden_size)``.  ``forward`` gathers rows; ``lm_head_forward``
    computes ``x @ weight.T`` and returns float32 logits.
    """

    def __init__(self, vocab_size: int, hidden_size: int, dtype: str):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.weight = nn.Parameter((vocab_size, hidden_size), dtype)

    def forward(self, input_ids: Tensor) -> Tensor:
        """``(n,)`` int32 ids -> ``(n, hidden_size)`` embeddings."""
        return op.take(self.weight, input_ids, axis=0)

    def lm_head_forward(self, x: Tensor) -> Tensor:
        """``(..., hidden_size)`` -> ``(..., vocab_size)`` float32 logits."""
        return op.matmul(x, op.permute_dims(self.weight)).astype("float32")


class GatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))`` with GELU-tanh (Gemma; Shazeer 2020, arXiv 2002.05202)."""

    def __init__(self, hidden_size: int, intermediate_size: int, dtype: str):
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False, dtype=dtype)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False, dtype=dtype)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., hidden)`` -> ``(..., hidden)``."""
        return self.down_proj(op.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


def last_position(x: Tensor) -> Tensor:
    """``(b, s, d)`` -> ``(b, 1, d)``, the last position of each row."""
    def index(t: te.Tensor):
        b, s, d = t.shape
        return te.compute((b, 1, d), lambda i, _, k: t[i, s - 1, k], name="last_position")

    return op.tensor_expr_op(index, "last_position", [x])


def tied_logits(embedding: nn.Module, hidden_states: Tensor, softcap: float | None) -> Tensor:
    """``(..., hidden)`` -> ``(..., vocab)`` float32 logits through the tied embedding's head,
    soft-capped as ``cap * tanh(logits / cap)`` when ``softcap`` is set (Gemma 2 report, arXiv
    2408.00118, sec. 2)."""
    logits = embedding.lm_head_forward(hidden_states)
    if softcap is not None:
        logits = op.tanh(logits / softcap) * softcap
    return logits


def gathered_expert_matmul(x: Tensor, weights: list[Tensor], index: Tensor, weight_value, in_features: int) -> Tensor:
    """Per token and chosen expert, ``x @ W[expert].T`` without gathering the weights.

    ``x``: ``(n, K)`` or ``(n, k, K)`` (one row per choice); ``weights``: the stored tensors of
    ``W`` ``(E, N, K)``, read through ``weight_value(*stored, e, o, r)`` (a float32 TE
    expression); ``index``: int32 ``(n, k)`` expert ids.  Returns float32 ``(n, k, N)``.
    """
    per_choice = len(x.shape) == 3

    def compute(xt: te.Tensor, *rest: te.Tensor):
        *stored, it = rest
        n, k = it.shape
        r = te.reduce_axis((0, in_features), name="r")

        def body(t, j, o):
            xv = xt[t, j, r] if per_choice else xt[t, r]
            return te.sum(xv.astype("float32") * weight_value(*stored, it[t, j], o, r), axis=r)

        return te.compute((n, k, stored[0].shape[1]), body, name="expert_matmul")

    return op.tensor_expr_op(compute, "expert_matmul", [x, *weights, index])


class ExpertWeights(nn.Module):
    """The weights of ``E`` experts' linear maps, ``weight`` ``(E, out_features, in_features)``
    (transformers' 3-D expert tensors); quantization swaps in a group-quantized twin."""

    def __init__(self, experts: int, out_features: int, in_features: int, dtype: str):
        self.in_features = in_features
        self.weight = nn.Parameter((experts, out_features, in_features), dtype)

    def gathered_matmul(self, x: Tensor, index: Tensor) -> Tensor:
        """``(n, K)`` or ``(n, k, K)``, int32 ``(n, k)`` expert ids -> float32 ``(n, k, N)``."""
        return gathered_expert_matmul(x, [self.weight], index,
                                      lambda w, e, o, r: w[e, o, r].astype("float32"), self.in_features)
