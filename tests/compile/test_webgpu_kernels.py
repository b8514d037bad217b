"""Our windowed attention kernels (ragged prefill, paged prefill over a cached prefix or causal,
decode; sliding and full) compiled with the ``webgpu`` preset, linked into one ``.wasm`` and
called one by one through tvmjs on real WebGPU implementations, on the random cases of
``tests/compile/attention_cases.py`` against its float64 reference: the kernels' WGSL, barriers
and launch sizes as a browser runs them (the PoCL test runs their OpenCL translation)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from pipeline.compile.targets import load_target
from pipeline.compile.wasm import link_wasm
from pipeline.models.attention_kernels_gpu import block_threads
from tests.compile.attention_cases import EMPTY_LSE, H_KV, H_Q, WINDOW
from tests.compile.test_attention_kernels import cases
from tests.web import webgpu

D = 32
# Measured: 1.2e-6 against float64 on both (Dawn on lavapipe, SwiftShader).
ATOL = 1e-5


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """(workdir, plan, {label: case}): every case's kernel in one system library."""
    if webgpu.missing("node") and webgpu.missing("chromium"):
        pytest.skip(webgpu.missing("node"))
    target = load_target("webgpu").tvm_target()
    threads = block_threads(int(target.attrs["max_num_threads"]))
    workdir = tmp_path_factory.mktemp("webgpu-kernels")
    funcs, plan, labelled = {}, {"wasm": "kernels.wasm", "tensors": {}, "calls": []}, {}
    for label, factory, extra, case in cases(7, D, "float32"):
        name = label.replace("-", "_")
        func = factory(H_KV, H_Q, D, "float32", WINDOW, threads=threads, **extra).with_attr("global_symbol", name)
        funcs[name], labelled[name] = func, case
        arrays = {**case.buffers, "output": np.zeros(case.output.shape, np.float32),
                  "lse": np.zeros(case.lse.shape, np.float32)}
        for key, value in arrays.items():
            value.tofile(workdir / f"{name}.{key}.bin")
            plan["tensors"][f"{name}.{key}"] = {"file": f"{name}.{key}.bin", "shape": list(value.shape),
                                                "dtype": str(value.dtype)}
        args = []
        for param in func.params:
            key = param.name.removeprefix("var_")
            args.append(f"{name}.{key}" if key in arrays else {"value": case.scalars[key], "dtype": str(param.ty)})
        plan["calls"].append({"function": name, "module": "system", "args": args,
                              "fetch": [f"{name}.output", f"{name}.lse"]})
    library = tvm.compile(tvm.IRModule(funcs).with_attr("system_lib_prefix", ""), target=target)
    library.export_library(str(workdir / "kernels.wasm"), fcompile=link_wasm)
    return workdir, plan, labelled


@pytest.mark.parametrize("runtime", webgpu.RUNTIMES)
def test_attention_kernels_match_reference_on_webgpu(kernels, runtime):
    webgpu.require(runtime)
    workdir, plan, labelled = kernels
    outputs = webgpu.run_plan(runtime, plan, workdir)["outputs"]
    failures = []
    for name, case in labelled.items():
        output, lse = outputs[f"{name}.output"].astype(np.float64), outputs[f"{name}.lse"]
        empty = case.lse == EMPTY_LSE
        error = max(np.abs(output - case.output).max(), np.abs(lse[~empty] - case.lse[~empty]).max(initial=0))
        if error > ATOL or not np.all(lse[empty] == np.float32(EMPTY_LSE)) or np.any(output[empty] != 0):
            failures.append(f"{name}: max error {error:.2e}")
    assert not failures, "; ".join(failures)
