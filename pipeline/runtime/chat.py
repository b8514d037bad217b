"""Multi-turn chat with the package's conversation template, keeping the KV cache between turns.

The template is ``mlc-chat-config.json``'s ``conv_template`` (MLC's ``Conversation`` fields):
a turn is ``roles.user + role_content_sep + message + seps[0] + roles.assistant +
role_content_sep``, the reply ends with ``seps[0]``, whose start is the stop string.  For Gemma 3:
``<bos><start_of_turn>user\\n{message}<end_of_turn>\\n<start_of_turn>model\\n{reply}<end_of_turn>\\n``.

Messages are trimmed of surrounding whitespace, as Gemma's chat templates do (``| trim``).  A
system message (``--system``, else the template's ``system_message``; empty: none), rendered
through ``system_template`` and trimmed, goes where the model's format puts it: with a ``system``
entry in ``roles`` (Gemma 4: ``<|turn>system\\n{system}<turn|>\\n``) as its own turn before the
first user turn; without one (Gemma 3, which has no system turn) at the start of the first user
message, followed by a blank line: ``<start_of_turn>user\\n{system}\\n\\n{message}<end_of_turn>\\n``
(as llama.cpp's built-in ``gemma`` template renders it, which the tests take as the reference).
"""

from __future__ import annotations

from .draft_length import DraftLength
from .engine import Engine
from .sampling import Sampler
from .speculative import Drafter, SpeculativeStats, speculative_generate


def system_message(template: dict, system: str | None = None) -> str:
    """The system message a conversation starts with: ``system`` when given (``--system``), else
    the template's ``system_message`` (``mlc-chat-config.json``); empty for none."""
    return template.get("system_message", "") if system is None else system


def turn_text(template: dict, message: str, system: str = "") -> str:
    """The text that opens a user turn and the model's reply (``<bos>`` is added as a token):
    ``message`` trimmed, after ``system`` (a conversation's first turn only; empty: none) where the
    template puts it (module docstring)."""
    roles, sep, role_sep = template["roles"], template["seps"][0], template["role_content_sep"]
    message = message.strip()
    opening = ""
    if system:
        system = template.get("system_template", "{system_message}").replace("{system_message}", system).strip()
        if "system" in roles:
            opening = f"{roles['system']}{role_sep}{system}{sep}"
        else:
            message = f"{system}\n\n{message}"
    return f"{opening}{roles['user']}{role_sep}{message}{sep}{roles['assistant']}{role_sep}"


def turn_end(template: dict, stopped: bool) -> str:
    """What closes the model's reply in the cache: the separator, less the stop string when the
    model emitted it (a stop token, already in the cache)."""
    sep = template["seps"][0]
    stop = template["stop_str"][0] if template.get("stop_str") else ""
    return sep[len(stop):] if stopped and sep.startswith(stop) else sep


def encode_turn(engine: Engine, message: str, first: bool, system: str = "") -> list[int]:
    """Token ids for a user turn (with ``<bos>`` first when ``first``), opened by ``system``
    (:func:`turn_text`; pass it on the first turn only)."""
    ids = engine.tokenizer.encode(turn_text(engine.chat_config["conv_template"], message, system),
                                  add_special_tokens=False).ids
    return ([engine.chat_config["bos_token_id"]] if first else []) + ids


class ChatSession:
    """A conversation: each :meth:`send` prefills only the new turn's tokens.  With a ``drafter``
    replies are decoded speculatively, ``draft_length`` tokens drafted per step (the policy keeps
    adapting across turns); without one, plainly.  ``system``: the system message
    (:func:`system_message`: None takes the package's)."""

    def __init__(self, engine: Engine, sampler: Sampler, max_tokens: int, drafter: Drafter | None = None,
                 draft_length: int | DraftLength = 1, system: str | None = None):
        self.engine, self.sampler, self.max_tokens = engine, sampler, max_tokens
        self.system = system_message(engine.chat_config["conv_template"], system)
        self.drafter, self.draft_length = drafter, draft_length
        self.reset()

    def reset(self) -> None:
        """Forget the conversation: the next :meth:`send` starts a new one (with the system message)."""
        self.pending: list[int] = []  # tokens of the conversation not yet in the KV cache
        self.started = False
        self.turns = 0

    @property
    def context_used(self) -> int:
        """Tokens the conversation holds so far (in the KV cache or pending), of the context window."""
        return (len(self.engine.tokens) if self.started else 0) + len(self.pending)

    def send(self, message: str, stats: SpeculativeStats | None = None):
        """Yield the reply's token ids for ``message``.

        A reply cut short by closing the generator (Ctrl-C in the chat) stays in the conversation
        as far as it was yielded.  Set ``stats.stopped_by`` before closing to say why.

        Raises:
            PipelineError: the turn does not fit the context window (checked before any prefill;
                the conversation is left as it was).
        """
        first = not self.started
        before = list(self.engine.tokens) if self.started else []
        sent = before + self.pending + encode_turn(self.engine, message, first, self.system if first else "")
        stats = stats if stats is not None else SpeculativeStats()
        reply: list[int] = []
        try:
            for token in speculative_generate(self.engine, sent[len(before):], self.max_tokens, self.sampler,
                                              self.drafter, self.draft_length, stats=stats,
                                              continue_sequence=self.started):
                reply.append(token)
                yield token
        finally:
            if len(self.engine.tokens) > len(before):  # the turn was prefilled
                self._settle(sent + reply, stats.stopped_by == "stop_token")

    def _settle(self, conversation: list[int], stopped: bool) -> None:
        """After a reply: leave in the KV cache a prefix of ``conversation`` (every token sent and
        generated; a speculative step cut short may hold more), the end-of-turn token when the
        model emitted it (``stopped``), and keep the rest plus the turn's closing text pending."""
        engine = self.engine
        extra = len(engine.tokens) - len(conversation) - int(stopped)
        if extra > 0:
            engine.rollback(extra)
        in_cache = stopped and len(engine.tokens) == len(conversation) + 1
        close = self.engine.tokenizer.encode(turn_end(engine.chat_config["conv_template"], in_cache),
                                             add_special_tokens=False).ids
        self.pending = ([] if in_cache else conversation[len(engine.tokens):]) + close
        self.started = True
        self.turns += 1
