"""The real Gemma 3 270M (``q4f32_1``, from the packaged GGUF) built for ``cpu`` and ``webgpu``, its
``.wasm`` run through tvmjs on Dawn (Node) and SwiftShader (Chromium): a prefill of the prompt and
greedy decode steps (the CPU build's tokens fed to both) give the CPU build's logits and tokens.

Measured: Dawn on lavapipe within 3.6e-5 and SwiftShader within 1.9e-3 of the CPU build (logits span
-25..18), every step's argmax the same; a decode step takes 1.7 s on lavapipe and 8-15 s on
SwiftShader (both software renderers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.build import build
from pipeline.config import load_config
from pipeline.kernels import PAGE_SIZE
from pipeline.runtime.engine import Engine
from tests.helpers import webgpu

pytestmark = pytest.mark.slow
CONFIG = "configs/gemma3-270m.yaml"
PROMPT, DECODE_STEPS = "The capital of France is", 6
ATOL = {"node": 2e-4, "chromium": 1e-2}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(package, .wasm, steps, CPU logits per step)."""
    if webgpu.missing("node") and webgpu.missing("chromium"):
        pytest.skip(webgpu.missing("node"))
    root = tmp_path_factory.mktemp("webgpu-real")
    pkg = build(load_config(CONFIG), targets=["cpu", "webgpu"], output=root / "pkg", quantization="q4f32_1",
                progress=False, say=lambda _: None).output
    libs = json.loads((pkg / "mlc-mtp-config.json").read_text())["model_lib"]
    wasm = pkg / libs["webgpu"]  # the build links the .wasm (preset library: wasm)
    engine = Engine(pkg, target="cpu")
    ids = [engine.chat_config["bos_token_id"]] + engine.tokenizer.encode(PROMPT, add_special_tokens=False).ids
    steps, logits = [("prefill", ids)], [engine.prefill(ids)]
    for _ in range(DECODE_STEPS):
        token = int(logits[-1].argmax())
        steps.append(("decode", [token]))
        logits.append(engine.decode(token))
    return pkg, wasm, steps, logits


@pytest.mark.parametrize("runtime", webgpu.RUNTIMES)
def test_real_gemma3_matches_the_cpu_build(real, runtime, tmp_path):
    webgpu.require(runtime)
    pkg, wasm, steps, reference = real
    chat = json.loads((pkg / "mlc-chat-config.json").read_text())
    plan = {"wasm": str(wasm), "llm": {
        "weights": str(pkg), "context_window": chat["context_window_size"],
        "prefill_chunk": chat["prefill_chunk_size"], "page_size": PAGE_SIZE,
        "steps": [{"function": function, "tokens": tokens} for function, tokens in steps]}}
    result = webgpu.run_plan(runtime, plan, tmp_path)
    got = [result["outputs"][f"step{i}"].reshape(-1)[-len(want):] for i, want in enumerate(reference)]
    assert [int(g.argmax()) for g in got] == [int(w.argmax()) for w in reference]
    np.testing.assert_allclose(np.stack(got), np.stack(reference), rtol=0, atol=ATOL[runtime])
