"""What a drafter reads of the base model, kept position by position beside the KV cache: the
base's final hidden states and, for the ``gemma4_assistant`` drafter, the K/V of its last sliding
and last full non-shared layers.

The base library's ``prefill_to_mtp_context`` / ``batch_verify_to_mtp_context`` return them with
the logits (:mod:`pipeline.runtime.drafters.assistant`); a Gemma 3 library's
``prefill_to_last_hidden_states`` / ``batch_verify_to_last_hidden_states`` return the hidden
states of every token and no K/V (:mod:`pipeline.runtime.drafters.mtp_head`).
:class:`MTPContext` appends them and truncates them whenever the engine rolls its KV cache back,
so that they always describe exactly the tokens in the cache.
"""

from __future__ import annotations

import numpy as np


class GrowingRows:
    """A float array whose first axis grows by appends (capacity doubling) and shrinks by truncation."""

    def __init__(self, row_shape: tuple[int, ...], dtype):
        self._data = np.zeros((16, *row_shape), dtype)
        self.length = 0

    def append(self, rows: np.ndarray) -> None:
        """Append ``(n, *row_shape)`` rows."""
        need = self.length + rows.shape[0]
        if need > self._data.shape[0]:
            grown = np.zeros((max(need, 2 * self._data.shape[0]), *self._data.shape[1:]), self._data.dtype)
            grown[:self.length] = self._data[:self.length]
            self._data = grown
        self._data[self.length:need] = rows
        self.length = need

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` rows."""
        self.length = min(self.length, length)

    def view(self, start: int = 0) -> np.ndarray:
        """Rows ``start..length-1`` (a view, valid until the next append)."""
        return self._data[max(start, 0):self.length]


class MTPContext:
    """Per cached position: the base's final hidden state (known for positions a verify pass
    computed and for the last prompt token) and the MTP context K/V.

    ``kv`` holds four :class:`GrowingRows`: ``k_sliding``, ``v_sliding`` ``(h_kv, head_dim)`` rows
    and ``k_full``, ``v_full`` ``(h_kv_full, global_head_dim)`` rows.
    """

    NAMES = ("k_sliding", "v_sliding", "k_full", "v_full")

    def __init__(self):
        self.kv: dict[str, GrowingRows] = {}
        self.hidden: GrowingRows | None = None
        self.known = GrowingRows((), np.bool_)  # whether hidden[i] was returned

    @property
    def length(self) -> int:
        """Positions held."""
        return self.known.length

    def append(self, hidden: np.ndarray, kv: list[np.ndarray]) -> None:
        """Add ``n`` positions: ``hidden`` ``(m, H)`` for the last ``m <= n`` of them, ``kv`` the
        four ``(n, h, d)`` arrays in :data:`NAMES` order, or none (then ``n = m``: a base library
        that returns hidden states only)."""
        n = kv[0].shape[0] if kv else hidden.shape[0]
        if self.hidden is None:
            self.kv = {name: GrowingRows(a.shape[1:], a.dtype) for name, a in zip(self.NAMES, kv)}
            self.hidden = GrowingRows(hidden.shape[1:], hidden.dtype)
        for name, array in zip(self.NAMES, kv):
            self.kv[name].append(array)
        m = hidden.shape[0]
        self.hidden.append(np.zeros((n - m, *hidden.shape[1:]), hidden.dtype))
        self.hidden.append(hidden)
        self.known.append(np.arange(n) >= n - m)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions (after a KV-cache roll-back)."""
        for rows in (*self.kv.values(), self.hidden, self.known):
            if rows is not None:
                rows.truncate(length)

    def last_hidden(self) -> np.ndarray:
        """``(H,)`` hidden state of the last position.

        Raises:
            RuntimeError: the last position's hidden state was never returned (a prompt token
                other than the last, which a roll-back never reaches).
        """
        if self.hidden is None or not self.length or not self.known.view()[-1]:
            raise RuntimeError("the base model's hidden state of the last cached token is unknown")
        return self.hidden.view()[-1]

    def hidden_states(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start, H)`` hidden states of positions ``start..stop-1``.

        Raises:
            RuntimeError: one of them was never returned, or ``stop`` is past the positions held.
        """
        if self.hidden is None or stop > self.length or not self.known.view()[start:stop].all():
            raise RuntimeError(f"the base model's hidden states of positions {start}..{stop - 1} are not all known "
                               f"({self.length} positions held)")
        return self.hidden.view()[start:stop]

    def reset(self) -> None:
        """Forget everything (a new sequence)."""
        self.truncate(0)
