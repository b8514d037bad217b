"""Every OpenCL kernel of a tiny Gemma 3 and a tiny Gemma 4 (E4B's shape) built for the ``android``
preset, run one by one on PoCL (a CPU OpenCL: work-groups, local memory and barriers as on a
phone's GPU) and compared with the same function of the model built for the ``cpu`` preset (LLVM)
on the same random inputs.

Both builds go through the project's pipeline (``export_model`` + ``relax_pipeline``) in ``q0f32``:
PoCL has no ``cl_khr_fp16``, so the float16 kernels of a ``q4f16_1`` Android build are compiled
(tests/compile/test_gpu_targets.py) but not run here.  Kernels: every device function of the
library: those the Relax functions (``embed``, ``prefill``, ``decode``, ``batch_prefill``,
``batch_decode``, ``batch_verify``, ``get_logits`` ...) call, the KV-cache kernels the runtime calls
for them (TVM's ``split_rotary`` and ``transpose_append``, our windowed ragged/paged prefill and
decode, our state merge), the cache's other kernels (TVM's tree attention, page copy, compaction,
debug read, MLA append), and reshapes TVM compiles although Relax calls ``vm.builtin.reshape``.
Launch sizes and scalar arguments come from the compiled host code (tests/helpers/opencl.py);
every work-group must stay within the preset's ``max_num_threads`` (256: Adreno rejects larger
ones with CL_INVALID_WORK_GROUP_SIZE) and its local memory within ``max_shared_memory_per_block``.

Inputs: float buffers standard normal (outputs too, so an element a kernel fails to write shows
up); index buffers valid: token ids and positions below every extent of the function's float
buffers, page tables, cache slots and token trees built as the runtime builds them.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax

from pipeline.compile.compiler import export_model, relax_pipeline
from pipeline.compile.targets import load_target
from pipeline.kernels.logit_processor import logit_processors
from pipeline.models.registry import get_family
from pipeline.quantization import get_scheme
from tests.helpers.attention_cases import paged_case, ragged_case
from tests.helpers.gemma3 import TINY_CONFIG
from tests.helpers.opencl import PoCL, build_opencl, call_tvm, evaluate, param_keys, pocl_missing

pytestmark = [pytest.mark.compile,
              pytest.mark.skipif(bool(pocl_missing()), reason=f"needs PoCL: {pocl_missing()}")]

# Gemma 3 (tests.helpers.gemma3.TINY_CONFIG: sliding and full layers) and two Gemma 4 shapes of
# tests/helpers/gemma4.py (head_dim 16 on sliding and 32 on full layers in one cache of 32):
# E4B (per-layer embeddings, KV sharing) and 26B-A4B (mixture of experts: router softmax, top-k,
# expert gathers).
MODELS = ("gemma3", "gemma4-e4b", "gemma4-26b-a4b")
# Values of the symbolic sizes: 19 rows cross tile boundaries (8, 16, 32) without filling them.
SIZES = {"seq_len": 19, "batch_size": 3, "n": 19, "h": TINY_CONFIG["num_attention_heads"], "ntoken": 19, "seqlen": 19,
         "num_pages": 9, "page_size": 16, "total_copy_length": 7,
         # MLC's logit processors, softmax and row gathers (pipeline/compile/mlc_functions.py): the
         # vocabulary not a multiple of 32 (the bitmask's words) and of one softmax chunk
         "vocab_size": 75, "vocab": 75, "chunks": 1, "batch": 3, "num_seq": 3, "num_token": 7, "src_rows": 6,
         "dst_rows": 5, "b": 4}
# Float32 results of the same function on PoCL and LLVM (different reduction orders, exp/tanh):
# measured up to 1.9e-5 on matmul outputs of magnitude ~10, i.e. 46% of atol + rtol * |value|
# (attention 2.9e-6, norms 1e-6, copies 0); a wrong index or a missed write is off by O(1).
RTOL, ATOL = 1e-5, 1e-5


def _signature(func) -> list[str]:
    """Each parameter's shape and dtype (buffers) or type (scalars), as text."""
    return [f"{p.shape} {p.dtype}" if hasattr(p, "shape") else str(p.ty) for p in func.params]


RESHAPE = re.compile(r"(fused_)?(reshape\d*_?)+")


def _cpu_twin(name: str, cpu: dict, gpu_func=None) -> str:
    """The CPU build's function for GPU function ``name``: the same name, or the KV-cache kernel
    built for the CPU (``*_gpu`` -> ``*_cpu``, ``X`` -> ``X_cpu``; TVM names its CPU state merge
    ``merge_state_inplace_cpu``).  TVM numbers its reshapes in the order it meets them, and the CPU
    library has functions the Android one lacks (MLC's samplers), so a reshape's twin is the CPU
    reshape with the same parameters (``gpu_func``'s signature)."""
    if gpu_func is not None and RESHAPE.fullmatch(name):
        wanted = _signature(gpu_func)
        for candidate in [name] + sorted(cpu):
            if RESHAPE.fullmatch(candidate) and _signature(cpu[candidate]) == wanted:
                return candidate
    for candidate in (name, name.replace("_gpu", "_cpu"), f"{name}_cpu"):
        if candidate in cpu:
            return candidate
    if name == "tir_attention_merge_state_gpu":
        return "merge_state_inplace_cpu"
    raise KeyError(f"no CPU function for {name}")


def _config(model: str):
    """(family, config) of a tiny model of :data:`MODELS`."""
    if model == "gemma3":
        family = get_family("gemma3")
        return family, family.config_cls(**TINY_CONFIG)
    pytest.importorskip("transformers", reason="the tiny Gemma 4 config is made with transformers")
    from tests.helpers.gemma4 import tiny_gemma4_config

    family = get_family("gemma4")
    hf = tiny_gemma4_config(model.removeprefix("gemma4-")).to_dict()
    return family, family.config_from_hf(hf, context_window_size=256, prefill_chunk_size=64)


def _lowered(model: str, preset_name: str):
    family, config = _config(model)
    preset = load_target(preset_name)
    mod, _, _ = export_model(family, config, get_scheme("q0f32"), preset, "tiny")
    target = preset.tvm_target()
    return relax_pipeline(target, preset.schedule)(mod), target


def _device_funcs(mod) -> dict:
    return {gv.name_hint: f for gv, f in mod.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc) and not f.attrs.get("tirx.is_host_func")}


def _reached(mod, entry: str) -> set:
    """Names of the functions ``entry`` calls, transitively."""
    seen, pending = set(), [entry]
    while pending:
        func = mod[pending.pop()]
        if isinstance(func, relax.Function):
            for gv in relax.analysis.all_global_vars(func):
                if gv.name_hint not in seen:
                    seen.add(gv.name_hint)
                    pending.append(gv.name_hint)
    return seen


@pytest.fixture(scope="module", params=MODELS)
def builds(request):
    """Both builds of a model: the Android kernels compiled for OpenCL and loaded into PoCL, their
    CPU twins compiled for LLVM in one library."""
    android, target = _lowered(request.param, "android")
    cpu, cpu_target = _lowered(request.param, "cpu")
    gpu_funcs, cpu_funcs = _device_funcs(android), _device_funcs(cpu)
    twins = {name: _cpu_twin(name, cpu_funcs, func) for name, func in gpu_funcs.items()}
    build = build_opencl(gpu_funcs, target)
    library = tvm.compile(tvm.IRModule({twin: cpu_funcs[twin] for twin in twins.values()}), target=cpu_target)
    return {"model": request.param, "android": android, "target": target, "gpu": gpu_funcs, "cpu": cpu_funcs,
            "twins": twins, "build": build, "pocl": PoCL(build), "library": library}


def _shape(param, env: dict, sizes: dict) -> tuple:
    """``param``'s shape, its free variables bound from ``sizes`` (and kept in ``env``)."""

    def bind(node):
        if type(node).__name__ == "Var" and node not in env:
            env[node] = sizes[node.name]

    for dim in param.shape:
        tvm.tirx.stmt_functor.post_order_visit(dim, bind)
    return tuple(int(evaluate(dim, env)) for dim in param.shape)


def _slots(rng, count: int, num_pages: int) -> np.ndarray:
    """``count`` distinct cache slots (page * 16 + offset) of ``num_pages`` pages."""
    return rng.permutation(num_pages * SIZES["page_size"])[:count].astype(np.int32)


def generic_inputs(func, rng, sizes: dict = SIZES) -> tuple[dict, dict]:
    """Arrays for every buffer parameter (shapes from ``sizes``) and scalars (a size when a
    shape uses them, else 1 for ints and 0.5 for floats).  Floats are standard normal;
    ``position_map`` of a function with ``pages`` holds distinct cache slots; other ints lie below
    the smallest extent (above 1) of the function's float buffers (of all its buffers if it has no
    float one), so that every gather stays in bounds."""
    env, arrays, scalars = {}, {}, {}
    params = list(zip(func.params, param_keys(func)))
    buffers = [(p, key) for p, key in params if not isinstance(p.ty, tvm.ir.PrimType)]
    shapes = {key: _shape(p, env, sizes) for p, key in buffers}
    extents = {kind: [n for p, key in buffers if kind in str(p.dtype) for n in shapes[key] if n > 1]
               for kind in ("float", "")}
    bound = min(extents["float"] or extents[""] or [2])
    for param, key in buffers:
        shape, dtype = shapes[key], str(param.dtype)
        if "float" in dtype:
            arrays[key] = rng.standard_normal(shape).astype(dtype)
        elif key == "position_map" and "pages" in shapes:
            arrays[key] = _slots(rng, int(np.prod(shape)), shapes["pages"][0]).reshape(shape)
        else:
            arrays[key] = rng.integers(0, bound, shape).astype(dtype)
    for param, key in params:
        if isinstance(param.ty, tvm.ir.PrimType):
            scalars[key] = env.get(param, 0.5 if "float" in str(param.ty) else 1)
    return arrays, scalars


def _tree(rng, sizes) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, order)`` of one random token tree per size (at least 3): nodes 1 and 2 are children
    of the root, later nodes of a random earlier node; ``order[i]`` = (entry, exit) of node ``i``'s
    depth-first visit, and a node sees node ``j`` when its entry lies in ``[entry_j, exit_j)``
    (TVM's ``_check_tree_order``)."""
    rows = []
    for size in sizes:
        parent = [-1, 0, 0] + [int(rng.integers(0, i)) for i in range(3, size)]
        children = {i: [c for c in range(size) if parent[c] == i] for i in range(size)}
        entry, exit_, clock, stack = [0] * size, [0] * size, 0, [(0, False)]
        while stack:
            node, done = stack.pop()
            if done:
                exit_[node] = clock
                continue
            entry[node], clock = clock, clock + 1
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(children[node]))
        rows += list(zip(entry, exit_))
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32), np.array(rows, np.int32)


def _attention_cases(name: str, rng) -> list:
    """Structured inputs of the attention kernels, sliding (negative ``sm_scale``) and full."""
    d, out = 32, []  # attention_cases' heads (2 KV, 4 query) and the caches' head_dim
    for sliding in (True, False):
        kind = "sliding" if sliding else "full"
        if name.startswith("windowed_ragged_prefill"):
            out.append((kind, ragged_case(rng, d, "float32", sliding)))
        elif name.startswith("windowed_paged_prefill"):
            out += [(f"prefix-{kind}", paged_case(rng, d, "float32", sliding, causal=False)),
                    (f"causal-{kind}", paged_case(rng, d, "float32", sliding, causal=True))]
        elif name.startswith("windowed_paged_decode"):
            out.append((kind, paged_case(rng, d, "float32", sliding, causal=True, decode=True)))
    return [(label, dict(case.buffers), dict(case.scalars)) for label, case in out]


def _with_outputs(arrays: dict, rng) -> dict:
    """``arrays`` plus random ``output`` (shaped as ``q``) and ``lse`` (rows x heads)."""
    return {**arrays, "output": rng.standard_normal(arrays["q"].shape).astype(np.float32),
            "lse": rng.standard_normal(arrays["q"].shape[:2]).astype(np.float32)}


def cases(name: str, func, rng) -> list:
    """``(label, arrays, scalars)`` for GPU function ``name``; outputs start random."""
    if name.startswith("windowed_"):
        return [(label, _with_outputs(arrays, rng), scalars) for label, arrays, scalars in _attention_cases(name, rng)]
    if name in ("tree_attn_paged_kv", "batch_tree_attn"):
        sizes = (5, 4)
        indptr, order = _tree(rng, sizes)
        if name == "tree_attn_paged_kv":  # the tree's tokens sit in the pages after a cached prefix
            case = paged_case(rng, 32, "float32", False, causal=True, prefix=(20, 3),
                              q_lengths=sizes)
            arrays = {**case.buffers, "k_rope_pos_offset": case.buffers["k_pos_offset"],
                      "q_rope_position": case.buffers["q_pos"], "tree_order_indptr": indptr, "tree_order": order}
        else:
            case = ragged_case(rng, 32, "float32", False, q_lengths=sizes)
            arrays = {**case.buffers, "q_rope_position": case.buffers["q_pos"], "mn_indptr": indptr, "mask": order}
        del arrays["k_pos_offset"], arrays["q_pos"]
        scalars = {"rotary_mode": 0, "rope_scale": 1.0, "rope_theta": 1e4, "sm_scale": 0.3}
        return [("tree", _with_outputs(arrays, rng), scalars)]
    dispatched = _low_batch_rows(func)
    if dispatched:  # each of LowBatchDispatch's kernels: 2 rows, 5 (padded to 8) and SIZES' 19
        return [(f"{rows} rows", *generic_inputs(func, rng, {**SIZES, dispatched: rows})) for rows in (2, 5, 19)]
    arrays, scalars = generic_inputs(func, rng)
    if name.startswith(("apply_", "gather_", "scatter_", "softmax_")):
        return [("mlc", _mlc_function_inputs(name, arrays, rng), scalars)]
    if name == "compact_kv_copy":  # three sequences move 3, 0 and 4 tokens to free slots
        slots = _slots(rng, 14, SIZES["num_pages"])
        arrays.update(copy_length_indptr=np.array([0, 3, 3, 7], np.int32), copy_src_dst_pos=slots.reshape(2, 7))
    elif "transpose_append" in name:  # a token the runtime skips
        arrays["position_map"][len(arrays["position_map"]) // 2] = -1
    elif name == "copy_single_page":
        scalars.update(src_page_id=2, tgt_page_id=5, copy_length=11)
    elif "apply_rope" in scalars:  # TVM's split_rotary: the runtime passes 0 (RoPE applied by the model)
        return [("no-rope", arrays, {**scalars, "apply_rope": 0}), ("rope", arrays, scalars)]
    return [("random", arrays, scalars)]


def _low_batch_rows(func) -> str | None:
    """The name of the row count whose value picks the kernel of a function scheduled by
    :class:`pipeline.compile.schedules.LowBatchDispatch` (None for other functions)."""
    if "tvm_thread_invariant" not in func.script():
        return None
    [rows] = {dim.name for param in func.params for dim in getattr(param, "shape", ())
              if type(dim).__name__ == "Var"}
    return rows


def _mlc_function_inputs(name: str, arrays: dict, rng) -> dict:
    """Inputs of MLC's functions as its engine passes them: (sequence, token) pairs of the logit
    bias and the penalties distinct (each logit is written by one thread), sequence ids distinct,
    a random bitmask, distinct rows for a scatter, positive temperatures (and one 0: the greedy
    row)."""
    if name in ("apply_logit_bias_inplace", "apply_penalty_inplace"):
        rows, vocab = (len(arrays["seq_ids"]) if "seq_ids" in arrays else arrays["logits"].shape[0],
                       arrays["logits"].shape[1])
        flat = rng.choice(rows * vocab, len(arrays["token_ids"]), replace=False)
        arrays.update(pos2seq_id=(flat // vocab).astype(np.int32), token_ids=(flat % vocab).astype(np.int32))
    if "seq_ids" in arrays:
        arrays["seq_ids"] = rng.permutation(arrays["logits"].shape[0])[:len(arrays["seq_ids"])].astype(np.int32)
    if name == "apply_penalty_inplace":
        arrays.update(token_cnt=rng.integers(1, 5, arrays["token_cnt"].shape).astype(np.int32),
                      penalties=rng.uniform(0.5, 2.0, arrays["penalties"].shape).astype(np.float32))
    if name == "apply_bitmask_inplace":
        arrays["bitmask"] = rng.integers(-2**31, 2**31, arrays["bitmask"].shape).astype(np.int32)
    if name.startswith(("gather_", "scatter_")):
        rows = len(arrays["src" if name.startswith("gather_") else "dst"])
        arrays["indices"] = rng.permutation(rows)[:len(arrays["indices"])].astype(np.int32)
    if name.startswith("softmax_"):
        arrays["temperature"] = np.append(0.0, rng.uniform(0.5, 1.5, len(arrays["temperature"]) - 1)).astype(np.float32)
    return arrays


def _body_sizes(kernel, launch) -> tuple:
    """(global, local) sizes from the kernel's own ``thread_extent`` attributes, its scalar
    parameters bound to the launch's arguments: a cross-check of the host-code replay."""
    env = {p: a for p, a in zip(kernel.params, launch.args) if not isinstance(a, tuple)}
    groups, local = [1, 1, 1], [1, 1, 1]

    def visit(node):
        if type(node).__name__ == "AttrStmt" and node.attr_key == "thread_extent":
            scope, axis = node.node.thread_tag.split(".")
            (local if scope == "threadIdx" else groups)["xyz".index(axis)] = int(evaluate(node.value, env))

    tvm.tirx.stmt_functor.post_order_visit(kernel.body, visit)
    return tuple(g * t for g, t in zip(groups, local)), tuple(local)


def _call_cpu_twin(builds, name: str, arrays: dict, scalars: dict) -> dict:
    """Every array after calling GPU function ``name``'s CPU twin; arguments go by position (TVM's
    CPU ``topk`` names its parameters ``data_buf``, ``value_buf``, ``indices_buf``)."""
    twin = builds["twins"][name]
    gpu_keys, cpu_keys = param_keys(builds["gpu"][name]), param_keys(builds["cpu"][twin])
    assert len(gpu_keys) == len(cpu_keys), f"{name} and {twin} differ in parameters"
    rename = dict(zip(gpu_keys, cpu_keys))
    result = call_tvm(builds["library"][twin], builds["cpu"][twin], {rename[k]: a for k, a in arrays.items()},
                      {rename[k]: v for k, v in scalars.items() if k in rename})
    return {k: result[rename[k]] for k in arrays}


def test_every_kernel_matches_the_cpu_build_on_pocl(builds):
    build, pocl = builds["build"], builds["pocl"]
    limit = int(builds["target"].attrs["max_num_threads"])
    local_limit = int(builds["target"].attrs["max_shared_memory_per_block"])
    assert limit == 256
    rng = np.random.default_rng(5)
    failures, checked, worst, used, largest_group = [], set(), 0.0, 0.0, 0
    for name, func in sorted(builds["gpu"].items()):
        for label, arrays, scalars in cases(name, func, rng):
            got, launches = pocl.run(name, arrays, scalars)
            want = _call_cpu_twin(builds, name, arrays, scalars)
            assert launches, f"{name}: no kernel launched"
            for launch in launches:
                checked.add(launch.kernel)
                assert _body_sizes(build.kernels[launch.kernel], launch) == (launch.global_size, launch.local_size)
                largest_group = max(largest_group, launch.work_group_size)
                assert launch.work_group_size <= limit, f"{launch.kernel}: work-group {launch.local_size} > {limit}"
                assert pocl.local_memory_bytes(launch.kernel) <= local_limit, launch.kernel
            assert any(not np.array_equal(want[k], arrays[k]) for k in arrays), f"{name} {label}: wrote nothing"
            for key in arrays:
                error = np.abs(got[key].astype(np.float64) - want[key])
                worst = max(worst, error.max(initial=0))
                used = max(used, (error / (ATOL + RTOL * np.abs(want[key]))).max(initial=0))
                if not np.allclose(got[key], want[key], rtol=RTOL, atol=ATOL):
                    failures.append(f"{name} {label} {key}: max error {error.max():.2e}")
    assert not failures, "; ".join(failures)
    kernels_in_source = set(re.findall(r"__kernel void (\w+)\(", build.source))
    assert checked == kernels_in_source
    print(f"{len(checked)} kernels, max error {worst:.2e} ({used:.0%} of the tolerance), "
          f"largest work-group {largest_group}")


def test_the_kernels_cover_every_entry_point(builds):
    """The kernels run above include every device function a Relax function of the library calls
    (``prefill``, ``decode`` ... ``get_logits``) or hands to the KV cache; the remaining ones are
    reshapes that Relax replaced with ``vm.builtin.reshape`` but TVM still compiles."""
    android, gpu = builds["android"], set(builds["gpu"])
    entries = [gv.name_hint for gv, f in android.functions.items() if isinstance(f, relax.Function)]
    reached = {entry: _reached(android, entry) & gpu for entry in entries}
    assert any(name.startswith("take") for name in reached["embed"])
    assert "last_position" in reached["prefill"] and len(reached["prefill"]) >= 10
    assert len(reached["decode"]) >= 10 and len(reached["batch_verify"]) >= 10
    # a verify pass's products choose a LowBatchGEMV kernel by their row count; a decode step's are GEMVs
    assert sum(bool(_low_batch_rows(builds["gpu"][name])) for name in reached["batch_verify"]) >= 4
    assert not any(_low_batch_rows(builds["gpu"][name]) for name in reached["decode"])
    assert {"fused_rope", "tir_kv_cache_transpose_append", "windowed_ragged_prefill_gpu", "windowed_paged_prefill_gpu",
            "windowed_paged_decode_gpu", "tir_attention_merge_state_gpu"} <= reached["create_paged_kv_cache"]
    # MLC's engine calls these directly (pipeline/compile/mlc_functions.py)
    called_by_the_runtime = set(logit_processors(builds["target"])) | {"gather_probs", "scatter_probs"}
    unused = gpu - set().union(*reached.values()) - called_by_the_runtime
    assert unused and all(RESHAPE.fullmatch(name) for name in unused), sorted(unused)
