"""Where generation stops besides ``max_tokens`` and stop tokens, plain and speculative alike: the
context window (a prompt that does not fit is refused before any prefill; a reply that fills the
window stops there, stats saying ``context_window``), a stop string (left out of the text shown,
the tokens unchanged), and a chat reply cut short by Ctrl-C (the conversation keeps what was shown)."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.runtime.chat import ChatSession, turn_end
from pipeline.runtime.draft_length import DraftLength
from pipeline.runtime.engine import Engine
from pipeline.runtime.sampling import Sampler
from pipeline.runtime.speculative import SpeculativeStats, speculative_generate
from tests.helpers.stand_ins import SelfDrafter


@pytest.fixture(scope="module")
def engine(tiny_package):
    eng = Engine(tiny_package[0])
    eng.stop_token_ids = set()  # random weights: let every run go on until the limit under test
    return eng


def run(engine, prompt, max_tokens, drafter=None):
    stats = SpeculativeStats()
    tokens = list(speculative_generate(engine, prompt, max_tokens, Sampler(), drafter, DraftLength(3), (), stats))
    return tokens, stats


@pytest.mark.parametrize("prompt_length", [200, 255, 256])
def test_a_reply_that_fills_the_context_window_stops_there(engine, tiny_package, prompt_length):
    window = engine.context_window
    assert window == 256
    prompt = [2] + [4 + i % 90 for i in range(prompt_length - 1)]
    plain, stats = run(engine, prompt, 500)
    assert stats.stopped_by == "context_window" and len(plain) == window - prompt_length + 1
    assert engine.length == window
    speculative, spec_stats = run(engine, prompt, 500, SelfDrafter(tiny_package[0]))
    assert speculative == plain and spec_stats.stopped_by == "context_window" and engine.length == window
    assert spec_stats.steps > 0 or prompt_length == window


def test_a_prompt_longer_than_the_window_is_refused_before_any_prefill(engine, monkeypatch):
    passes = []
    real = Engine.run_forward
    monkeypatch.setattr(Engine, "run_forward", lambda self, *a: passes.append(a) or real(self, *a))
    with pytest.raises(PipelineError, match=r"prompt of 257 tokens does not fit the context window \(256 tokens"):
        run(engine, [2] * 257, 4)
    assert passes == []


def test_generate_names_the_lengths_and_the_key_before_loading_more(capsys, tiny_package):
    status = main(["generate", str(tiny_package[0]), "--prompt", " ".join(["w5"] * 300)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("error: --prompt: 301 tokens, expected at most the context window of 256")
    assert "context_window_size" in err[0]


@pytest.fixture(scope="module")
def endless_package(tiny_package, tmp_path_factory):
    """The tiny package without stop tokens: its replies run until a limit."""
    package = tmp_path_factory.mktemp("endless") / "pkg"
    shutil.copytree(tiny_package[0], package)
    config = json.loads((package / "mlc-chat-config.json").read_text())
    config["eos_token_id"], config["conv_template"]["stop_token_ids"] = [], []
    (package / "mlc-chat-config.json").write_text(json.dumps(config))
    return package


def test_generate_says_when_the_window_stopped_it(capsys, endless_package):
    assert main(["generate", str(endless_package), "--prompt", " ".join(["w5"] * 250), "--max-tokens", "50"]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert "256 prompt tokens" not in err[-2] and "; 6 generated" in err[-2], err  # 251 prompt tokens
    assert "stopped by context_window" in err[-2], err
    assert err[-1].startswith("note: the context window (256 tokens) is full"), err
    assert captured.out.count("w") == 250 + 6  # the prompt's words and the six generated


# ----------------------------------------------------------------------------------------------
# stop strings: left out of the text, plain and speculative alike
# ----------------------------------------------------------------------------------------------

def generated_text(capsys, package, *flags):
    assert main(["generate", str(package), "--prompt", "w4 w5", "--max-tokens", "12", *flags]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err.strip().splitlines()[-1]


@pytest.mark.parametrize("speculative", [[], ["--speculative", "mtp"]], ids=["plain", "speculative"])
def test_a_stop_string_is_left_out_of_the_output(capsys, drafter_package, stand_in_mtp, speculative):
    full, stats = generated_text(capsys, drafter_package, "--speculative", "off")
    assert "stopped by max_tokens" in stats, stats
    words = full.split()
    stop = " " + words[4]  # the third generated word, with its space
    expected = full[:full.index(stop, len("w4 w5"))] + "\n"
    out, stats = generated_text(capsys, drafter_package, "--stop", stop, *speculative)
    assert out == expected and "stopped by stop_string" in stats
    if speculative:
        assert "speculative:" in stats


# ----------------------------------------------------------------------------------------------
# a chat reply cut short (Ctrl-C in the chat loop closes the reply's generator)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_drafter", [False, True], ids=["plain", "speculative"])
def test_a_cut_reply_stays_in_the_conversation_as_shown(tiny_package, with_drafter):
    engine = Engine(tiny_package[0])
    engine.stop_token_ids = set()
    drafter = SelfDrafter(tiny_package[0]) if with_drafter else None
    session = ChatSession(engine, Sampler(), 40, drafter, DraftLength(4, adaptive=False))
    stats = SpeculativeStats()
    reply = session.send("w5 w6", stats)
    shown = [next(reply) for _ in range(6)]
    stats.stopped_by = "interrupted"
    reply.close()
    close = engine.tokenizer.encode(turn_end(engine.chat_config["conv_template"], False),
                                    add_special_tokens=False).ids
    conversation = engine.tokens + session.pending
    assert conversation[-len(close) - len(shown):] == shown + close
    assert session.context_used == len(conversation) and session.turns == 1
    # the next turn continues that conversation, as a fresh session that is sent it all would
    after = list(session.send("w7"))
    assert engine.tokens[:len(conversation)] == conversation and len(after) > 0


def test_a_turn_that_does_not_fit_leaves_the_conversation_as_it_was(tiny_package):
    engine = Engine(tiny_package[0])
    session = ChatSession(engine, Sampler(), 4)
    list(session.send("w5"))
    tokens, pending = list(engine.tokens), list(session.pending)
    with pytest.raises(PipelineError, match="does not fit the context window"):
        list(session.send(" ".join(["w6"] * 300)))
    assert engine.tokens == tokens and session.pending == pending and session.turns == 1
    session.reset()
    assert session.context_used == 0 and session.turns == 0


def test_the_chat_stats_line_reports_the_speculative_steps(capsys, drafter_package, stand_in_mtp, monkeypatch):
    """With speculation each reply's stats line carries tokens per step and the acceptance."""
    messages = iter(["w4 w5", "", "/stats", "/bye"])
    monkeypatch.setattr("builtins.input", lambda _prompt: next(messages))
    assert main(["chat", str(drafter_package), "--speculative", "mtp", "--max-tokens", "6"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    replies = [line for line in err if line.startswith("[") and "prefill" in line]
    assert len(replies) == 2  # the reply's line and /stats repeating it; the empty line did nothing
    assert "speculative:" in replies[0] and "tokens/step" in replies[0]
    assert "acceptance per draft position" in replies[0]
    assert "context: " in replies[1] and "used, 1 turn" in replies[1]
