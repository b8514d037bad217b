"""The CUDA build of a package against its CPU build, run side by side on a machine with an NVIDIA
GPU (skipped where TVM sees no CUDA device: CI has none).

Packages come prebuilt from ``$MLC_MTP_GPU_PACKAGES`` (a folder with ``tiny/`` and, for the slow
test, ``gemma3-270m-q4f16_1/``, each holding a ``cpu`` and a ``cuda`` library), for a GPU machine
with TVM's runtime only; without it they are built here, which needs a CUDA compiler.

- tiny Gemma 3 (float32, sliding window 8): prefill past the window and across prefill chunks,
  decode, verify + roll-back; logits within 1e-4 of the CPU build's.
- Gemma 3 270M q4f16_1 (slow): greedy continuations beside the CPU build's (logit gaps printed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.runtime.engine import Engine, target_device

try:
    target_device("cuda")
    NO_GPU = ""
except PipelineError as err:
    NO_GPU = str(err)

pytestmark = [pytest.mark.compile, pytest.mark.skipif(bool(NO_GPU), reason=f"needs a CUDA GPU: {NO_GPU}")]

ATOL = 1e-4
PREBUILT = os.environ.get("MLC_MTP_GPU_PACKAGES")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(CPU engine, CUDA engine)`` over the tiny Gemma 3 package."""
    if PREBUILT:
        package = Path(PREBUILT) / "tiny"
    else:
        from tests.helpers.gemma3 import make_tiny_gemma3
        from tests.helpers.packages import build_package

        root = tmp_path_factory.mktemp("gpu-tiny")
        make_tiny_gemma3(root / "hf")
        package = build_package(root, root / "hf", targets=["cpu", "cuda"])
    return Engine(package, target="cpu"), Engine(package, target="cuda")


def run_both(engines, steps):
    """Apply ``steps(engine)`` (a list of logits arrays) to both engines; return the largest gap."""
    results = [np.concatenate([np.atleast_2d(a) for a in steps(e)]) for e in engines]
    return float(np.abs(results[0] - results[1]).max())


def test_tiny_prefill_past_the_window_and_decode(tiny):
    ids = np.random.default_rng(1).integers(4, 96, size=52).tolist()

    def steps(engine):
        engine.reset()
        out = [engine.prefill(ids[:40])]  # window 8: most keys out of range
        return out + [engine.decode(t) for t in ids[40:]]

    gap = run_both(tiny, steps)
    print(f"tiny prefill + decode: max |cuda - cpu| = {gap:.2e}")
    assert gap < ATOL


def test_tiny_prefill_across_chunks(tiny):
    """150 tokens cross the 64-token prefill chunk twice; the window spans the chunk edges."""
    ids = np.random.default_rng(2).integers(4, 96, size=150).tolist()

    def steps(engine):
        engine.reset()
        return [engine.prefill(ids)]

    gap = run_both(tiny, steps)
    print(f"tiny chunked prefill: max |cuda - cpu| = {gap:.2e}")
    assert gap < ATOL


def test_tiny_verify_then_rollback(tiny):
    rng = np.random.default_rng(3)
    ids, draft = rng.integers(4, 96, size=30).tolist(), rng.integers(4, 96, size=5).tolist()

    def steps(engine):
        engine.reset()
        engine.prefill(ids)
        verified = engine.verify(draft)
        engine.rollback(3)
        return [verified, engine.decode(draft[2])]

    gap = run_both(tiny, steps)
    print(f"tiny verify + roll-back: max |cuda - cpu| = {gap:.2e}")
    assert gap < ATOL


def test_tiny_greedy_ids_on_the_device_equal_the_host_argmax(tiny):
    """``argmax_logits`` on CUDA (only ids copied back) against numpy's argmax of the same logits."""
    gpu = tiny[1]
    ids, draft = np.random.default_rng(4).integers(4, 96, size=30).tolist(), [7, 8, 9, 10, 11]
    gpu.reset()
    want = [int(np.argmax(gpu.prefill(ids))), np.argmax(gpu.verify(draft), axis=-1).tolist()]
    gpu.reset()
    assert [gpu.prefill_argmax(ids), gpu.verify_argmax(draft)] == want


@pytest.mark.slow
def test_gemma3_270m_q4f16_1_matches_cpu_build(tmp_path_factory):
    """Greedy continuations of a short and a 600+ token prompt (past the 512-token window), first
    logits.  Both builds compute in float16 with different summation orders, so the
    logits differ by rounding; the continuations must agree token for token."""
    if PREBUILT:
        package = Path(PREBUILT) / "gemma3-270m-q4f16_1"
    else:
        from pipeline.build import build
        from pipeline.config import load_config

        package = build(load_config("configs/gemma3-270m.yaml"), targets=["cpu", "cuda"], quantization="q4f16_1",
                        output=tmp_path_factory.mktemp("gpu-270m") / "pkg", progress=False, say=lambda _: None).output
    cpu, gpu = Engine(package, target="cpu"), Engine(package, target="cuda")
    long_prompt = "".join(f"Item {i}: {i} squared is {i * i}, and {i} cubed is {i ** 3}.\n" for i in range(1, 31))
    report, agree = [], True
    for prompt in ("The capital of France is", long_prompt):
        ids = [cpu.chat_config["bos_token_id"]] + cpu.tokenizer.encode(prompt, add_special_tokens=False).ids
        tokens, gaps = [], []
        for engine in (cpu, gpu):
            engine.reset()
            logits, seq = engine.prefill(ids), []
            first = logits
            for _ in range(32):
                seq.append(int(np.argmax(logits)))
                logits = engine.decode(seq[-1])
            tokens.append(seq)
            gaps.append(first)
        agree &= tokens[0] == tokens[1]
        report.append(f"{len(ids)}-token prompt: first logits max |cuda - cpu| = "
                      f"{np.abs(gaps[0] - gaps[1]).max():.3f} (logit range {gaps[0].min():.1f}..{gaps[0].max():.1f}); "
                      f"32 greedy tokens {'equal' if tokens[0] == tokens[1] else 'differ'}")
    print("\n".join(report))
    assert agree

