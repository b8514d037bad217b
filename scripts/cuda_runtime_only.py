"""Pytest plugin (``-p cuda_runtime_only``) for a GPU machine with TVM's runtime only.

A library built without a CUDA driver keeps its kernels as CUDA C; TVM's CUDA runtime compiles
them when the library loads through the global ``tvm_callback_cuda_compile(source) -> bytes``
(``src/backend/cuda/runtime/cuda_module.cc``, TVM 0.26).  TVM's own callback
(``tvm.support.nvcc``) reads the architecture from the current compile target, which needs the
compiler library; with ``TVM_USE_RUNTIME_LIB=1`` this one compiles with NVRTC (``cuda-bindings``)
for GPU 0's compute capability instead and returns a cubin.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm.support import nvcc

from pipeline.runtime.engine import target_device


def device_arch() -> str:
    """``sm_XY`` of the CUDA device that ``Engine(..., target="cuda")`` runs on (GPU 0)."""
    return "sm_" + target_device("cuda").compute_version.replace(".", "")


@tvm_ffi.register_global_func("tvm_callback_cuda_compile", override=True)
def compile_for_device(source: str) -> bytes:
    """Compile a library's CUDA C to a cubin for this machine's GPU (NVRTC)."""
    return bytes(nvcc.compile_cuda(source, target_format="cubin", arch=device_arch(), compiler="nvrtc"))


def pytest_report_header(config):
    """Say which TVM, GPU and architecture the run uses."""
    return f"TVM {tvm.__version__} runtime only; CUDA kernels compiled by NVRTC for {device_arch()}"
