"""MLC LLM's function set (``pipeline.compile.mlc_functions``): every function the pass adds,
compiled for the CPU into a small stand-in model library and checked against numpy on a tiny
vocabulary (and one of 262,144 entries, Gemma 3's, for the softmax), and the same module built
for WebGPU and Vulkan (code generation only; ``tests/compile/test_webgpu_mlc.py`` runs WebLLM)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from tvm import relax, tirx

from pipeline.compile import vulkan
from pipeline.compile.compiler import relax_pipeline
from pipeline.compile.mlc_functions import attach_mlc_functions, read_metadata
from pipeline.compile.targets import load_target
from pipeline.kernels.sampling import ALL_SAMPLERS, GREEDY_TEMPERATURE, SEARCH_CHUNK, WEBGPU_SAMPLERS, sampler_names
from tests.helpers import webgpu

pytestmark = pytest.mark.compile

HIDDEN, CHUNK = 4, 8
METADATA = {"model_type": "stand_in", "prefill_chunk_size": CHUNK, "kv_state_kind": "kv_cache", "memory_usage": {}}
LOGIT_PROCESSORS = ("apply_logit_bias_inplace", "apply_penalty_inplace", "apply_bitmask_inplace")
ATOL = 1e-6


def stand_in_module(vocab: int = HIDDEN) -> tvm.IRModule:
    """A module shaped like a model library: ``_metadata``, ``embed`` (s,) -> (s, HIDDEN),
    ``get_logits`` (s, HIDDEN) -> (s, vocab) and ``prefill_to_last_hidden_states`` (no KV cache)."""
    bb = relax.BlockBuilder()
    s = tirx.Var("seq_len", "int64")
    ids = relax.Var("input_ids", relax.TensorType([s], "int32"))
    with bb.function("embed", [ids]):
        with bb.dataflow():
            col = bb.emit(relax.op.astype(relax.op.reshape(ids, [s, 1]), "float32"))
            out = bb.emit_output(relax.op.broadcast_to(col, [s, HIDDEN]))
        bb.emit_func_output(out)
    hidden = relax.Var("hidden_states", relax.TensorType([s, HIDDEN], "float32"))
    with bb.function("get_logits", [hidden]):
        with bb.dataflow():
            first = bb.emit(relax.op.strided_slice(hidden, axes=[1], begin=[0], end=[1]))
            out = bb.emit_output(relax.op.broadcast_to(first, [s, vocab]))
        bb.emit_func_output(out)
    embeds = relax.Var("input_embed", relax.TensorType([1, s, HIDDEN], "float32"))
    with bb.function("prefill_to_last_hidden_states", [embeds]):
        bb.emit_func_output(relax.Tuple([embeds, embeds]))
    with bb.function("_metadata", []):
        bb.emit_func_output(relax.StringImm(json.dumps(METADATA)))
    return bb.get()


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """The stand-in library for the CPU preset, loaded in a VM: ``lib(name)`` is its function."""
    preset = load_target("cpu")
    target = preset.tvm_target()
    with target:
        lowered = relax_pipeline(target, preset.schedule)(stand_in_module())
    path = tmp_path_factory.mktemp("mlc") / "stand_in.so"
    relax.build(lowered, target=target, relax_pipeline=None).export_library(str(path))
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    return lambda name: vm.module.get_function(name, True)  # MLC's lookup: VM functions, then TIR


def arr(x, dtype):
    return tvm.runtime.tensor(np.asarray(x, dtype=dtype))


def test_every_function_is_exported(lib):
    for name in ("create_tir_paged_kv_cache", *LOGIT_PROCESSORS, "softmax_with_temperature", *ALL_SAMPLERS,
                 "alloc_embedding_tensor", "batch_select_last_hidden_states", "gather_probs", "scatter_probs",
                 "gather_hidden_states", "scatter_hidden_states", "argmax_logits"):
        if name != "create_tir_paged_kv_cache":  # the stand-in has no cache (the model tests check it)
            assert lib(name) is not None, name


def test_metadata_keys(lib):
    meta = json.loads(str(lib("_metadata")()))
    assert meta["kv_state_kind"] == "none" and "kv_cache" not in meta  # no cache creator here
    assert set(meta["memory_usage"]) >= {"embed", "get_logits", "softmax_with_temperature", "argsort_probs"}
    assert all(isinstance(v, int) and v >= 0 for v in meta["memory_usage"].values())


def test_logit_bias(lib):
    logits = np.random.default_rng(0).normal(size=(3, 37)).astype(np.float32)
    rows, tokens, bias = [2, 0, 2], [5, 36, 0], [1.5, -2.0, 0.25]
    got = arr(logits, "float32")
    lib("apply_logit_bias_inplace")(got, arr(rows, "int32"), arr(tokens, "int32"), arr(bias, "float32"))
    want = logits.copy()
    for r, t, b in zip(rows, tokens, bias):
        want[r, t] += b
    np.testing.assert_allclose(got.numpy(), want, atol=ATOL, rtol=0)


def test_penalty(lib):
    logits = np.random.default_rng(1).normal(size=(3, 37)).astype(np.float32)
    seq_ids, pos2seq, tokens, counts = [2, 0], [0, 0, 1], [3, 7, 3], [2, 1, 4]
    penalties = np.array([[0.5, 0.25, 1.3], [0.0, 0.1, 2.0]], np.float32)  # presence, frequency, repetition
    got = arr(logits, "float32")
    lib("apply_penalty_inplace")(got, arr(seq_ids, "int32"), arr(pos2seq, "int32"), arr(tokens, "int32"),
                                 arr(counts, "int32"), arr(penalties, "float32"))
    want = logits.copy()
    for s, t, c in zip(pos2seq, tokens, counts):
        x = want[seq_ids[s], t] - (penalties[s, 0] + c * penalties[s, 1])
        want[seq_ids[s], t] = x * penalties[s, 2] if x < 0 else x / penalties[s, 2]
    np.testing.assert_allclose(got.numpy(), want, atol=ATOL, rtol=0)


def test_bitmask(lib):
    rng = np.random.default_rng(2)
    vocab = 70  # three 32-bit words, the last partly used
    logits = rng.normal(size=(3, vocab)).astype(np.float32)
    allowed = rng.random((3, vocab)) < 0.5
    words = np.zeros((3, 3), np.uint32)
    for r in range(3):
        for v in np.flatnonzero(allowed[r]):
            words[r, v // 32] |= np.uint32(1) << np.uint32(v % 32)
    got = arr(logits, "float32")
    lib("apply_bitmask_inplace")(got, arr([1, 2], "int32"), arr(words.view(np.int32), "int32"))
    want = logits.copy()
    for r in (1, 2):
        want[r, ~allowed[r]] = np.finfo(np.float32).min
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("vocab", [37, 4096 * 2 + 5, 262144])
def test_softmax_with_temperature(lib, vocab):
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(3, 1, vocab)) * 4).astype(np.float32)
    logits[2, 0, [1, vocab - 1]] = logits[2].max() + 1  # a tie for the greedy row
    temperature = np.array([0.7, 1.0, 1e-6], np.float32)
    got = lib("softmax_with_temperature")(arr(logits, "float32"), arr(temperature, "float32")).numpy()
    assert got.shape == (3, 1, vocab)
    for r in range(2):
        x = logits[r, 0].astype(np.float64) / temperature[r]
        want = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        np.testing.assert_allclose(got[r, 0], want, atol=1e-7, rtol=1e-5)
    greedy = np.zeros(vocab)
    greedy[[1, vocab - 1]] = 0.5  # temperature <= 1e-5: 1 / (count of maxima) at the maxima
    assert temperature[2] <= GREEDY_TEMPERATURE
    np.testing.assert_array_equal(got[2, 0], greedy)


@pytest.mark.parametrize("vocab", [1, 37, 4096 + 1, 262144])
def test_argmax_logits_is_numpys_argmax(lib, vocab):
    """Ties go to the lowest id (numpy's rule): a tie across rows' ends, a row of -inf, a row of
    equal values."""
    logits = (np.random.default_rng(9).normal(size=(4, vocab)) * 4).astype(np.float32)
    logits[0, [vocab - 1, vocab // 2]] = logits[0].max() + 1
    logits[1] = -np.inf
    logits[2] = 0.5
    got = lib("argmax_logits")(arr(logits, "float32")).numpy()
    assert got.dtype == np.int32 and got.shape == (4,)
    np.testing.assert_array_equal(got, np.argmax(logits, axis=1))


def test_argsort_probs(lib):
    probs = np.random.default_rng(4).dirichlet(np.ones(50), size=3).astype(np.float32)
    values, indices = lib("argsort_probs")(arr(probs, "float32"))
    order = np.argsort(-probs, axis=1, kind="stable")
    np.testing.assert_array_equal(indices.numpy(), order)
    np.testing.assert_array_equal(values.numpy(), np.take_along_axis(probs, order, axis=1))


def reference_top_p(sorted_probs, sorted_indices, uniform, rows, top_p):
    """MLC's top-p draw from sorted rows, in float64 (module docstring of pipeline.kernels.sampling)."""
    out = []
    for u, r in zip(uniform, rows):
        running = np.cumsum(sorted_probs[r].astype(np.float64))
        cut = running[min(np.searchsorted(running, top_p[r], side="left"), len(running) - 1)]
        out.append(sorted_indices[r, min(np.searchsorted(running / cut, u, side="right"), len(running) - 1)])
    return np.array(out)


def test_sample_with_top_p(lib):
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(40) * 0.3, size=2).astype(np.float32)
    values, indices = lib("argsort_probs")(arr(probs, "float32"))
    uniform = rng.random(6).astype(np.float32)
    rows = np.array([0, 1, 1, 0, 1, 0], np.int32)
    top_p = np.array([0.6, 0.9], np.float32)
    got = lib("sample_with_top_p")(values, indices, arr(uniform, "float32"), arr(rows, "int32"), arr(top_p, "float32"))
    want = reference_top_p(values.numpy(), indices.numpy(), uniform, rows, top_p)
    np.testing.assert_array_equal(got.numpy(), want)
    # greedy: the softmax of a greedy row is one-hot, and any draw gives its maximum
    logits = rng.normal(size=(1, 1, 40)).astype(np.float32)
    one_hot = lib("softmax_with_temperature")(arr(logits, "float32"), arr([1e-6], "float32"))
    values, indices = lib("argsort_probs")(arr(one_hot.numpy()[:, 0], "float32"))
    for u in (0.0, 0.5, 0.999):
        token = lib("sample_with_top_p")(values, indices, arr([u], "float32"), arr([0], "int32"), arr([0.9], "float32"))
        assert token.numpy()[0] == int(logits.argmax())


def test_top_p_over_rows_longer_than_a_search_chunk(lib):
    """Rows of 2 * SEARCH_CHUNK + 37 entries: the two-pass searches of sample_with_top_p and
    renormalize_by_top_p find entries in later and partial chunks."""
    vocab = 2 * SEARCH_CHUNK + 37
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(vocab), size=2).astype(np.float32)
    values, indices = lib("argsort_probs")(arr(probs, "float32"))
    uniform = np.array([0.2, 0.97, 0.999, 0.5, 0.9999], np.float32)
    rows = np.array([0, 0, 1, 1, 1], np.int32)
    top_p = np.array([0.9, 1.0], np.float32)
    got = lib("sample_with_top_p")(values, indices, arr(uniform, "float32"), arr(rows, "int32"), arr(top_p, "float32"))
    want = reference_top_p(values.numpy(), indices.numpy(), uniform, rows, top_p)
    np.testing.assert_array_equal(got.numpy(), want)
    positions = [int(np.flatnonzero(indices.numpy()[r] == t)[0]) for r, t in zip(rows, want)]
    assert max(positions) >= 2 * SEARCH_CHUNK and any(SEARCH_CHUNK <= p < 2 * SEARCH_CHUNK for p in positions)
    got = lib("renormalize_by_top_p")(arr(probs, "float32"), arr(top_p, "float32"), arr(np.zeros((2, 3)), "float32"))
    for r in range(2):
        p = np.sort(probs[r].astype(np.float64))[::-1]
        pivot = p[np.cumsum(p) - p < top_p[r]].min()
        kept = probs[r] >= pivot
        want = np.where(kept, probs[r] / probs[r][kept].sum(), 0)
        np.testing.assert_allclose(got.numpy()[r], want, atol=1e-6, rtol=0)
    assert 0 < (got.numpy()[0] > 0).sum() < vocab and (got.numpy()[1] > 0).all()


def test_multinomial_from_uniform(lib):
    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.ones(30), size=3).astype(np.float32)
    uniform = rng.random(5).astype(np.float32)
    rows = np.array([2, 0, 1, 2, 0], np.int32)
    got = lib("multinomial_from_uniform")(arr(probs, "float32"), arr(uniform, "float32"), arr(rows, "int32"))
    running = np.cumsum(probs.astype(np.float64), axis=1)
    want = [min(np.searchsorted(running[r], u, side="right"), 29) for u, r in zip(uniform, rows)]
    np.testing.assert_array_equal(got.numpy(), want)


def test_renormalize_by_top_p(lib):
    probs = np.array([[0.1, 0.4, 0.2, 0.2, 0.1], [0.05, 0.05, 0.6, 0.2, 0.1]], np.float32)
    top_p = np.array([0.65, 0.5], np.float32)
    got = lib("renormalize_by_top_p")(arr(probs, "float32"), arr(top_p, "float32"), arr(np.zeros((2, 3)), "float32"))
    # row 0: 0.4, then the two tied 0.2 (0.4 + 0.2 reaches 0.6 < 0.65; the tie is kept whole): sum 0.8
    want = np.array([[0, 0.5, 0.25, 0.25, 0], [0, 0, 1, 0, 0]], np.float32)
    np.testing.assert_allclose(got.numpy(), want, atol=ATOL, rtol=0)


def test_sampler_take_probs(lib):
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(20), size=3).astype(np.float32)
    values, indices = lib("argsort_probs")(arr(probs, "float32"))
    rows, picked, offsets = [1, 2], [4, 19], [0, 21, 45]
    sampled, top_probs, top_ids = lib("sampler_take_probs")(arr(probs, "float32"), indices, arr(rows, "int32"),
                                                            arr(picked, "int32"), arr(offsets, "int32"))
    np.testing.assert_array_equal(sampled.numpy(), probs[rows, picked])
    flat = indices.numpy().reshape(-1)[offsets]
    np.testing.assert_array_equal(top_ids.numpy(), flat)
    np.testing.assert_array_equal(top_probs.numpy(), probs[np.array(offsets) // 20, flat])


def test_gather_scatter_and_hidden_state_selection(lib):
    rng = np.random.default_rng(8)
    src = rng.normal(size=(5, 6)).astype(np.float32)
    idx = np.array([4, 1], np.int32)
    dst = arr(np.zeros((2, 6)), "float32")
    lib("gather_probs")(arr(src, "float32"), arr(idx, "int32"), dst)
    np.testing.assert_array_equal(dst.numpy(), src[idx])
    back = arr(np.zeros((5, 6)), "float32")
    lib("scatter_probs")(dst, arr(idx, "int32"), back)
    np.testing.assert_array_equal(back.numpy()[idx], src[idx])
    out = lib("gather_hidden_states")(arr(src[:, :HIDDEN], "float32"), arr(idx, "int32"),
                                      arr(np.zeros((2, HIDDEN)), "float32"))
    np.testing.assert_array_equal(out.numpy(), src[idx, :HIDDEN])
    out = lib("scatter_hidden_states")(arr(src[:2, :HIDDEN], "float32"), arr(idx, "int32"),
                                       arr(np.zeros((5, HIDDEN)), "float32"))
    np.testing.assert_array_equal(out.numpy()[idx], src[:2, :HIDDEN])
    chosen = lib("batch_select_last_hidden_states")(arr(src[:, :HIDDEN], "float32"), arr([3, 0], "int32"))
    np.testing.assert_array_equal(chosen.numpy(), src[[3, 0], :HIDDEN])
    empty = lib("alloc_embedding_tensor")()
    assert empty.shape == (CHUNK, HIDDEN) and empty.dtype == "float32"


def test_modules_without_metadata_pass_through():
    mod = stand_in_module()
    del mod["_metadata"]
    assert attach_mlc_functions(mod, tvm.target.Target("llvm")).same_as(mod)
    assert read_metadata(mod) is None


def test_sampler_choice_per_target_kind():
    assert sampler_names("webgpu") == WEBGPU_SAMPLERS
    assert sampler_names("opencl") == ()
    assert sampler_names("llvm") == sampler_names("vulkan") == ALL_SAMPLERS


@pytest.mark.parametrize("preset", ["webgpu", "vulkan"])
def test_gpu_builds(preset, tmp_path):
    """Every function builds for the GPU preset (kernels bound to threads: TVM refuses an unbound
    GPU kernel); WebGPU's WGSL keeps a barrier in the softmax's chunk reduction."""
    target_preset = load_target(preset)
    target = target_preset.tvm_target()
    with target:
        lowered = relax_pipeline(target, target_preset.schedule)(stand_in_module())
    names = {gv.name_hint for gv in lowered.get_global_vars()}
    assert {*LOGIT_PROCESSORS, "softmax_with_temperature", "argmax_logits", *sampler_names(target.kind.name)} <= names
    if preset == "vulkan" and not vulkan.can_build():
        pytest.skip(f"needs a Vulkan code generator: {vulkan.missing()}")
    executable = relax.build(lowered, target=target, relax_pipeline=None)
    if preset == "webgpu":
        source = "\n".join(m.inspect_source() for m in _device_modules(executable.mod))
        assert "workgroupBarrier()" in source and "softmax_chunk_stats" in source


@pytest.mark.skipif(bool(vulkan.missing()), reason=f"needs Vulkan: {vulkan.missing()}")
def test_vulkan_runs_multinomial_from_uniform(tmp_path):
    """The stand-in built for the vulkan preset runs on the device (Mesa's lavapipe here): TVM's
    multinomial kernel (bool buffers: it needs scripts/build_tvm_vulkan.sh's fix to the code
    generator) draws what numpy's search of the running sums gives, as on the CPU."""
    preset = load_target("vulkan")
    target = preset.tvm_target()
    with target:
        lowered = relax_pipeline(target, preset.schedule)(stand_in_module())
    path = tmp_path / "stand_in.so"
    relax.build(lowered, target=target, relax_pipeline=None).export_library(str(path))
    dev = vulkan.device()
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), dev)
    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.ones(30), size=3).astype(np.float32)
    uniform = rng.random(5).astype(np.float32)
    rows = np.array([2, 0, 1, 2, 0], np.int32)
    got = vm.module.get_function("multinomial_from_uniform")(
        *(tvm.runtime.tensor(a, device=dev) for a in (probs, uniform, rows)))
    running = np.cumsum(probs.astype(np.float64), axis=1)
    want = [min(np.searchsorted(running[r], u, side="right"), 29) for u, r in zip(uniform, rows)]
    np.testing.assert_array_equal(got.numpy(), want)


def _device_modules(module):
    found = [module] if module.kind == "webgpu" else []
    for sub in module.imports:
        found += _device_modules(sub)
    return found


WEBGPU_VOCAB = 1300  # more than a SEARCH_CHUNK; the sort pads rows to 2048


@pytest.fixture(scope="module")
def webgpu_wasm(tmp_path_factory):
    """The stand-in library (vocabulary 300) built for the webgpu preset and linked into a .wasm."""
    from pipeline.compile import wasm

    if webgpu.missing("node") and webgpu.missing("chromium"):
        pytest.skip(webgpu.missing("node"))
    preset = load_target("webgpu")
    target = preset.tvm_target()
    with target:
        lowered = relax_pipeline(target, preset.schedule)(stand_in_module(WEBGPU_VOCAB))
    path = tmp_path_factory.mktemp("mlc-webgpu") / "stand_in.wasm"
    relax.build(lowered, target=target, relax_pipeline=None).export_library(str(path), fcompile=wasm.link_wasm)
    return path


def _webgpu_sampling_run(wasm_path, runtime, tmp_path):
    """softmax_with_temperature (a sampling row and a greedy row), argsort_probs and
    sample_with_top_p run on ``runtime``: (logits, temperature, probs, outputs, uniform, rows, top_p)."""
    rng = np.random.default_rng(9)
    logits = (rng.normal(size=(2, 1, WEBGPU_VOCAB)) * 3).astype(np.float32)
    logits[0, 0, 7] = logits[0, 0, 11] = 20.0  # a tie at the top of the sampling row: lower id first
    temperature = np.array([0.8, 1e-6], np.float32)
    uniform = np.array([0.3, 0.95, 0.5], np.float32)
    rows = np.array([0, 0, 1], np.int32)
    top_p = np.array([0.9, 0.9], np.float32)
    files = {"logits": logits, "temperature": temperature, "uniform": uniform, "rows": rows, "top_p": top_p}
    tensors = {}
    for name, value in files.items():
        (tmp_path / f"{name}.bin").write_bytes(value.tobytes())
        tensors[name] = {"file": f"{name}.bin", "shape": list(value.shape), "dtype": str(value.dtype)}
    plan = {"wasm": str(wasm_path), "tensors": tensors, "calls": [
        {"function": "softmax_with_temperature", "args": ["logits", "temperature"], "output": "probs"}]}
    probs = webgpu.run_plan(runtime, plan, tmp_path)["outputs"]["probs"].reshape(2, WEBGPU_VOCAB)
    (tmp_path / "probs_2d.bin").write_bytes(probs.astype(np.float32).tobytes())
    tensors["probs_2d"] = {"file": "probs_2d.bin", "shape": [2, WEBGPU_VOCAB], "dtype": "float32"}
    plan["calls"] = [
        {"function": "argsort_probs", "args": ["probs_2d"], "output": ["sorted_probs", "sorted_indices"]},
        {"function": "sample_with_top_p", "args": ["sorted_probs", "sorted_indices", "uniform", "rows", "top_p"],
         "output": "tokens"}]
    out = webgpu.run_plan(runtime, plan, tmp_path)["outputs"]
    return logits, temperature, probs, out, uniform, rows, top_p


@pytest.mark.parametrize("runtime", webgpu.RUNTIMES)
def test_webgpu_softmax_sort_and_greedy_draw(webgpu_wasm, runtime, tmp_path):
    """WebLLM's sampling path on a real WebGPU device, against numpy: softmax_with_temperature
    (float32 exp: 1e-6 on probabilities; the greedy row exactly), the bitonic argsort_probs
    exactly, and sample_with_top_p's draw from the greedy (one-hot) row."""
    webgpu.require(runtime)
    logits, temperature, probs, out, _, _, _ = _webgpu_sampling_run(webgpu_wasm, runtime, tmp_path)
    x = logits[0, 0].astype(np.float64) / temperature[0]
    np.testing.assert_allclose(probs[0], np.exp(x - x.max()) / np.exp(x - x.max()).sum(), atol=1e-6, rtol=0)
    greedy = (logits[1, 0] == logits[1, 0].max()).astype(np.float32)
    np.testing.assert_array_equal(probs[1], greedy / greedy.sum())
    order = np.lexsort((np.arange(WEBGPU_VOCAB)[None].repeat(2, 0), -probs), axis=1)
    np.testing.assert_array_equal(out["sorted_indices"], order)
    np.testing.assert_array_equal(out["sorted_probs"], np.take_along_axis(probs, order, axis=1))
    assert out["tokens"][2] == int(logits[1, 0].argmax())


@pytest.mark.parametrize("runtime", webgpu.RUNTIMES)
def test_webgpu_top_p_draw_from_a_sampling_row(webgpu_wasm, runtime, tmp_path):
    """sample_with_top_p's draws from a row at temperature 0.8: its running sums come from our scan
    network (pipeline/kernels/running_sum.py; TVM 0.26's GPU scan returned its input unscanned here)."""
    webgpu.require(runtime)
    _, _, _, out, uniform, rows, top_p = _webgpu_sampling_run(webgpu_wasm, runtime, tmp_path)
    want = reference_top_p(out["sorted_probs"], out["sorted_indices"], uniform, rows, top_p)
    np.testing.assert_array_equal(out["tokens"], want)
