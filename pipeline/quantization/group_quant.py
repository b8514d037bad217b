"""Group quantization (MLC LLM's ``GroupQuantize``, ``python/mlc_llm/quantization/group_quantization.py``).

For a weight ``W`` of shape ``(N, K)`` (rows = output features / vocabulary entries), each run of
``group_size`` consecutive values along ``K`` shares one scale ``s = max|w| / max_int``; a value is
stored as the code ``q = clip(round(w / s) + max_int, 0, 2 * max_int)`` and read back as
``(q - max_int) * s``.  Codes are packed little-end first into ``uint32`` words: code ``j`` of a
word sits in bits ``bits * j .. bits * j + bits - 1``.  Stored tensors: ``<name>.q_weight``
``(N, K / per_storage)`` uint32 and ``<name>.q_scale`` ``(N, K / group_size)`` in the model dtype.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ..errors import PipelineError
from ..models.layers import ExpertWeights, TiedEmbedding, gathered_expert_matmul
from .schemes import QuantScheme


def quantize_array(weight: np.ndarray, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray]:
    """Quantize a float ``(..., N, K)`` array (e.g. ``(E, N, K)`` expert weights, each row on its
    own); returns ``(q_weight uint32, q_scale)`` as above, with the same leading axes.

    Raises:
        PipelineError: ``K`` is not a multiple of the group size.
    """
    *lead, k = weight.shape
    if k % scheme.group_size:
        raise PipelineError(f"cannot group-quantize a weight of shape {weight.shape}: {k} % {scheme.group_size} != 0")
    rows = int(np.prod(lead))
    groups = weight.astype(np.float32).reshape(rows, k // scheme.group_size, scheme.group_size)
    scale = np.abs(groups).max(axis=-1, keepdims=True) / scheme.max_int
    scale = scale.astype(scheme.model_dtype).astype(np.float32)  # quantize against the stored scale
    safe = np.where(scale == 0, 1, scale)
    codes = np.clip(np.round(groups / safe) + scheme.max_int, 0, 2 * scheme.max_int).astype(np.uint32)
    codes = codes.reshape(rows, k // scheme.per_storage, scheme.per_storage)
    shifts = (np.arange(scheme.per_storage, dtype=np.uint32) * scheme.bits)[None, None, :]
    packed = np.bitwise_or.reduce(codes << shifts, axis=-1).astype(np.uint32)
    return packed.reshape(*lead, -1), scale.reshape(*lead, -1).astype(scheme.model_dtype)


def dequantize_array(q_weight: np.ndarray, q_scale: np.ndarray, scheme: QuantScheme) -> np.ndarray:
    """Inverse of :func:`quantize_array` (float32 ``(..., N, K)``), the numpy reference of the kernels."""
    shifts = (np.arange(scheme.per_storage, dtype=np.uint32) * scheme.bits)
    codes = (q_weight[..., None] >> shifts) & np.uint32(2**scheme.bits - 1)
    codes = codes.reshape(*q_weight.shape[:-1], -1).astype(np.float32) - scheme.max_int
    return codes * np.repeat(q_scale.astype(np.float32), scheme.group_size, axis=-1)


def _code(qw, sc, i, j, scheme: QuantScheme):
    """TE expression of weight ``(*i, j)`` dequantized, in the model dtype (``i``: an index or a
    tuple of leading indices)."""
    lead = i if isinstance(i, tuple) else (i,)
    word = qw[lead + (j // scheme.per_storage,)]
    shift = (j % scheme.per_storage * scheme.bits).astype("uint32")
    code = ((word >> shift) & tirx.const(2**scheme.bits - 1, "uint32")).astype(scheme.model_dtype)
    return (code - tirx.const(scheme.max_int, scheme.model_dtype)) * sc[lead + (j // scheme.group_size,)]


def _dequantize(q_weight: Tensor, q_scale: Tensor, scheme: QuantScheme, k: int) -> Tensor:
    """Relax/TE dequantization of packed weights to ``(N, K)`` in the model dtype."""

    def compute(qw: te.Tensor, sc: te.Tensor):
        return te.compute((qw.shape[0], k), lambda i, j: _code(qw, sc, i, j, scheme), name="dequantize")

    return op.tensor_expr_op(compute, "dequantize", [q_weight, q_scale])


def _dequantize_matmul(x: Tensor, q_weight: Tensor, q_scale: Tensor, scheme: QuantScheme, k: int,
                       out_dtype: str) -> Tensor:
    """``x @ dequantize(W).T`` in one kernel (the CPU schedule dequantizes each weight row once per
    tile of rows, never the whole matrix), accumulated in float32 and returned as ``out_dtype``."""

    def compute(xt: te.Tensor, qw: te.Tensor, sc: te.Tensor):
        weight = te.compute((qw.shape[0], k), lambda i, j: _code(qw, sc, i, j, scheme).astype("float32"),
                            name="dequantize")
        r = te.reduce_axis((0, k), name="k")
        acc = te.compute(
            (*xt.shape[:-1], qw.shape[0]),
            lambda *idx: te.sum(xt[idx[:-1] + (r,)].astype("float32") * weight[idx[-1], r], axis=r),
            name="dequantize_matmul",
        )
        if out_dtype == "float32":
            return acc
        return te.compute(acc.shape, lambda *idx: acc[idx].astype(out_dtype), name="cast")

    return op.tensor_expr_op(compute, "dequantize_matmul", [x, q_weight, q_scale])


class GroupQuantLinear(nn.Module):
    """``y = x @ dequantize(q_weight, q_scale).T``; drop-in for a bias-free ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, scheme: QuantScheme):
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        self.q_weight = nn.Parameter((out_features, in_features // scheme.per_storage), scheme.storage_dtype)
        self.q_scale = nn.Parameter((out_features, in_features // scheme.group_size), scheme.model_dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_features)`` -> ``(..., out_features)``."""
        return _dequantize_matmul(x, self.q_weight, self.q_scale, self.scheme, self.in_features, x.dtype)


class GroupQuantEmbedding(nn.Module):
    """Quantized twin of :class:`pipeline.models.layers.TiedEmbedding`."""

    def __init__(self, vocab_size: int, hidden_size: int, scheme: QuantScheme):
        self.vocab_size, self.hidden_size, self.scheme = vocab_size, hidden_size, scheme
        self.q_weight = nn.Parameter((vocab_size, hidden_size // scheme.per_storage), scheme.storage_dtype)
        self.q_scale = nn.Parameter((vocab_size, hidden_size // scheme.group_size), scheme.model_dtype)

    def forward(self, input_ids: Tensor) -> Tensor:
        """``(n,)`` int32 -> ``(n, hidden)``: gathers the packed rows, then dequantizes them."""
        rows = op.take(self.q_weight, input_ids, axis=0)
        scales = op.take(self.q_scale, input_ids, axis=0)
        return _dequantize(rows, scales, self.scheme, self.hidden_size)

    def lm_head_forward(self, x: Tensor) -> Tensor:
        """``(..., hidden)`` -> ``(..., vocab)`` float32 logits."""
        return _dequantize_matmul(x, self.q_weight, self.q_scale, self.scheme, self.hidden_size, "float32")


class GroupQuantExpertWeights(nn.Module):
    """Quantized twin of :class:`pipeline.models.layers.ExpertWeights`: ``q_weight``
    ``(E, N, K / per_storage)``, ``q_scale`` ``(E, N, K / group_size)``, each expert row quantized
    on its own; the gathered product dequantizes the chosen experts' rows inline."""

    def __init__(self, experts: int, out_features: int, in_features: int, scheme: QuantScheme):
        self.in_features, self.scheme = in_features, scheme
        self.q_weight = nn.Parameter((experts, out_features, in_features // scheme.per_storage), scheme.storage_dtype)
        self.q_scale = nn.Parameter((experts, out_features, in_features // scheme.group_size), scheme.model_dtype)

    def gathered_matmul(self, x: Tensor, index: Tensor) -> Tensor:
        """As :meth:`pipeline.models.layers.ExpertWeights.gathered_matmul`."""
        scheme = self.scheme

        def weight(qw, sc, e, o, r):
            return _code(qw, sc, (e, o), r, scheme).astype("float32")

        return gathered_expert_matmul(x, [self.q_weight, self.q_scale], index, weight, self.in_features)


class _Quantizer(nn.Mutator):
    def __init__(self, scheme: QuantScheme):
        self.scheme = scheme
        self.names: set[str] = set()

    def visit_module(self, name: str, node: nn.Module):
        if isinstance(node, nn.Linear) and node.bias is None and node.in_features % self.scheme.group_size == 0:
            self.names.add(f"{name}.weight")
            return GroupQuantLinear(node.in_features, node.out_features, self.scheme)
        if isinstance(node, ExpertWeights) and node.in_features % self.scheme.group_size == 0:
            self.names.add(f"{name}.weight")
            experts, out_features, in_features = node.weight.shape
            return GroupQuantExpertWeights(experts, out_features, in_features, self.scheme)
        if isinstance(node, TiedEmbedding) and node.hidden_size % self.scheme.group_size == 0:
            self.names.add(f"{name}.weight")
            return GroupQuantEmbedding(node.vocab_size, node.hidden_size, self.scheme)
        return self.visit(name, node)


def quantize_model(model: nn.Module, scheme: QuantScheme) -> tuple[nn.Module, set[str]]:
    """Swap a model's linear layers and tied embedding for group-quantized twins.

    Returns the rewritten model and the names (``<module>.weight``) of the weights replaced, which
    :func:`quantize_params` must quantize.  Unquantized schemes return the model unchanged.
    """
    if not scheme.quantized:
        return model, set()
    quantizer = _Quantizer(scheme)
    return quantizer.visit("", model), quantizer.names


def quantize_params(params, quantized_names: set[str], scheme: QuantScheme):
    """Yield ``(name, array)`` in stored form: group-quantized weights as ``.q_weight``/``.q_scale``,
    other float tensors cast to the model dtype, integer tensors (index tables) kept.  ``params``
    yields ``(name, array)``, float ones float32."""
    for name, array in params:
        if name in quantized_names:
            q_weight, q_scale = quantize_array(array, scheme)
            base = name[: -len(".weight")]
            yield f"{base}.q_weight", q_weight
            yield f"{base}.q_scale", q_scale
        elif np.issubdtype(array.dtype, np.integer):
            yield name, array
        else:
            yield name, array.astype(scheme.model_dtype)
