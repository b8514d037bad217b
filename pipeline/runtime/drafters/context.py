"""What a drafter reads of the base model, kept position by position beside the KV cache: the
base's final hidden states and, for the ``gemma4_assistant`` drafter, the K/V of its last sliding
and last full non-shared layers.

The base library's ``prefill_to_mtp_context`` / ``batch_verify_to_mtp_context`` return them with
the logits (:mod:`pipeline.runtime.drafters.assistant`); a Gemma 3 library's
``prefill_to_last_hidden_states`` / ``batch_verify_to_last_hidden_states`` return the hidden
states of every token and no K/V (:mod:`pipeline.runtime.drafters.mtp_head`).
:class:`MTPContext` appends them and truncates them whenever the engine rolls its KV cache back,
so that they always describe exactly the tokens in the cache.

Everything stays on the engine's device (:class:`DeviceRows`): a forward pass's outputs are copied
device to device into the context, and a drafter reads ranges of it there, so a speculative step
moves no hidden state or K/V through the host.
"""

from __future__ import annotations

import math

import numpy as np
import tvm


def row_bytes(tensor) -> int:
    """Bytes of one row (all axes but the first) of a tensor."""
    return math.prod(int(d) for d in tensor.shape[1:]) * tvm.runtime.DataType(str(tensor.dtype)).bits // 8


def row_span(tensor, start: int, stop: int):
    """Rows ``start..stop-1`` of a device tensor ``(n, ...)`` as a view (no copy; at a byte offset,
    which copies accept and kernels do not)."""
    return tensor._create_view((stop - start, *tensor.shape[1:]), relative_byte_offset=start * row_bytes(tensor))


def copy_rows(tensor, start: int, stop: int):
    """Rows ``start..stop-1`` of a device tensor ``(n, ...)``, copied on its device into a new
    tensor (at offset 0, as kernels take them)."""
    out = tvm.runtime.empty((stop - start, *tensor.shape[1:]), str(tensor.dtype), tensor.device)
    if stop > start:
        row_span(tensor, start, stop).copyto(out)
    return out


class DeviceRows:
    """Rows ``(n, *row_shape)`` of one dtype on a device, growing by appends (capacity doubling)
    and shrinking by truncation; every copy is device to device (``Tensor.copyto`` between views
    at a byte offset of one allocation).

    Args:
        row_shape: the shape of one row.
        dtype: TVM dtype name (``"float16"``, ``"float32"``, ...).
        device: a ``tvm.runtime.Device``.
    """

    def __init__(self, row_shape: tuple[int, ...], dtype: str, device, capacity: int = 16):
        self.row_shape, self.dtype, self.device = tuple(int(d) for d in row_shape), str(dtype), device
        self._data = tvm.runtime.empty((capacity, *self.row_shape), self.dtype, device)
        self.length = 0

    def append(self, rows, skip: int = 0) -> None:
        """Append ``skip`` rows left unwritten, then ``rows``: a device tensor ``(m, *row_shape)``
        of this dtype (``m`` may be 0).

        Raises:
            ValueError: ``rows`` has another row shape or dtype.
        """
        m = int(rows.shape[0])
        if tuple(rows.shape[1:]) != self.row_shape or str(rows.dtype) != self.dtype:
            raise ValueError(f"rows {tuple(rows.shape)} {rows.dtype}, expected (m, *{self.row_shape}) {self.dtype}")
        need = self.length + skip + m
        capacity = int(self._data.shape[0])
        if need > capacity:
            grown = tvm.runtime.empty((max(need, 2 * capacity), *self.row_shape), self.dtype, self.device)
            if self.length:
                row_span(self._data, 0, self.length).copyto(row_span(grown, 0, self.length))
            self._data = grown
        if m:
            rows.copyto(row_span(self._data, need - m, need))
        self.length = need

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` rows."""
        self.length = min(self.length, length)

    def rows(self, start: int = 0, stop: int | None = None):
        """Rows ``start..stop-1`` (``stop`` defaults to the length; ``start`` below 0 counts as 0)
        as a device tensor: a view of the allocation when ``start`` is 0 (valid until the next
        append), else a copy (kernels take tensors at offset 0)."""
        start, stop = max(start, 0), self.length if stop is None else stop
        return row_span(self._data, 0, stop) if start == 0 else copy_rows(self._data, start, stop)


class MTPContext:
    """Per cached position: the base's final hidden state (known for positions a verify pass
    computed and for the last prompt token) and the MTP context K/V, on the device.

    ``kv`` holds four :class:`DeviceRows`: ``k_sliding``, ``v_sliding`` ``(h_kv, head_dim)`` rows
    and ``k_full``, ``v_full`` ``(h_kv_full, global_head_dim)`` rows.
    """

    NAMES = ("k_sliding", "v_sliding", "k_full", "v_full")

    def __init__(self):
        self.kv: dict[str, DeviceRows] = {}
        self.hidden: DeviceRows | None = None
        self.known = np.zeros(0, np.bool_)  # whether hidden[i] was returned, per position

    @property
    def length(self) -> int:
        """Positions held."""
        return int(self.known.shape[0])

    def append(self, hidden, kv: list) -> None:
        """Add ``n`` positions: ``hidden`` ``(m, H)`` for the last ``m <= n`` of them, ``kv`` the
        four ``(n, h, d)`` tensors in :data:`NAMES` order, or none (then ``n = m``: a base library
        that returns hidden states only); all device tensors of the engine's device."""
        n, m = (int(kv[0].shape[0]) if kv else int(hidden.shape[0])), int(hidden.shape[0])
        if self.hidden is None:
            self.kv = {name: DeviceRows(a.shape[1:], str(a.dtype), a.device) for name, a in zip(self.NAMES, kv)}
            self.hidden = DeviceRows(hidden.shape[1:], str(hidden.dtype), hidden.device)
        for name, array in zip(self.NAMES, kv):
            self.kv[name].append(array)
        self.hidden.append(hidden, skip=n - m)
        self.known = np.concatenate([self.known, np.arange(n) >= n - m])

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions (after a KV-cache roll-back)."""
        for rows in (*self.kv.values(), self.hidden):
            if rows is not None:
                rows.truncate(length)
        self.known = self.known[:length]

    def last_hidden(self):
        """``(1, H)`` hidden state of the last position, on the device.

        Raises:
            RuntimeError: the last position's hidden state was never returned (a prompt token
                other than the last, which a roll-back never reaches).
        """
        if self.hidden is None or not self.length or not self.known[-1]:
            raise RuntimeError("the base model's hidden state of the last cached token is unknown")
        return self.hidden.rows(self.length - 1, self.length)

    def hidden_states(self, start: int, stop: int):
        """``(stop - start, H)`` hidden states of positions ``start..stop-1``, on the device.

        Raises:
            RuntimeError: one of them was never returned, or ``stop`` is past the positions held.
        """
        if self.hidden is None or stop > self.length or not self.known[start:stop].all():
            raise RuntimeError(f"the base model's hidden states of positions {start}..{stop - 1} are not all known "
                               f"({self.length} positions held)")
        return self.hidden.rows(start, stop)

    def reset(self) -> None:
        """Forget everything (a new sequence)."""
        self.truncate(0)
