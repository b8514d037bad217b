"""Our windowed attention kernels (ragged prefill, paged prefill over a cached prefix or causal,
decode; sliding and full) compiled with the ``webgpu`` preset, linked into one ``.wasm`` and
called one by one through tvmjs on real WebGPU implementations, on the random cases of
``tests/helpers/attention_cases.py`` against its float64 reference: the kernels' WGSL, barriers
and launch sizes as a browser runs them (the PoCL test runs their OpenCL translation).  Our
attention-state merge (``pipeline/kernels/merge_state.py``) runs beside them against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from pipeline.compile.targets import load_target
from pipeline.compile.wasm import link_wasm
from pipeline.kernels.attention_gpu import block_threads
from pipeline.kernels.merge_state import merge_state_gpu
from tests.helpers import webgpu
from tests.helpers.attention_cases import EMPTY_LSE, H_KV, H_Q, WINDOW, cases

pytestmark = pytest.mark.compile

D = 32
# Measured: 1.2e-6 against float64 on both (Dawn on lavapipe, SwiftShader).
ATOL = 1e-5
MERGE_ROWS, MERGE_HEADS = 6, 4


def merge_case(rng) -> tuple[dict, dict]:
    """Inputs of the state merge (one row's second part empty, as for a query with no cached key in
    its window) and the float64 result ``V``, ``S`` (``pipeline/kernels/merge_state.py``)."""
    inputs = {"v": rng.standard_normal((MERGE_ROWS, MERGE_HEADS, D)).astype(np.float32),
              "s": rng.uniform(-3, 6, (MERGE_ROWS, MERGE_HEADS)).astype(np.float32),
              "v_other": rng.standard_normal((MERGE_ROWS, MERGE_HEADS, D)).astype(np.float32),
              "s_other": rng.uniform(-3, 6, (MERGE_ROWS, MERGE_HEADS)).astype(np.float32)}
    inputs["s_other"][0] = EMPTY_LSE
    s, s_other = inputs["s"].astype(np.float64), inputs["s_other"].astype(np.float64)
    top = np.maximum(s, s_other)
    w, w_other = np.exp2(s - top), np.exp2(s_other - top)
    v = (w[..., None] * inputs["v"] + w_other[..., None] * inputs["v_other"]) / (w + w_other)[..., None]
    return inputs, {"v": v, "s": np.log2(w + w_other) + top}


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """(workdir, plan, {label: case}, merge reference): every case's kernel and the state merge in
    one system library."""
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
    merge_inputs, merged = merge_case(np.random.default_rng(3))
    funcs["merge_state"] = merge_state_gpu(D, "float32", threads // 16).with_attr("global_symbol", "merge_state")
    for key, value in merge_inputs.items():
        value.tofile(workdir / f"merge.{key}.bin")
        plan["tensors"][f"merge.{key}"] = {"file": f"merge.{key}.bin", "shape": list(value.shape), "dtype": "float32"}
    plan["calls"].append({"function": "merge_state", "module": "system",
                          "args": [f"merge.{key}" for key in ("v", "s", "v_other", "s_other")],
                          "fetch": ["merge.v", "merge.s"]})
    library = tvm.compile(tvm.IRModule(funcs).with_attr("system_lib_prefix", ""), target=target)
    library.export_library(str(workdir / "kernels.wasm"), fcompile=link_wasm)
    return workdir, plan, labelled, merged


@pytest.mark.parametrize("runtime", webgpu.RUNTIMES)
def test_attention_kernels_match_reference_on_webgpu(kernels, runtime):
    webgpu.require(runtime)
    workdir, plan, labelled, merged = kernels
    outputs = webgpu.run_plan(runtime, plan, workdir)["outputs"]
    merge_error = max(np.abs(outputs["merge.v"] - merged["v"]).max(), np.abs(outputs["merge.s"] - merged["s"]).max())
    failures = [f"merge_state: max error {merge_error:.2e}"] if merge_error > ATOL else []
    for name, case in labelled.items():
        output, lse = outputs[f"{name}.output"].astype(np.float64), outputs[f"{name}.lse"]
        empty = case.lse == EMPTY_LSE
        error = max(np.abs(output - case.output).max(), np.abs(lse[~empty] - case.lse[~empty]).max(initial=0))
        if error > ATOL or not np.all(lse[empty] == np.float32(EMPTY_LSE)) or np.any(output[empty] != 0):
            failures.append(f"{name}: max error {error:.2e}")
    assert not failures, "; ".join(failures)
