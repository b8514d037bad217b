"""The ``gemma4_assistant`` MTP drafter at run time: a chain of greedy draft steps from the base
model's last hidden state and its context K/V (:mod:`pipeline.models.gemma4_assistant.model` for
the maths, transformers' ``SinglePositionMultiTokenCandidateGenerator`` for the protocol), which
:class:`MTPContextCapture` has the engine keep.

Per :meth:`AssistantDrafter.propose`: the pending token (emitted, not yet in the KV cache) is
embedded by the **base** library's ``embed``; the first step takes the base's final hidden state
of the last cached token, later steps the previous step's projected state; every step reads the
same context (all cached positions of the last full layer, the last ``sliding_window + 1`` of the
last sliding layer) and keeps its position.  Draft tokens are the argmax of each step (greedy
drafting, as LiteRT-LM does); their distributions are one-hot rows, which keeps sampled
verification lossless (:mod:`pipeline.runtime.speculative`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import tvm

from ..engine import Engine, load_library
from .base import Capture


class MTPContextCapture(Capture):
    """Runs the base library's ``*_to_mtp_context`` functions (:mod:`pipeline.models.gemma4.model`),
    which return the logits, the final hidden states and the context K/V; keeps the last two."""

    functions: ClassVar[dict[str, str]] = {
        "prefill": "prefill_to_mtp_context", "decode": "batch_verify_to_mtp_context",
        "batch_verify": "batch_verify_to_mtp_context"}

    def read(self, engine, out, last_only: bool) -> np.ndarray:
        logits, hidden, *kv = (a.numpy() for a in out)
        self.context.append(hidden[0], kv)
        return logits


class AssistantDrafter:
    """Drafts for ``engine`` (a Gemma 4 base) with the drafter library and weights of its package.

    Raises (constructor):
        PipelineError: the base library lacks the MTP context functions, or the drafter's files
            do not match each other.
    """

    def __init__(self, engine: Engine, library: Path, weights: Path):
        self.engine = engine
        self.context = engine.attach(MTPContextCapture()).context
        self.vm, self.metadata, self.params = load_library(library, weights, engine.device)
        self.window = engine.chat_config["model_config"]["sliding_window"] + 1
        self.backbone = engine.hidden_size

    def _tensor(self, array: np.ndarray):
        return tvm.runtime.tensor(np.ascontiguousarray(array), self.engine.device)

    def embed(self, token: int) -> np.ndarray:
        """``(1, 1, backbone_hidden)`` base embedding of ``token`` (scaled, per-layer part dropped)."""
        ids = tvm.runtime.tensor(np.array([token], np.int32), self.engine.device)
        return self.engine.vm["embed"](ids, self.engine.params).numpy()[:, :self.backbone].reshape(1, 1, -1)

    def step(self, token: int, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One draft step: float32 ``(vocab,)`` logits and the ``(backbone_hidden,)`` next state."""
        kv = self.context.kv
        args = [self._tensor(self.embed(token)), self._tensor(hidden.reshape(1, 1, -1)),
                self._tensor(kv["k_sliding"].view(self.context.length - self.window)),
                self._tensor(kv["v_sliding"].view(self.context.length - self.window)),
                self._tensor(kv["k_full"].view()), self._tensor(kv["v_full"].view())]
        logits, projected = self.vm["draft_step"](*args, self.params)
        return logits.numpy().reshape(-1), projected.numpy().reshape(-1)

    def propose(self, history: list[int], n: int) -> tuple[list[int], None]:
        """``n`` greedy draft tokens continuing ``history``, and None (their distributions are
        one-hot rows).  ``history[-1]`` is the pending token; the rest is in the cache."""
        if len(history) != self.engine.length + 1:
            raise RuntimeError(f"history has {len(history)} tokens, the cache {self.engine.length} (expected one more)")
        token, hidden = history[-1], self.context.last_hidden()
        tokens = []
        for _ in range(n):
            logits, hidden = self.step(token, hidden)
            token = int(np.argmax(logits))
            tokens.append(token)
        return tokens, None
