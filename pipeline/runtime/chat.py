"""Multi-turn chat with Gemma's template, keeping the KV cache between turns.

Template (Gemma 3 model card / ``chat_template`` of its tokenizer):
``<bos><start_of_turn>user\\n{message}<end_of_turn>\\n<start_of_turn>model\\n{reply}<end_of_turn>\\n...``
"""

from __future__ import annotations

from .draft_length import DraftLength
from .engine import Engine
from .sampling import Sampler
from .speculative import Drafter, SpeculativeStats, speculative_generate


def turn_text(message: str, first: bool) -> str:
    """The text that opens a user turn and the model's reply (``<bos>`` is added as a token)."""
    del first
    return f"<start_of_turn>user\n{message}<end_of_turn>\n<start_of_turn>model\n"


def encode_turn(engine: Engine, message: str, first: bool) -> list[int]:
    """Token ids for a user turn (with ``<bos>`` first when ``first``)."""
    ids = engine.tokenizer.encode(turn_text(message, first), add_special_tokens=False).ids
    return ([engine.chat_config["bos_token_id"]] if first else []) + ids


class ChatSession:
    """A conversation: each :meth:`send` prefills only the new turn's tokens.  With a ``drafter``
    replies are decoded speculatively, ``draft_length`` tokens drafted per step (the policy keeps
    adapting across turns); without one, plainly."""

    def __init__(self, engine: Engine, sampler: Sampler, max_tokens: int, drafter: Drafter | None = None,
                 draft_length: int | DraftLength = 1):
        self.engine, self.sampler, self.max_tokens = engine, sampler, max_tokens
        self.drafter, self.draft_length = drafter, draft_length
        self.pending: list[int] = []  # tokens generated but not yet in the KV cache
        self.started = False

    def send(self, message: str, stats: SpeculativeStats | None = None):
        """Yield the reply's token ids for ``message``."""
        prompt = self.pending + encode_turn(self.engine, message, not self.started)
        stats = stats if stats is not None else SpeculativeStats()
        last = None
        for last in speculative_generate(self.engine, prompt, self.max_tokens, self.sampler, self.drafter,
                                         self.draft_length, stats=stats, continue_sequence=self.started):
            yield last
        self.started = True
        encode = self.engine.tokenizer.encode
        if stats.stopped_by == "stop_token":  # <end_of_turn> is in the cache already
            self.pending = encode("\n", add_special_tokens=False).ids
        else:  # cut by max_tokens: the last token is not in the cache yet; close the turn
            self.pending = ([last] if last is not None else []) + encode("<end_of_turn>\n", add_special_tokens=False).ids
