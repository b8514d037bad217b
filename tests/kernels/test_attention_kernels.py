"""The windowed attention kernels against a float64 reference: the CPU kernels compiled for LLVM,
the GPU kernels (the same TIR that CUDA, Metal and WebGPU get) translated to OpenCL C by TVM and
run on PoCL, whose work-groups, local memory and barriers behave as a GPU's.

Inputs: several sequences per call, grouped-query heads, shuffled pages, a sliding window of 8
(queries far past it, and queries whose window holds no cached key: output 0, lse -1e30) and full
layers.  PoCL has no float16 (``cl_khr_fp16``), so the GPU kernels run in float32 there; their
float16 builds are checked on a CUDA GPU (tests/models/test_gpu_cuda.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.kernels import attention as ak
from tests.kernels.attention_cases import (
    EMPTY_LSE,
    H_KV,
    H_Q,
    PAGE_SIZE,
    WINDOW,
    paged_case,
    ragged_case,
    run_cpu,
    run_pocl,
)
from tests.compile.opencl_launch import pocl_missing

TOLERANCE = {"float32": 2e-5, "float16": 5e-3}  # measured up to 2.2e-6 (float32) and 9.7e-4 (float16)


def cases(seed: int, d: int, dtype: str):
    """``(label, kernel factory keyword arguments, case)`` for every kernel, sliding and full."""
    rng = np.random.default_rng(seed)
    out = []
    for sliding in (True, False):
        kind = "sliding" if sliding else "full"
        out += [
            (f"ragged-{kind}", ak.ragged_prefill, {}, ragged_case(rng, d, dtype, sliding)),
            (f"paged-prefix-{kind}", ak.paged_prefill, {"page_size": PAGE_SIZE},
             paged_case(rng, d, dtype, sliding, causal=False)),
            (f"paged-causal-{kind}", ak.paged_prefill, {"page_size": PAGE_SIZE},
             paged_case(rng, d, dtype, sliding, causal=True)),
            (f"decode-{kind}", ak.paged_decode, {"page_size": PAGE_SIZE},
             paged_case(rng, d, dtype, sliding, causal=True, decode=True)),
        ]
    return out


def check(case, output, lse, dtype):
    empty = case.lse == EMPTY_LSE
    assert not np.isnan(output).any() and not np.isnan(lse).any()
    np.testing.assert_array_equal(lse[empty], np.float32(EMPTY_LSE))
    np.testing.assert_array_equal(output[empty], 0)
    np.testing.assert_allclose(lse[~empty], case.lse[~empty], atol=TOLERANCE[dtype], rtol=0)
    np.testing.assert_allclose(output.astype(np.float64), case.output, atol=TOLERANCE[dtype], rtol=0)


def test_cases_cover_empty_windows_and_long_prefixes():
    """Guard against cases that cannot fail: some queries see no key, others a full window."""
    labelled = {label: case for label, _, _, case in cases(0, 32, "float32")}
    assert (labelled["paged-prefix-sliding"].lse == EMPTY_LSE).any()
    assert (labelled["paged-prefix-full"].lse != EMPTY_LSE).sum() > (labelled["paged-prefix-sliding"].lse != EMPTY_LSE).sum()
    assert labelled["decode-sliding"].buffers["q_pos"].max() > 2 * WINDOW


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("d", [32, 40])
def test_cpu_kernels_match_reference(d, dtype):
    for label, factory, extra, case in cases(d, d, dtype):
        output, lse = run_cpu(factory(H_KV, H_Q, d, dtype, WINDOW, **extra), case)
        try:
            check(case, output, lse, dtype)
        except AssertionError as err:
            raise AssertionError(f"{label}: {err}") from None


@pytest.mark.skipif(bool(pocl_missing()), reason=f"needs PoCL: {pocl_missing()}")
@pytest.mark.parametrize("threads,d", [(32, 32), (16, 40), (64, 40)], ids=["one-slice", "ragged-slices", "idle-threads"])
def test_gpu_kernels_match_reference_on_pocl(threads, d):
    """d 40 with 16 threads: three output slices per thread, the last one partial; 64 threads:
    threads past the head dimension stay idle in P.V but take part in the reductions."""
    for label, factory, extra, case in cases(threads + d, d, "float32"):
        output, lse = run_pocl(factory(H_KV, H_Q, d, "float32", WINDOW, threads=threads, **extra), case)
        try:
            check(case, output, lse, "float32")
        except AssertionError as err:
            raise AssertionError(f"{label}: {err}") from None


def test_kernel_shape_rejects_bad_sizes():
    with pytest.raises(ValueError, match="power of two"):
        ak.paged_decode(1, 4, 32, "float32", 8, threads=48)
    with pytest.raises(ValueError, match="multiple of KV heads"):
        ak.ragged_prefill(3, 4, 32, "float32", 8)
