"""A tiny random Gemma 3 (window 8, sliding and global layers) built for ``cpu`` and ``webgpu``, its
``.wasm`` linked from the webgpu library and run with the package's weights through tvmjs with the
paged KV cache (MLC's calling convention: ``create_paged_kv_cache``, ``embed``, ``prefill``,
``decode``, ``batch_verify``) in Node on Dawn and in headless Chromium; every step's logits are
compared with the CPU build's.  Float32 (``q0f32``): SwiftShader has no shader-f16.

Tolerances: Dawn on Mesa lavapipe gave 4.6e-7 on logits of magnitude ~0.5, SwiftShader 1.7e-4 on a
single prefill and decode steps (its exp/tanh are less exact); a model that ignored the sliding
window is off by more than 1e-2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.kernels import PAGE_SIZE
from pipeline.runtime.engine import Engine
from tests.helpers import webgpu
from tests.helpers.gemma3 import make_tiny_gemma3
from tests.helpers.packages import build_package

pytestmark = pytest.mark.compile

ATOL = {"node": 1e-5, "chromium": 1e-3}
RNG = np.random.default_rng(7)
PROMPT = [int(t) for t in RNG.integers(4, 96, 20)]   # 20 tokens, past the window of 8
DECODE = [int(t) for t in RNG.integers(4, 96, 6)]
VERIFY = [int(t) for t in RNG.integers(4, 96, 3)]
SCENARIOS = {
    # one prefill chunk, then decode steps: attention over the chunk itself, then over pages
    "one-chunk": [("prefill", PROMPT)] + [("decode", [t]) for t in DECODE],
    # a second chunk and a verify pass read the cached prefix (paged prefill, then the state merge)
    "cached-prefix": ([("prefill", PROMPT[:12]), ("prefill", PROMPT[12:])] + [("decode", [t]) for t in DECODE[:4]]
                      + [("batch_verify", VERIFY)] + [("decode", [t]) for t in DECODE[4:]]),
}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """(package directory, its .wasm, the CPU build's logits per scenario and step)."""
    if webgpu.missing("node") and webgpu.missing("chromium"):
        pytest.skip(webgpu.missing("node"))
    root = tmp_path_factory.mktemp("webgpu-gemma")
    make_tiny_gemma3(root / "hf")
    pkg = build_package(root, root / "hf", targets=["cpu", "webgpu"])
    libs = json.loads((pkg / "mlc-mtp-config.json").read_text())["model_lib"]
    wasm = pkg / libs["webgpu"]  # the build links the .wasm (preset library: wasm)
    engine = Engine(pkg, target="cpu")
    run = {"prefill": engine.prefill, "decode": lambda ids: engine.decode(ids[0]), "batch_verify": engine.verify}
    reference = {}
    for name, steps in SCENARIOS.items():
        engine.reset()
        reference[name] = [np.atleast_2d(run[function](tokens)) for function, tokens in steps]
    return pkg, wasm, reference


@pytest.mark.parametrize("runtime,scenario", [
    ("node", "one-chunk"), ("node", "cached-prefix"), ("chromium", "one-chunk"), ("chromium", "cached-prefix")])
def test_logits_match_the_cpu_build(package, runtime, scenario, tmp_path):
    webgpu.require(runtime)
    pkg, wasm, reference = package
    chat = json.loads((pkg / "mlc-chat-config.json").read_text())
    plan = {"wasm": str(wasm), "llm": {
        "weights": str(pkg), "context_window": chat["context_window_size"],
        "prefill_chunk": chat["prefill_chunk_size"], "page_size": PAGE_SIZE,
        "steps": [{"function": function, "tokens": tokens} for function, tokens in SCENARIOS[scenario]]}}
    result = webgpu.run_plan(runtime, plan, tmp_path)
    assert result["gpu_errors"] == []
    for i, want in enumerate(reference[scenario]):
        got = result["outputs"][f"step{i}"].reshape(-1, want.shape[-1])[-len(want):]
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL[runtime],
                                   err_msg=f"step {i} ({SCENARIOS[scenario][i][0]})")
