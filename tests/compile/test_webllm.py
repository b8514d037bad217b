"""Unmodified WebLLM (npm ``@mlc-ai/web-llm``, pinned in ``web/package.json``) chats with a tiny
Gemma 3 ``webgpu`` package in headless Chromium (SwiftShader), through its public API only
(``CreateMLCEngine`` with an ``appConfig`` entry for the package served on 127.0.0.1,
``chat.completions.create`` at temperature 0: ``web/run_webllm.mjs``), and its greedy reply equals
the CPU build's: the same text and token counts.  WebLLM goes through the library's
``create_tir_paged_kv_cache``, ``embed``, ``prefill``, ``decode``, ``softmax_with_temperature``,
``argsort_probs`` and ``sample_with_top_p`` (``pipeline/compile/mlc_functions.py``); the package's
mlc-chat-config.json gives it the chat template, stop tokens and tokenizer files."""

from __future__ import annotations

import json
import subprocess

import pytest

from pipeline.compile import wasm
from pipeline.runtime.chat import encode_turn
from pipeline.runtime.engine import Engine
from pipeline.runtime.generate import GenerationStats, generate
from pipeline.runtime.sampling import Sampler
from tests.helpers import webgpu
from tests.helpers.gemma3 import make_tiny_gemma3
from tests.helpers.packages import build_package

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


def test_webllm_greedy_reply_equals_the_cpu_build(package, tmp_path):
    pkg, lib = package
    engine = Engine(pkg, target="cpu")
    prompt = encode_turn(engine, MESSAGE, first=True)
    stats = GenerationStats()
    tokens = list(generate(engine, prompt, MAX_TOKENS, Sampler(temperature=0.0), stats=stats))
    want = engine.tokenizer.decode(tokens, skip_special_tokens=False)

    plan = {"package": str(pkg), "wasm": str(lib), "model_id": "mlc-mtp-tiny-gemma3",
            "messages": [{"role": "user", "content": MESSAGE}], "max_tokens": MAX_TOKENS, "temperature": 0}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    proc = subprocess.run(["node", str(wasm.WEB_DIR / "run_webllm.mjs"), str(tmp_path / "plan.json"),
                           str(tmp_path / "result.json")], capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, f"WebLLM run failed:\n{proc.stderr[-6000:]}"
    result = json.loads((tmp_path / "result.json").read_text())
    # WebLLM counts the prompt's text tokens, not the template's system_prefix_token_ids (<bos>)
    prefix = engine.chat_config["conv_template"]["system_prefix_token_ids"]
    assert prompt[:len(prefix)] == prefix and result["usage"]["prompt_tokens"] == len(prompt) - len(prefix)
    assert result["usage"]["completion_tokens"] == len(tokens)
    assert result["content"] == want
    assert result["finish_reason"] == ("stop" if stats.stopped_by == "stop_token" else "length")
