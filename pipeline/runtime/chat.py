"""Multi-turn chat with the package's conversation template, keeping the KV cache between turns.

The template is ``mlc-chat-config.json``'s ``conv_template`` (MLC's ``Conversation`` fields):
a turn is ``roles.user + role_content_sep + message + seps[0] + roles.assistant +
role_content_sep``, the reply ends with ``seps[0]``, whose start is the stop string.  For Gemma 3:
``<bos><start_of_turn>user\\n{message}<end_of_turn>\\n<start_of_turn>model\\n{reply}<end_of_turn>\\n``.
"""

from __future__ import annotations

from .draft_length import DraftLength
from .engine import Engine
from .sampling import Sampler
from .speculative import Drafter, SpeculativeStats, speculative_generate


def turn_text(template: dict, message: str) -> str:
    """The text that opens a user turn and the model's reply (``<bos>`` is added as a token)."""
    roles, sep, role_sep = template["roles"], template["seps"][0], template["role_content_sep"]
    return f"{roles['user']}{role_sep}{message}{sep}{roles['assistant']}{role_sep}"


def turn_end(template: dict, stopped: bool) -> str:
    """What closes the model's reply in the cache: the separator, less the stop string when the
    model emitted it (a stop token, already in the cache)."""
    sep = template["seps"][0]
    stop = template["stop_str"][0] if template.get("stop_str") else ""
    return sep[len(stop):] if stopped and sep.startswith(stop) else sep


def encode_turn(engine: Engine, message: str, first: bool) -> list[int]:
    """Token ids for a user turn (with ``<bos>`` first when ``first``)."""
    ids = engine.tokenizer.encode(turn_text(engine.chat_config["conv_template"], message),
                                  add_special_tokens=False).ids
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
        stopped = stats.stopped_by == "stop_token"  # the end-of-turn token is in the cache already
        close = self.engine.tokenizer.encode(turn_end(self.engine.chat_config["conv_template"], stopped),
                                             add_special_tokens=False).ids
        # cut otherwise (max_tokens, a stop string): the last token is not in the cache yet
        self.pending = close if stopped else ([last] if last is not None else []) + close
