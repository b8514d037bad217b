"""The windowed attention kernels against a float64 reference: the CPU kernels compiled for LLVM,
the GPU kernels (the same TIR that CUDA, Metal and WebGPU get) translated to OpenCL C by TVM and
run on PoCL, whose work-groups, local memory and barriers behave as a GPU's.

Inputs: several sequences per call, grouped-query heads, shuffled pages, a sliding window of 8
(queries far past it, and queries whose window holds no cached key: output 0, lse -1e30) and full
layers.  PoCL has no float16 (``cl_khr_fp16``), so the GPU kernels run in float32 there; their
float16 builds are checked on a CUDA GPU (tests/models/test_gpu_cuda.py).
"""

from __future__ import annotations

import pytest

from pipeline.kernels import attention as ak
from tests.helpers.attention_cases import (
    EMPTY_LSE,
    H_KV,
    H_Q,
    WINDOW,
    cases,
    check,
    run_cpu,
    run_pocl,
    split_prefill_cases,
)
from tests.helpers.opencl import pocl_missing


def test_cases_cover_empty_windows_and_long_prefixes():
    """Guard against cases that cannot fail: some queries see no key, others a full window."""
    labelled = {label: case for label, _, _, case in cases(0, 32, "float32")}
    assert (labelled["paged-prefix-sliding"].lse == EMPTY_LSE).any()
    full, sliding = labelled["paged-prefix-full"].lse, labelled["paged-prefix-sliding"].lse
    assert (full != EMPTY_LSE).sum() > (sliding != EMPTY_LSE).sum()
    assert labelled["decode-sliding"].buffers["q_pos"].max() > 2 * WINDOW


@pytest.mark.compile
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("d", [32, 40])
def test_cpu_kernels_match_reference(d, dtype):
    for label, factory, extra, case in cases(d, d, dtype):
        output, lse = run_cpu(factory(H_KV, H_Q, d, dtype, WINDOW, **extra), case)
        try:
            check(case, output, lse, dtype)
        except AssertionError as err:
            raise AssertionError(f"{label}: {err}") from None


@pytest.mark.compile
@pytest.mark.skipif(bool(pocl_missing()), reason=f"needs PoCL: {pocl_missing()}")
@pytest.mark.parametrize("threads,d", [(32, 32), (16, 40), (64, 40)],
                         ids=["one-slice", "ragged-slices", "idle-threads"])
def test_gpu_kernels_match_reference_on_pocl(threads, d):
    """d 40 with 16 threads: three output slices per thread, the last one partial; 64 threads:
    threads past the head dimension stay idle in P.V but take part in the reductions."""
    for label, factory, extra, case in cases(threads + d, d, "float32"):
        output, lse = run_pocl(factory(H_KV, H_Q, d, "float32", WINDOW, threads=threads, **extra), case)
        try:
            check(case, output, lse, "float32")
        except AssertionError as err:
            raise AssertionError(f"{label}: {err}") from None


@pytest.mark.compile
@pytest.mark.skipif(bool(pocl_missing()), reason=f"needs PoCL: {pocl_missing()}")
def test_split_prefill_matches_reference_on_pocl():
    """A verify pass's keys split over blocks (flash-decoding's shape for a few query rows) and the
    many-row branch of the same function; 16 threads and head dim 40: partial output slices."""
    for label, factory, extra, case in split_prefill_cases(5, 40, "float32"):
        output, lse = run_pocl(factory(H_KV, H_Q, 40, "float32", WINDOW, threads=16, **extra), case)
        try:
            check(case, output, lse, "float32")
        except AssertionError as err:
            raise AssertionError(f"{label}: {err}") from None


def test_kernel_shape_rejects_bad_sizes():
    with pytest.raises(ValueError, match="power of two"):
        ak.paged_decode(1, 4, 32, "float32", 8, threads=48)
    with pytest.raises(ValueError, match="multiple of KV heads"):
        ak.ragged_prefill(3, 4, 32, "float32", 8)
