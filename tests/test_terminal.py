"""The command line as a user meets it: the chat loop in a pseudo-terminal (commands, empty lines,
Ctrl-C stopping a reply, Ctrl-D), Ctrl-C during ``generate`` and during a build's compile stage
(one line, exit status 130, nothing half-written), and the text shown for stop strings."""

from __future__ import annotations

import re
import sys
import time

import pytest

from pipeline.terminal import TextOut
from tests.helpers.packages import write_config
from tests.helpers.terminal import Terminal, interrupt_when, slow_cli


class Pieces:
    """A tokenizer whose token ``i`` decodes to ``pieces[i]``; an odd count of ``"#"`` pieces in a
    row decodes as an incomplete character (U+FFFD), as a split UTF-8 sequence does."""

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids):
        text = "".join(self.pieces[i] for i in ids)
        return text.replace("##", "é").replace("#", "\ufffd")


def shown(pieces, stops, ids=None):
    """What :class:`TextOut` writes for the tokens ``ids`` (default: all), and after each token."""
    written = []
    out = type("Out", (), {"write": lambda self, t: written.append(t), "flush": lambda self: None})()
    text = TextOut(Pieces(pieces), stops, out)
    steps = []
    for token in ids if ids is not None else range(len(pieces)):
        text.add(token)
        steps.append("".join(written))
    text.finish()
    return "".join(written), steps


def test_a_stop_string_and_what_follows_it_are_left_out():
    assert shown(["The", " end", ". More", " text"], ["."])[0] == "The end\n"
    assert shown(["a", "b", "STO", "P", "c"], ["STOP"])[0] == "ab\n"  # a stop string split over tokens
    assert shown(["a", "b", "STO", "P", "c"], ["X", "OP"])[0] == "abST\n"  # the earliest stop cuts


def test_a_possible_stop_string_is_held_back_until_decided():
    text, steps = shown(["a", "ST", "x"], ["STOP"])
    assert steps == ["a", "a", "aSTx"] and text == "aSTx\n"
    text, steps = shown(["a", "ST"], ["STOP"])  # the output ended: the held text is shown
    assert text == "aST\n"


def test_an_incomplete_character_waits_for_its_end():
    text, steps = shown(["x", "#", "#", "y"], [])
    assert steps == ["x", "x", "xé", "xéy"] and text == "xéy\n"


# ----------------------------------------------------------------------------------------------
# the chat loop in a pseudo-terminal
# ----------------------------------------------------------------------------------------------

PROMPT = ">>> "
ENTER = "\r"  # what a terminal's Enter key sends


@pytest.fixture
def chat(tiny_package):
    """``mlc-mtp chat`` on the tiny package in a terminal, replies slow (50 ms per token) and long
    enough (200 tokens) to be interrupted."""
    term = Terminal(slow_cli(["chat", str(tiny_package[0]), "--max-tokens", "200"], 0.05))
    term.expect(PROMPT)
    yield term
    term.close()


def test_chat_commands_empty_lines_ctrl_c_and_ctrl_d(chat):
    for line in ("", "   "):  # empty lines: ignored, the prompt comes back
        chat.send(line + ENTER)
        assert chat.expect(PROMPT)[:-len(PROMPT)].strip() == line.strip()  # only the echo
    chat.send("/help" + ENTER)
    help_text = chat.expect(PROMPT)
    for command in ("/reset", "/stats", "/bye", "Ctrl-C"):
        assert command in help_text
    chat.send("/nonsense" + ENTER)
    assert "unknown command /nonsense" in chat.expect(PROMPT)

    chat.send("w4 w5" + ENTER)
    chat.expect("w4 w5\n")  # the terminal's echo
    chat.expect(" w")  # the reply is streaming
    chat.send("\x03")  # Ctrl-C: stops the reply, not the session
    reply = chat.expect(PROMPT)
    assert "stopped by interrupted" in reply and "generated" in reply and "decode" in reply
    stopped_after = int(reply.split("; ")[1].split(" generated")[0])
    assert 1 <= stopped_after < 200

    chat.send("/stats" + ENTER)
    stats = chat.expect(PROMPT)
    assert "stopped by interrupted" in stats and "used, 1 turn" in stats
    used = int(stats.split("context: ")[1].split(" of ")[0])
    assert used > stopped_after

    time.sleep(0.5)  # the prompt is on screen before input() reads: let the line editor take the key
    chat.send("\x03")  # Ctrl-C at the prompt: a hint, the session goes on
    assert "Ctrl-D or /bye quits" in chat.expect(PROMPT)

    chat.send("/reset" + ENTER)
    assert "conversation cleared" in chat.expect(PROMPT)
    chat.send("/stats" + ENTER)
    assert "context: 0 of 256 tokens used, 0 turns" in chat.expect(PROMPT)

    chat.send("\x04")  # Ctrl-D: quits, ending the prompt's line
    assert chat.wait() == 0
    assert chat.output.endswith(PROMPT + "\n"), chat.output[-80:]


@pytest.mark.parametrize("command", ["/bye", "/exit"])
def test_chat_quits_on_bye_and_exit(chat, command):
    chat.send(f"{command}" + ENTER)
    assert chat.wait() == 0


def test_chat_prints_a_stats_line_after_each_reply(tiny_package):
    term = Terminal(slow_cli(["chat", str(tiny_package[0]), "--max-tokens", "3"], 0.0))
    term.expect(PROMPT)
    for message in ("w4 w5", "w6"):
        term.send(message + ENTER)
        reply = term.expect(PROMPT)
        assert "prompt tokens, prefill" in reply and "tok/s" in reply and "stopped by" in reply
    term.send("/bye" + ENTER)
    assert term.wait() == 0
    term.close()


# ----------------------------------------------------------------------------------------------
# Ctrl-C (SIGINT) during generate and during a build's compile stage
# ----------------------------------------------------------------------------------------------

def test_ctrl_c_during_generate_ends_the_line_and_exits_130(tiny_package):
    status, out, err = interrupt_when(
        slow_cli(["generate", str(tiny_package[0]), "--prompt", "w4 w5", "--max-tokens", "200"], 0.05), " w", 0.3)
    assert status == 130
    assert err.strip().splitlines()[-1] == "generate: interrupted", err
    assert "Traceback" not in err
    assert out.startswith("w4 w5") and out.endswith("\n")


@pytest.mark.compile
def test_ctrl_c_during_the_compile_stage_leaves_package_and_cache_as_they_were(tiny_config, tmp_path):
    import os
    from pathlib import Path

    config = write_config(tmp_path / "c.yaml", tiny_config.source_path(), output=str(tmp_path / "pkg"))
    cache = Path(os.environ["MLC_MTP_CACHE"])
    before = set(os.listdir(cache))
    status, out, err = interrupt_when([sys.executable, "-m", "pipeline.cli", "build", str(config), "--quiet",
                                       "--force"], "convert: done", 1.0)
    assert status == 130, (out, err)
    # TVM's own C++ log lines ("[hh:mm:ss] /project/src/...: Warning: ...") are TVM's, not the CLI's
    lines = [line for line in err.strip().splitlines() if not re.match(r"\[[\d:]+\] /project/", line)]
    assert lines == ["build: interrupted (the package and the stage cache are as before; stages that "
                     "finished stay cached)"], err
    assert "compile[cpu]: compiling with TVM" in out and "compile[cpu]: done" not in out  # interrupted in it
    assert not (tmp_path / "pkg").exists() and not list(tmp_path.glob(".pkg*"))
    after = set(os.listdir(cache))
    assert not [name for name in after if name.startswith(".")], after  # no temporary stage directory
    assert not any(name.startswith("compile") for name in after - before)
