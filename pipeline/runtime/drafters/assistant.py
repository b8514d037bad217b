"""The ``gemma4_assistant`` MTP drafter at run time: a chain of greedy draft steps from the base
model's last hidden state and its context K/V (:mod:`pipeline.models.gemma4_assistant.model` for
the maths, transformers' ``SinglePositionMultiTokenCandidateGenerator`` for the protocol), which
:class:`MTPContextCapture` has the engine keep.

Per :meth:`AssistantDrafter.propose`: the pending token (emitted, not yet in the KV cache) is
embedded by the **base** library's ``embed``; the first step takes the base's final hidden state
of the last cached token, later steps the previous step's projected state; every step reads the
same context (all cached positions of the last full layer, the last ``sliding_window + 1`` of the
last sliding layer) and keeps its position.  Draft tokens are the argmax of each step (greedy
drafting, as LiteRT-LM does), taken by the library's ``draft_step``; their distributions are
one-hot rows, which keeps sampled verification lossless (:mod:`pipeline.runtime.speculative`).

Host traffic per chain: none but the drafted token ids (4 bytes a step): the context K/V and the
hidden states are kept on the device as the base returns them
(:class:`~pipeline.runtime.drafters.context.MTPContext`), and the embedding, the projected state
and the kept tokens' logits stay there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import tvm

from ...errors import PipelineError
from ..engine import Engine, load_library
from .base import Capture


class MTPContextCapture(Capture):
    """Runs the base library's ``*_to_mtp_context`` functions (:mod:`pipeline.models.gemma4.model`),
    which return the logits, the final hidden states and the context K/V; keeps the last two."""

    functions: ClassVar[dict[str, str]] = {
        "prefill": "prefill_to_mtp_context", "decode": "batch_verify_to_mtp_context",
        "batch_verify": "batch_verify_to_mtp_context"}

    def read(self, engine, out, last_only: bool):
        logits, hidden, *kv = out
        self.context.append(hidden._create_view(tuple(hidden.shape[1:])), kv)  # device-to-device copies
        return logits


@dataclass(frozen=True)
class DraftStep:
    """What one ``draft_step`` gives; all but ``token`` stay on the device (``tvm.runtime.Tensor``).

    ``token``: the drafted token id; ``ids``: int32 ``(kept,)`` the tokens whose logits the head
    computed (the chosen clusters' tokens with the centroid head, else the whole vocabulary in
    order); ``logits``: float32 ``(kept,)`` theirs; ``hidden``: ``(1, 1, backbone_hidden)`` the
    projected state the next step starts from.
    """

    token: int
    ids: tvm.runtime.Tensor
    logits: tvm.runtime.Tensor
    hidden: tvm.runtime.Tensor


class AssistantDrafter:
    """Drafts for ``engine`` (a Gemma 4 base) with the drafter library and weights of its package.

    Raises (constructor):
        PipelineError: the base library lacks the MTP context functions, or the drafter's files
            do not match each other.
    """

    def __init__(self, engine: Engine, library: Path, weights: Path):
        self.engine, self.library = engine, library
        self.context = engine.attach(MTPContextCapture()).context
        self.vm, self.metadata, self.params = load_library(library, weights, engine.device)
        self.window = engine.chat_config["model_config"]["sliding_window"] + 1
        self.backbone = engine.hidden_size

    def context_tensors(self) -> list:
        """The context every step of a chain reads, on the device: ``k_sliding``, ``v_sliding``
        (the last ``sliding_window + 1`` cached positions, copied on the device once past the
        window), ``k_full``, ``v_full`` (all of them, views of the context)."""
        kv, start = self.context.kv, self.context.length - self.window
        return [kv["k_sliding"].rows(start), kv["v_sliding"].rows(start), kv["k_full"].rows(), kv["v_full"].rows()]

    def embed(self, token: int):
        """``(1, 1, backbone_hidden)`` base embedding of ``token`` (scaled, per-layer part dropped),
        on the device: a view of the first ``backbone_hidden`` values of the base's ``embed`` row."""
        ids = tvm.runtime.tensor(np.array([token], np.int32), self.engine.device)
        return self.engine.vm["embed"](ids, self.engine.params)._create_view((1, 1, self.backbone))

    def step(self, token: int, hidden, context: list | None = None) -> DraftStep:
        """One draft step after ``token`` from ``hidden`` (``backbone_hidden`` values: numpy, or a
        device tensor such as :meth:`~.context.MTPContext.last_hidden` or the previous step's
        :attr:`DraftStep.hidden`); ``context``:
        :meth:`context_tensors`, made here when not given.

        Raises:
            PipelineError: the library's ``draft_step`` is an older one (two outputs, dense logits).
        """
        if isinstance(hidden, np.ndarray):
            hidden = tvm.runtime.tensor(np.ascontiguousarray(hidden.reshape(1, 1, -1)), self.engine.device)
        else:
            hidden = hidden._create_view((1, 1, int(hidden.shape[-1])))
        out = self.vm["draft_step"](self.embed(token), hidden, *(context or self.context_tensors()), self.params)
        if len(out) != 4:
            raise PipelineError(f"{self.library}: draft_step returns {len(out)} values, expected 4 (token, kept ids, "
                                "their logits, state): a library built before the sparse centroid head; rebuild it")
        drafted, ids, logits, projected = out
        return DraftStep(int(drafted.numpy()[0]), ids, logits, projected)

    def propose(self, history: list[int], n: int) -> tuple[list[int], None]:
        """``n`` greedy draft tokens continuing ``history``, and None (their distributions are
        one-hot rows).  ``history[-1]`` is the pending token; the rest is in the cache."""
        if len(history) != self.engine.length + 1:
            raise RuntimeError(f"history has {len(history)} tokens, the cache {self.engine.length} (expected one more)")
        token, hidden, context = history[-1], self.context.last_hidden(), self.context_tensors()
        tokens = []
        for _ in range(n):
            result = self.step(token, hidden, context)
            token, hidden = result.token, result.hidden
            tokens.append(token)
        return tokens, None
