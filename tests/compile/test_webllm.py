"""Unmodified WebLLM (npm ``@mlc-ai/web-llm``, pinned in ``web/package.json``) chats with a tiny
Gemma 3 ``webgpu`` package in headless Chromium (SwiftShader), through its public API only
(``CreateMLCEngine`` with an ``appConfig`` entry for the package served on 127.0.0.1,
``chat.completions.create`` at temperature 0: ``web/run_webllm.mjs``), and its greedy reply equals
the CPU build's: the same text and token counts.  WebLLM goes through the library's
``create_tir_paged_kv_cache``, ``embed``, ``prefill``, ``decode``, ``softmax_with_temperature``,
``argsort_probs`` and ``sample_with_top_p`` (``pipeline/compile/mlc_functions.py``); the package's
mlc-chat-config.json gives it the chat template, stop tokens and tokenizer files.

``mlc-mtp serve-web`` serves the same package with its chat page (``web/chat.html``); a user's
session on that page in headless Chromium (``web/chat_in_chromium.mjs``: the prompt typed, Enter)
streams the same greedy reply and shows the package's settings and the tokens/s; Ctrl-C (SIGINT)
stops the server with one line and exit status 130."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from pipeline.compile import wasm
from pipeline.runtime.chat import encode_turn
from pipeline.runtime.engine import Engine
from pipeline.runtime.generate import GenerationStats, generate
from pipeline.runtime.sampling import Sampler
from tests.helpers import webgpu
from tests.helpers.gemma3 import make_tiny_gemma3
from tests.helpers.packages import build_package
from tests.helpers.terminal import ROOT, cli_env

pytestmark = pytest.mark.compile

MESSAGE = "w17 w42 w5 w63 w8 w29"
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """(package directory, its .wasm) of the tiny Gemma 3 built for cpu and webgpu."""
    webgpu.require("chromium")
    if not (wasm.WEB_DIR / "node_modules" / "@mlc-ai" / "web-llm").is_dir():
        pytest.skip(f"npm package @mlc-ai/web-llm not installed in web/: {webgpu.SETUP}")
    root = tmp_path_factory.mktemp("webllm")
    make_tiny_gemma3(root / "hf")
    pkg = build_package(root, root / "hf", targets=["cpu", "webgpu"])
    libs = json.loads((pkg / "mlc-mtp-config.json").read_text())["model_lib"]
    return pkg, pkg / libs["webgpu"]


def cpu_reply(pkg):
    """(engine, prompt ids, reply tokens, reply text, stats) of the CPU build's greedy reply to MESSAGE."""
    engine = Engine(pkg, target="cpu")
    prompt = encode_turn(engine, MESSAGE, first=True)
    stats = GenerationStats()
    tokens = list(generate(engine, prompt, MAX_TOKENS, Sampler(temperature=0.0), stats=stats))
    return engine, prompt, tokens, engine.tokenizer.decode(tokens, skip_special_tokens=False), stats


def assert_same_reply(engine, prompt, tokens, stats, usage, finish_reason):
    """WebLLM's usage and finish reason agree with the CPU build's reply."""
    # WebLLM counts the prompt's text tokens, not the template's system_prefix_token_ids (<bos>)
    prefix = engine.chat_config["conv_template"]["system_prefix_token_ids"]
    assert prompt[:len(prefix)] == prefix and usage["prompt_tokens"] == len(prompt) - len(prefix)
    assert usage["completion_tokens"] == len(tokens)
    assert finish_reason == ("stop" if stats.stopped_by == "stop_token" else "length")


def test_webllm_greedy_reply_equals_the_cpu_build(package, tmp_path):
    pkg, lib = package
    engine, prompt, tokens, want, stats = cpu_reply(pkg)

    plan = {"package": str(pkg), "wasm": str(lib), "model_id": "mlc-mtp-tiny-gemma3",
            "messages": [{"role": "user", "content": MESSAGE}], "max_tokens": MAX_TOKENS, "temperature": 0}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    proc = subprocess.run(["node", str(wasm.WEB_DIR / "run_webllm.mjs"), str(tmp_path / "plan.json"),
                           str(tmp_path / "result.json")], capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, f"WebLLM run failed:\n{proc.stderr[-6000:]}"
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["content"] == want
    assert_same_reply(engine, prompt, tokens, stats, result["usage"], result["finish_reason"])


def test_serve_web_chat_page_streams_the_cpu_builds_greedy_reply(package, tmp_path):
    pkg, _ = package
    engine, prompt, tokens, want, stats = cpu_reply(pkg)
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve-web", str(pkg), "--port", "0"],
                              cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, f"no address in {line!r}"
        proc = subprocess.run(["node", str(wasm.WEB_DIR / "chat_in_chromium.mjs"), url.group(0),
                               str(tmp_path / "result.json"), MESSAGE, "temperature=0", f"max_tokens={MAX_TOKENS}"],
                              capture_output=True, text=True, timeout=1200, check=False)
        assert proc.returncode == 0, f"chat page run failed:\n{proc.stderr[-6000:]}"
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 130 and err.splitlines() == ["serve-web: interrupted (the server stopped)"], err
    result = json.loads((tmp_path / "result.json").read_text())
    runtime = json.loads((pkg / "mlc-mtp-config.json").read_text())
    assert result["settings_shown"] == {"temperature": engine.chat_config["temperature"],
                                        "top_p": engine.chat_config["top_p"],
                                        "max_tokens": runtime["generation"]["max_tokens"]}
    reply = result["reply"]
    assert reply["content"] == want and result["shown"] == want
    assert result["streamed"] >= 2  # the text grew as tokens came, not in one piece
    assert_same_reply(engine, prompt, tokens, stats, reply["usage"], reply["finish_reason"])
    decode = reply["usage"]["extra"]["decode_tokens_per_s"]
    shown = re.search(r"decode ([\d.]+) tokens/s", result["stats"])
    assert shown and float(shown.group(1)) == pytest.approx(decode, rel=0.06), result["stats"]
