"""Group quantization of a model: its linear layers, tied embedding and expert weights swapped
for twins that store their weights in a :class:`~pipeline.quantization.formats.GroupFormat` and
read them back inside the kernels (as MLC LLM's ``GroupQuantize``,
``python/mlc_llm/quantization/group_quantization.py``).  A scheme gives one format for every
weight (``q4f32_1``) or one per weight from the source's types (``qsrcf32``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import te
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ..errors import PipelineError
from ..models.layers import ExpertWeights, TiedEmbedding, gathered_expert_matmul
from .formats import GroupFormat, encode, weight_expr
from .schemes import QuantScheme


def _weight(tensors, lead, j, fmt: GroupFormat, model_dtype: str):
    """TE expression of weight ``(*lead, j)`` read back in ``model_dtype``, then as float32."""
    return weight_expr(tensors, lead, j, fmt, model_dtype).astype("float32")


def _dequantize(stored: list[Tensor], fmt: GroupFormat, model_dtype: str, k: int) -> Tensor:
    """Relax/TE dequantization of stored weights (:attr:`GroupFormat.tensors`) to ``(N, K)`` in
    the model dtype."""

    def compute(*tensors: te.Tensor):
        return te.compute((tensors[0].shape[0], k), lambda i, j: weight_expr(tensors, (i,), j, fmt, model_dtype),
                          name="dequantize")

    return op.tensor_expr_op(compute, "dequantize", stored)


def _dequantize_matmul(x: Tensor, stored: list[Tensor], fmt: GroupFormat, model_dtype: str, k: int,
                       out_dtype: str) -> Tensor:
    """``x @ dequantize(W).T`` in one kernel (the CPU schedule dequantizes each weight row once per
    tile of rows, never the whole matrix), accumulated in float32 and returned as ``out_dtype``."""

    def compute(xt: te.Tensor, *tensors: te.Tensor):
        weight = te.compute((tensors[0].shape[0], k), lambda i, j: _weight(tensors, (i,), j, fmt, model_dtype),
                            name="dequantize")
        r = te.reduce_axis((0, k), name="k")
        acc = te.compute(
            (*xt.shape[:-1], tensors[0].shape[0]),
            lambda *idx: te.sum(xt[idx[:-1] + (r,)].astype("float32") * weight[idx[-1], r], axis=r),
            name="matmul",  # not "dequantize...": dlight's LowBatchGEMV takes such blocks for the weight decode
        )
        if out_dtype == "float32":
            return acc
        return te.compute(acc.shape, lambda *idx: acc[idx].astype(out_dtype), name="cast")

    return op.tensor_expr_op(compute, "dequantize_matmul", [x, *stored])


class _Stored(nn.Module):
    """Holds a weight ``(*lead, N, K)`` in stored form: parameters ``q_weight``, ``q_scale`` (and
    ``q_min``) as :meth:`GroupFormat.shapes` gives them."""

    def _store(self, lead: tuple[int, ...], k: int, fmt: GroupFormat, model_dtype: str) -> None:
        self.fmt, self.model_dtype = fmt, model_dtype
        for suffix, (shape, dtype) in fmt.shapes(lead, k).items():
            setattr(self, suffix, nn.Parameter(shape, dtype))

    @property
    def stored(self) -> list[Tensor]:
        """The stored tensors in :attr:`GroupFormat.tensors` order."""
        return [getattr(self, suffix) for suffix in self.fmt.tensors]


class GroupQuantLinear(_Stored):
    """``y = x @ dequantize(W).T``; drop-in for a bias-free ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, fmt: GroupFormat, model_dtype: str):
        self.in_features, self.out_features = in_features, out_features
        self._store((out_features,), in_features, fmt, model_dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_features)`` -> ``(..., out_features)``."""
        return _dequantize_matmul(x, self.stored, self.fmt, self.model_dtype, self.in_features, x.dtype)


class GroupQuantEmbedding(_Stored):
    """Quantized twin of :class:`pipeline.models.layers.TiedEmbedding`."""

    def __init__(self, vocab_size: int, hidden_size: int, fmt: GroupFormat, model_dtype: str):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self._store((vocab_size,), hidden_size, fmt, model_dtype)

    def forward(self, input_ids: Tensor) -> Tensor:
        """``(n,)`` int32 -> ``(n, hidden)``: gathers the stored rows, then dequantizes them."""
        rows = [op.take(t, input_ids, axis=0) for t in self.stored]
        return _dequantize(rows, self.fmt, self.model_dtype, self.hidden_size)

    def lm_head_forward(self, x: Tensor) -> Tensor:
        """``(..., hidden)`` -> ``(..., vocab)`` float32 logits."""
        return _dequantize_matmul(x, self.stored, self.fmt, self.model_dtype, self.hidden_size, "float32")


class GroupQuantExpertWeights(_Stored):
    """Quantized twin of :class:`pipeline.models.layers.ExpertWeights`: stored tensors with a
    leading expert axis (``q_weight`` ``(E, N, ...)``), each expert row quantized on its own; the
    gathered product dequantizes the chosen experts' rows inline."""

    def __init__(self, experts: int, out_features: int, in_features: int, fmt: GroupFormat, model_dtype: str):
        self.in_features = in_features
        self._store((experts, out_features), in_features, fmt, model_dtype)

    def gathered_matmul(self, x: Tensor, index: Tensor) -> Tensor:
        """As :meth:`pipeline.models.layers.ExpertWeights.gathered_matmul`."""
        fmt, model_dtype, count = self.fmt, self.model_dtype, len(self.fmt.tensors)

        def weight(*args):
            tensors, (e, o, r) = args[:count], args[count:]
            return _weight(tensors, (e, o), r, fmt, model_dtype)

        return gathered_expert_matmul(x, self.stored, index, weight, self.in_features)


class _Quantizer(nn.Mutator):
    def __init__(self, scheme: QuantScheme, source_types: dict[str, str]):
        self.scheme, self.source_types = scheme, source_types
        self.formats: dict[str, GroupFormat] = {}

    def _format(self, name: str, k: int) -> GroupFormat | None:
        fmt = self.scheme.tensor_format(self.source_types.get(f"{name}.weight"))
        if fmt is None or k % fmt.group_size:
            return None
        self.formats[f"{name}.weight"] = fmt
        return fmt

    def visit_module(self, name: str, node: nn.Module):
        dtype = self.scheme.model_dtype
        if isinstance(node, nn.Linear) and node.bias is None and (fmt := self._format(name, node.in_features)):
            return GroupQuantLinear(node.in_features, node.out_features, fmt, dtype)
        if isinstance(node, ExpertWeights) and (fmt := self._format(name, node.in_features)):
            experts, out_features, in_features = node.weight.shape
            return GroupQuantExpertWeights(experts, out_features, in_features, fmt, dtype)
        if isinstance(node, TiedEmbedding) and (fmt := self._format(name, node.hidden_size)):
            return GroupQuantEmbedding(node.vocab_size, node.hidden_size, fmt, dtype)
        return self.visit(name, node)


def quantize_model(model: nn.Module, scheme: QuantScheme,
                   source_types: dict[str, str] | None = None) -> tuple[nn.Module, dict[str, GroupFormat]]:
    """Swap a model's linear layers, tied embedding and expert weights for group-quantized twins.

    ``source_types``: weight name -> the type its source stored it in (GGML type name or float
    dtype name), which picks each weight's format under a scheme that keeps the source's
    precision (:meth:`QuantScheme.tensor_format`); other schemes ignore it.  Returns the rewritten
    model and ``{weight name (<module>.weight): format}`` of the weights replaced, which
    :func:`quantize_params` must quantize.  Unquantized schemes return the model unchanged.
    """
    if not scheme.quantized:
        return model, {}
    quantizer = _Quantizer(scheme, source_types or {})
    return quantizer.visit("", model), quantizer.formats


def quantize_params(params, formats: dict[str, GroupFormat], scheme: QuantScheme,
                    group_scales: Callable[[str], tuple[np.ndarray, np.ndarray | None] | None] | None = None):
    """Yield ``(name, array)`` in stored form: weights named in ``formats`` as
    ``.q_weight``/``.q_scale`` (/``.q_min``), other float tensors cast to the model dtype, integer
    tensors (index tables) kept.  ``params`` yields ``(name, array)``, float ones float32.
    ``group_scales(name)``: the ``(scale, minimum)`` the source stored for a weight's groups
    (same group size as its format), or None; those weights keep the source's codes exactly.

    Raises:
        PipelineError: a source's group scales whose group count does not fit the weight.
    """
    for name, array in params:
        if name in formats:
            fmt = formats[name]
            given = group_scales(name) if group_scales else None
            if given is not None and given[0].shape != (*array.shape[:-1], array.shape[-1] // fmt.group_size):
                raise PipelineError(f"{name}: source group scales of shape {given[0].shape} do not fit "
                                    f"{fmt.name} groups of {fmt.group_size} of a weight {array.shape}")
            stored = encode(array, fmt, *(given or ()))
            base = name[: -len(".weight")]
            for suffix in fmt.tensors:
                yield f"{base}.{suffix}", stored[suffix]
        elif np.issubdtype(array.dtype, np.integer):
            yield name, array
        else:
            yield name, array.astype(scheme.model_dtype)
