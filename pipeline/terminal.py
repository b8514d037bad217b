"""What ``mlc-mtp generate`` and ``mlc-mtp chat`` show while a model runs: the reply streamed as
text (stop strings left out), a stats line after each reply, and the chat loop with its commands
and Ctrl-C handling.

The chat loop follows the interactive front ends people know (``mlc_llm chat``, ``ollama run``,
``llama-cli``): ``/help``, ``/reset``, ``/stats``, ``/bye`` (or ``/exit``); an empty line is
ignored; Ctrl-C during a reply stops that reply and returns to the prompt (at the prompt it says
how to quit); Ctrl-D quits after ending the line.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TextIO

from .errors import PipelineError

if TYPE_CHECKING:  # the runtime imports TVM; the CLI imports this module before loading anything
    from .runtime.chat import ChatSession
    from .runtime.speculative import SpeculativeStats

CHAT_HELP = """\
/help           this list
/reset          forget the conversation (the system message stays)
/stats          the last reply's speeds and how full the context window is
/bye, /exit     quit (Ctrl-D too)
Ctrl-C          stop the current reply
Empty lines are ignored; anything else is sent to the model."""


class TextOut:
    """Writes generated tokens as text while they arrive.

    Holds back an incomplete UTF-8 character (the tokenizer decodes it as U+FFFD) and any tail of
    the text that could be the start of a stop string; at the first stop string the text is cut
    there, the stop string and whatever followed it in the same token left out (llama.cpp's and
    OpenAI's semantics).  The tokens themselves are not changed: the token that completes a stop
    string is still the last one generated.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` (``decode(ids) -> str``).
        stops: stop strings (``--stop``, the package's ``generation.stop``).
        out: where the text goes (flushed after every write).
    """

    def __init__(self, tokenizer, stops: Iterable[str] = (), out: TextIO | None = None):
        self.tokenizer, self.stops = tokenizer, tuple(s for s in stops if s)
        self.out = out if out is not None else sys.stdout
        self.ids: list[int] = []
        self.shown = 0  # characters of the text written so far
        self.cut = False  # a stop string was found: nothing more is shown

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()

    def add(self, token: int) -> None:
        """Take one more token; write what can be shown of the text so far."""
        if self.cut:
            return
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return
        found = [text.find(s) for s in self.stops if s in text]
        if found:
            self.cut = True
            self._write(text[self.shown:max(min(found), self.shown)])
            return
        hold = max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        if len(text) - hold > self.shown:
            self._write(text[self.shown:len(text) - hold])
            self.shown = len(text) - hold

    def finish(self) -> None:
        """Write the held-back tail (no stop string came) and end the line."""
        if not self.cut:
            text = self.tokenizer.decode(self.ids)
            self._write(text[self.shown:])
        self._write("\n")


def stream(tokenizer, tokens: Iterable[int], stops: Iterable[str] = (), out: TextIO | None = None) -> None:
    """Write ``tokens`` as text (:class:`TextOut`), ending the line also when interrupted."""
    text = TextOut(tokenizer, stops, out)
    try:
        for token in tokens:
            text.add(token)
    finally:
        text.finish()


def speculative_report(stats: SpeculativeStats) -> str:
    """One clause on the speculative steps of a generation (empty when there were none)."""
    if not stats.steps:
        return ""
    rates = " ".join(f"{rate:.2f}" for rate in stats.acceptance_rate())
    return (f"; speculative: {stats.steps} steps, {stats.tokens_per_step:.2f} tokens/step, "
            f"acceptance per draft position {rates}, draft lengths {min(stats.draft_lengths)}-"
            f"{max(stats.draft_lengths)}")


def stats_line(stats: SpeculativeStats) -> str:
    """The bracketed line printed (on stderr) after a reply: prompt and generated tokens, prefill
    and decode tokens per second, what stopped it, and the speculative steps' figures."""
    return (f"[{stats.prompt_tokens} prompt tokens, prefill {stats.prefill_rate:.1f} tok/s; "
            f"{stats.generated_tokens} generated, decode {stats.decode_rate:.1f} tok/s; "
            f"stopped by {stats.stopped_by}{speculative_report(stats)}]")


def context_notice(stats: SpeculativeStats, context_window: int) -> str | None:
    """The one-line notice when a reply stopped because the context window was full, else None."""
    if stats.stopped_by != "context_window":
        return None
    return (f"note: the context window ({context_window} tokens) is full; the reply stops here "
            f"(a package built with a larger model.overrides.context_window_size holds more)")


class SIGINT:
    """Whether Ctrl-C came while a command ran (``mlc-mtp`` installs :meth:`handler` for SIGINT):
    a library that turns the ``KeyboardInterrupt`` into an error of its own (TVM raises an empty
    ``RuntimeError`` from inside a compile pass) is then still reported as an interruption."""

    seen = False

    @classmethod
    def handler(cls, signum, frame):
        cls.seen = True
        raise KeyboardInterrupt


class ReplyInterrupt:
    """While active, Ctrl-C (SIGINT) only sets :attr:`requested`; the reply loop checks it between
    tokens, so an interrupted reply ends at a token boundary with the KV cache consistent (an
    exception inside a forward pass would leave it half-updated)."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def active(self) -> Iterator[ReplyInterrupt]:
        self.requested = False

        def handler(signum, frame):
            self.requested = True

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C keeps its default
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def chat_loop(session: ChatSession, context_window: int, read: Callable[[str], str] | None = None,
              err: TextIO | None = None, out: TextIO | None = None) -> None:
    """Run the interactive chat on ``session`` until ``/bye``, ``/exit`` or end of input (module
    docstring).  ``read`` shows the prompt and returns a line (default :func:`input`, with line
    editing where ``readline`` is available); replies go to ``out`` (stdout), everything else to
    ``err`` (stderr)."""
    import builtins

    from .runtime.speculative import SpeculativeStats

    if read is None and sys.stdin.isatty():
        with contextlib.suppress(ImportError):  # line editing and history for input(), where Python has it
            import readline  # noqa: F401
    read = read if read is not None else builtins.input

    err = err if err is not None else sys.stderr
    out = out if out is not None else sys.stdout
    tokenizer = session.engine.tokenizer
    interrupt = ReplyInterrupt()
    last: SpeculativeStats | None = None
    while True:
        try:
            message = read(">>> ")
        except EOFError:
            out.write("\n")
            out.flush()
            return
        except KeyboardInterrupt:
            SIGINT.seen = False  # handled here: not a reason to stop the command
            out.write("\n")
            print("(Ctrl-D or /bye quits; Ctrl-C during a reply stops the reply)", file=err)
            continue
        command = message.strip()
        if not command:
            continue
        if command in ("/bye", "/exit"):
            return
        if command in ("/help", "/?"):
            print(CHAT_HELP, file=err)
            continue
        if command == "/reset":
            session.reset()
            print("(conversation cleared)", file=err)
            continue
        if command == "/stats":
            used = session.context_used
            print((stats_line(last) + "; " if last else "") + f"context: {used} of {context_window} tokens "
                  f"used, {session.turns} turn{'' if session.turns == 1 else 's'}", file=err)
            continue
        if command.startswith("/") and " " not in command:
            print(f"unknown command {command}; /help lists the commands", file=err)
            continue
        stats = SpeculativeStats()
        text = TextOut(tokenizer, out=out)
        with interrupt.active():
            reply = session.send(message, stats)
            try:
                for token in reply:
                    text.add(token)
                    if interrupt.requested:
                        stats.stopped_by = "interrupted"
                        break
            except PipelineError as error:  # e.g. the turn does not fit the context window
                print(f"error: {error} (/reset starts a new conversation)", file=err)
                continue
            finally:
                reply.close()  # an interrupted reply: the session keeps what was shown
        text.finish()
        last = stats
        print(stats_line(stats), file=err)
        notice = context_notice(stats, context_window)
        if notice:
            print(notice, file=err)
