"""Expressions shared by the CPU and GPU windowed attention kernels (see
:mod:`pipeline.kernels.attention` for the conventions).

Each helper returns a TIR expression; the kernels call them while TVMScript parses their bodies.
:class:`RaggedKV` and :class:`PagedKV` say where key ``j`` of a sequence lives, so that the
softmax loops (:mod:`.attention_cpu`, :mod:`.attention_gpu`) serve every kernel.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tvm.script import tirx as T

LOG2E = math.log2(math.e)
EMPTY_LSE = -1e30  # running maximum before any key, and the lse of a query with no key in range


def log2_scale(sm_scale):
    """Softmax scale in log2 units: scores ``q.k * |sm_scale| * log2(e)`` go through ``exp2``."""
    return T.abs(sm_scale) * T.float32(LOG2E)


def window_start(sm_scale, query_position, key_offset, window: int):
    """Index of the first key a query sees: ``max(0, p - window + 1 - offset)`` on a sliding layer
    (negative ``sm_scale``), else 0.  ``p`` is the query's absolute position and key ``j`` sits at
    ``offset + j`` (Gemma 3's mask: ``q_idx - kv_idx < sliding_window``)."""
    return T.if_then_else(sm_scale < T.float32(0), T.max(0, query_position - window + 1 - key_offset), 0)


def paged_length(page_indptr, length_info, b, page_size: int):
    """Number of cached keys of sequence ``b``: full pages plus the slots used in its last page."""
    n_pages = page_indptr[b + 1] - page_indptr[b]
    return T.if_then_else(n_pages > 0, (n_pages - 1) * page_size + length_info[b], 0)


def causal_end(causal, n_kv, n_q, i):
    """One past the last key that query ``i`` of ``n_q`` (the last ``n_q`` of ``n_kv`` positions) sees."""
    return T.if_then_else(causal > 0, T.min(n_kv, n_kv - n_q + i + 1), n_kv)


def normalized(acc, denominator):
    """``acc / denominator``, or 0 for a query that saw no key (``denominator == 0``)."""
    return T.if_then_else(denominator > 0, acc / denominator, T.float32(0))


def log2_sum_exp(running_max, denominator):
    """``lse`` in log2 units, or :data:`EMPTY_LSE` for a query that saw no key."""
    return T.if_then_else(denominator > 0, running_max + T.log2(denominator), T.float32(EMPTY_LSE))


@dataclasses.dataclass(frozen=True)
class RaggedKV:
    """Keys and values of a prefill chunk, ``k``/``v`` ``(kv_len, h_kv, d)``: key ``j`` of sequence
    ``b`` is row ``kv_indptr[b] + j``, for KV head ``kv_head``."""

    k: Any
    v: Any
    kv_indptr: Any
    b: Any
    kv_head: Any

    def key(self, j, x):
        """Element ``x`` of key ``j`` as float32."""
        return T.Cast("float32", self.k[self.kv_indptr[self.b] + j, self.kv_head, x])

    def value(self, j, x):
        """Element ``x`` of value ``j`` as float32."""
        return T.Cast("float32", self.v[self.kv_indptr[self.b] + j, self.kv_head, x])


@dataclasses.dataclass(frozen=True)
class PagedKV:
    """Keys and values of sequence ``b`` in the paged cache ``pages``
    ``(max_pages, 2, h_kv, page_size, d)``: key ``j`` is slot ``j % page_size`` of page
    ``page_values[page_indptr[b] + j // page_size]``, for KV head ``kv_head``."""

    pages: Any
    page_values: Any
    page_indptr: Any
    b: Any
    kv_head: Any
    page_size: int

    def _element(self, which, j, x):
        page = self.page_values[self.page_indptr[self.b] + j // self.page_size]
        return T.Cast("float32", self.pages[page, which, self.kv_head, j % self.page_size, x])

    def key(self, j, x):
        """Element ``x`` of key ``j`` as float32."""
        return self._element(0, j, x)

    def value(self, j, x):
        """Element ``x`` of value ``j`` as float32."""
        return self._element(1, j, x)
