"""Softmax and the sampling functions MLC LLM's engine and WebLLM call on a model library.

Names, parameters, shapes and semantics are MLC LLM's (read from mlc-llm
``python/mlc_llm/compiler_pass/attach_softmax_with_temperature.py``, ``attach_sampler.py``,
``cpp/serve/sampler/gpu_sampler.cc`` and WebLLM ``src/llm_chat.ts``); the kernels are ours or
TVM's (sort, scan and multinomial sampling, which TVM's ``DispatchSortScan`` /
``DispatchSampling`` lower to its parallel GPU kernels on GPU targets).  ``b`` is ``batch_size``,
``V`` ``vocab_size``, ``n`` ``num_samples``; probabilities are float32.  On a GPU, sort and
scan are TVM's parallel kernels (WebGPU sorts with :mod:`.bitonic_sort` and scans with
:mod:`.running_sum`, ours: TVM 0.26's GPU sort shader did not compile on SwiftShader and its
GPU scan returned its input unscanned in our WebGPU builds), the row reductions here are
scheduled by dlight's reduction rules (threads across the vocabulary), the top-p searches over a
row run in two passes (chunks of :data:`SEARCH_CHUNK` entries, a thread each, then the chunks:
dlight gave a one-pass search one thread per row) and the element-wise steps follow its
fallback rule:

- ``softmax_with_temperature(logits (b, 1, V), temperature (b,)) -> (b, 1, V)``:
  ``softmax(logits / t)`` per row; a row whose ``t <= GREEDY_TEMPERATURE`` gets ``1 / c`` at its
  ``c`` maximal logits and 0 elsewhere (greedy: WebLLM passes ``t = 1e-6`` for temperature 0).
  Two passes: per chunk of :data:`SOFTMAX_CHUNK` entries the maximum and the sum of
  ``exp(x - max)`` (or the count of maxima), then per chunk again the normalized values, each
  chunk one block of threads on a GPU.
- ``argsort_probs(probs (b, V)) -> (sorted_probs (b, V), sorted_indices (b, V) int32)``,
  descending (on WebGPU a bitonic network of our own, :mod:`.bitonic_sort`, up to the model's
  vocabulary).
- ``sample_with_top_p(sorted_probs, sorted_indices, uniform_samples (n,), sample_indices (n,)
  int32, top_p (b,)) -> (n,) int32``: for sample ``k`` in row ``r = sample_indices[k]``, with the
  running sums ``c`` of ``sorted_probs[r]`` and ``c_p`` the first of them reaching ``top_p[r]``,
  the token ``sorted_indices[r, j]`` at the first ``j`` with ``uniform_samples[k] < c[j] / c_p``.
- ``multinomial_from_uniform(probs (b, V), uniform_samples (n,), sample_indices (n,)) -> (n,)
  int32``: the first token whose running sum of ``probs[sample_indices[k]]`` exceeds the sample.
- ``renormalize_by_top_p(probs (b, V), top_p (b,), init_pivots (b, 3)) -> (b, V)``: keeps the
  largest probabilities of each row (ties kept together) up to the first whose running sum
  reaches ``top_p``, divides them by their sum, zeroes the rest; ``init_pivots`` (MLC's search
  hints) are accepted and unused.
- ``sampler_take_probs(unsorted_probs (b, V), sorted_indices (b, V), sample_indices (n,),
  sampling_results (n,), top_prob_offsets (m,)) -> (sampled_values (n,), top_prob_probs (m,),
  top_prob_indices (m,) int32)``: the probability of each sampled token, and for each flat
  offset ``o`` into ``sorted_indices`` the token there and its probability.

:func:`sampler_names` says which of them a target kind gets (MLC's choice: WebGPU only the two
that need no 8-bit integers); :func:`attach_sampling_functions` adds them to a module.
"""

from __future__ import annotations

from tvm import relax, te, tirx
from tvm.script import tirx as T
from tvm.target import Target

from ..presets import is_gpu_kind
from .bitonic_sort import emit_bitonic_argsort, sort_width
from .logit_processor import threads_per_block
from .running_sum import emit_running_sum

SOFTMAX_CHUNK = 4096  # vocabulary entries per block in softmax_with_temperature
DEFAULT_VOCAB = 262144  # WebGPU's sort width where the module does not say its vocabulary (Gemma's)
SEARCH_CHUNK = 1024  # entries per thread in the first pass of the top-p searches over a row
GREEDY_TEMPERATURE = 1e-5  # at or below: the greedy (one-hot over the maxima) row of MLC's softmax
WEBGPU_SAMPLERS = ("argsort_probs", "sample_with_top_p")
ALL_SAMPLERS = ("argsort_probs", "sample_with_top_p", "multinomial_from_uniform", "renormalize_by_top_p",
                "sampler_take_probs")


def sampler_names(kind: str) -> tuple[str, ...]:
    """The sampling functions a library for TVM target kind ``kind`` carries: WebGPU gets
    :data:`WEBGPU_SAMPLERS` (as in MLC: TVM's multinomial kernel uses 8-bit integers, which WebGPU
    lacks), ``opencl`` none (MLC's Android engine samples on the CPU), the others
    :data:`ALL_SAMPLERS` (MLC attaches none for the CPU, where its engine samples in C++; ours
    carries them so that they are checked on the CPU too)."""
    if kind == "webgpu":
        return WEBGPU_SAMPLERS
    return () if kind == "opencl" else ALL_SAMPLERS


# --- softmax_with_temperature ------------------------------------------------------------------
@T.macro
def _fold(m, s, k, x, greedy):
    """Fold value ``x`` into the running (maximum ``m[k]``, sum ``s[k]``)."""
    if x > m[k]:
        s[k] = T.if_then_else(greedy, T.float32(1), s[k] * T.exp(m[k] - x) + T.float32(1))
        m[k] = x
    else:
        s[k] = s[k] + T.if_then_else(greedy, T.Cast("float32", x == m[k]), T.exp(x - m[k]))


@T.macro
def _combine(m, s, k, m_other, s_other, greedy):
    """Merge the state (``m_other``, ``s_other``) into (``m[k]``, ``s[k]``): ``s[k]`` first, from
    the old ``m[k]`` (no ``let`` of a shared-memory read: TVM's shared-memory planner refuses one)."""
    s[k] = T.if_then_else(
        greedy,
        s[k] * T.Cast("float32", m[k] >= m_other) + s_other * T.Cast("float32", m_other >= m[k]),
        s[k] * T.exp(m[k] - T.max(m[k], m_other)) + s_other * T.exp(m_other - T.max(m[k], m_other)),
    )
    m[k] = T.max(m[k], m_other)


def _merged_sum(m1, s1, m2, s2, greedy):
    """The sum of two merged states, arithmetic only (``greedy`` is 1.0 or 0.0): TVM's ThreadSync
    cannot place shared-memory reads inside a conditional expression."""
    top = T.max(m1, m2)
    return greedy * (s1 * T.Cast("float32", m1 >= m2) + s2 * T.Cast("float32", m2 >= m1)) + (
        T.float32(1) - greedy) * (s1 * T.exp(m1 - top) + s2 * T.exp(m2 - top))


def _scaled(x, t):
    return T.if_then_else(t <= T.float32(GREEDY_TEMPERATURE), x, x / t)


def _prob(x, t, top, total):
    return T.if_then_else(t <= T.float32(GREEDY_TEMPERATURE), T.Cast("float32", x == top) / total,
                          T.exp(x / t - top) / total)


def _chunk_stats(gpu: bool, tx: int) -> tirx.PrimFunc:
    chunk = SOFTMAX_CHUNK
    per_thread = chunk // tx

    @T.prim_func(private=True, s_tir=True)
    def gpu_func(var_logits: T.handle, var_temperature: T.handle, var_cmax: T.handle, var_csum: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch, vocab, chunks = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        temperature = T.match_buffer(var_temperature, (batch,), "float32")
        cmax = T.match_buffer(var_cmax, (batch, chunks), "float32")
        csum = T.match_buffer(var_csum, (batch, chunks), "float32")
        for b in T.thread_binding(batch, thread="blockIdx.y"):
            for c in T.thread_binding(chunks, thread="blockIdx.x"):
                for t in T.thread_binding(tx, thread="threadIdx.x"):
                    with T.sblock("chunk_stats"):
                        # Each thread folds its elements in registers; shared memory only carries the
                        # states between threads (TVM's ThreadSync refuses shared reads inside
                        # conditional expressions).
                        m = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        s = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        m_shared = T.sblock_alloc_buffer((tx,), "float32", scope="shared")
                        s_shared = T.sblock_alloc_buffer((tx,), "float32", scope="shared")
                        greedy: T.let[T.float32] = T.Cast("float32", temperature[b] <= T.float32(GREEDY_TEMPERATURE))
                        m[0] = T.min_value("float32")
                        s[0] = T.float32(0)
                        for i in T.serial(per_thread):
                            if c * chunk + i * tx + t < vocab:
                                _fold(m, s, 0, _scaled(logits[b, c * chunk + i * tx + t], temperature[b]),
                                      temperature[b] <= T.float32(GREEDY_TEMPERATURE))
                        m_shared[t] = m[0]
                        s_shared[t] = s[0]
                        T.tvm_storage_sync("shared")
                        for level in T.unroll(tx.bit_length() - 1):
                            # the sum first (it reads both maxima), then the maximum; one statement
                            # each, so that the barriers stay outside the conditions
                            if t < (tx >> (level + 1)):
                                s_shared[t] = _merged_sum(m_shared[t], s_shared[t], m_shared[t + (tx >> (level + 1))],
                                                          s_shared[t + (tx >> (level + 1))], greedy)
                            T.tvm_storage_sync("shared")
                            if t < (tx >> (level + 1)):
                                m_shared[t] = T.max(m_shared[t], m_shared[t + (tx >> (level + 1))])
                            T.tvm_storage_sync("shared")
                        if t == 0:
                            cmax[b, c] = m_shared[0]
                            csum[b, c] = s_shared[0]

    @T.prim_func(private=True, s_tir=True)
    def cpu_func(var_logits: T.handle, var_temperature: T.handle, var_cmax: T.handle, var_csum: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch, vocab, chunks = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        temperature = T.match_buffer(var_temperature, (batch,), "float32")
        cmax = T.match_buffer(var_cmax, (batch, chunks), "float32")
        csum = T.match_buffer(var_csum, (batch, chunks), "float32")
        for b, c in T.grid(batch, chunks):
            with T.sblock("chunk_stats"):
                m = T.sblock_alloc_buffer((1,), "float32")
                s = T.sblock_alloc_buffer((1,), "float32")
                m[0] = T.min_value("float32")
                s[0] = T.float32(0)
                for i in T.serial(chunk):
                    if c * chunk + i < vocab:
                        _fold(m, s, 0, _scaled(logits[b, c * chunk + i], temperature[b]),
                              temperature[b] <= T.float32(GREEDY_TEMPERATURE))
                cmax[b, c] = m[0]
                csum[b, c] = s[0]

    return gpu_func if gpu else cpu_func


def _normalize(gpu: bool, tx: int) -> tirx.PrimFunc:
    chunk = SOFTMAX_CHUNK
    per_thread = chunk // tx

    @T.prim_func(private=True, s_tir=True)
    def gpu_func(var_logits: T.handle, var_temperature: T.handle, var_cmax: T.handle, var_csum: T.handle,
                 var_probs: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch, vocab, chunks = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        temperature = T.match_buffer(var_temperature, (batch,), "float32")
        cmax = T.match_buffer(var_cmax, (batch, chunks), "float32")
        csum = T.match_buffer(var_csum, (batch, chunks), "float32")
        probs = T.match_buffer(var_probs, (batch, vocab), "float32")
        for b in T.thread_binding(batch, thread="blockIdx.y"):
            for c in T.thread_binding(chunks, thread="blockIdx.x"):
                for t in T.thread_binding(tx, thread="threadIdx.x"):
                    with T.sblock("normalize"):
                        m = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        s = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        m[0] = T.min_value("float32")
                        s[0] = T.float32(0)
                        for k in T.serial(chunks):  # every thread folds the few chunk states itself
                            _combine(m, s, 0, cmax[b, k], csum[b, k], temperature[b] <= T.float32(GREEDY_TEMPERATURE))
                        for i in T.serial(per_thread):
                            if c * chunk + i * tx + t < vocab:
                                probs[b, c * chunk + i * tx + t] = _prob(logits[b, c * chunk + i * tx + t],
                                                                         temperature[b], m[0], s[0])

    @T.prim_func(private=True, s_tir=True)
    def cpu_func(var_logits: T.handle, var_temperature: T.handle, var_cmax: T.handle, var_csum: T.handle,
                 var_probs: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch, vocab, chunks = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        temperature = T.match_buffer(var_temperature, (batch,), "float32")
        cmax = T.match_buffer(var_cmax, (batch, chunks), "float32")
        csum = T.match_buffer(var_csum, (batch, chunks), "float32")
        probs = T.match_buffer(var_probs, (batch, vocab), "float32")
        for b in T.serial(batch):
            with T.sblock("normalize"):
                m = T.sblock_alloc_buffer((1,), "float32")
                s = T.sblock_alloc_buffer((1,), "float32")
                m[0] = T.min_value("float32")
                s[0] = T.float32(0)
                for k in T.serial(chunks):
                    _combine(m, s, 0, cmax[b, k], csum[b, k], temperature[b] <= T.float32(GREEDY_TEMPERATURE))
                for j in T.serial(vocab):
                    probs[b, j] = _prob(logits[b, j], temperature[b], m[0], s[0])

    return gpu_func if gpu else cpu_func


def _vars(*names: str) -> list[tirx.Var]:
    return [tirx.Var(name, "int64") for name in names]


def attach_softmax_with_temperature(bb: relax.BlockBuilder, target: Target) -> relax.GlobalVar:
    """Add ``softmax_with_temperature`` (module docstring) to the module ``bb`` builds."""
    gpu, tx = is_gpu_kind(target.kind.name), threads_per_block(target)
    batch, vocab = _vars("batch_size", "vocab_size")
    logits = relax.Var("logits", relax.TensorType([batch, 1, vocab], "float32"))
    temperature = relax.Var("temperature", relax.TensorType([batch], "float32"))
    stats = relax.TensorType([batch, (vocab + SOFTMAX_CHUNK - 1) // SOFTMAX_CHUNK], "float32")
    with bb.function("softmax_with_temperature", [logits, temperature]):
        with bb.dataflow():
            flat = bb.emit(relax.op.reshape(logits, [batch, vocab]))
            both = bb.emit(relax.call_tir(bb.add_func(_chunk_stats(gpu, tx), "softmax_chunk_stats"),
                                          [flat, temperature], out_ty=[stats, stats]))
            probs = bb.emit(relax.call_tir(
                bb.add_func(_normalize(gpu, tx), "softmax_normalize"),
                [flat, temperature, bb.emit(relax.TupleGetItem(both, 0)), bb.emit(relax.TupleGetItem(both, 1))],
                out_ty=relax.TensorType([batch, vocab], "float32")))
            out = bb.emit_output(relax.op.reshape(probs, [batch, 1, vocab]))
        return bb.emit_func_output(out)


# --- sampling ------------------------------------------------------------------------------------
def _argsort_probs(bb: relax.BlockBuilder, target: Target, vocab_size: int) -> relax.GlobalVar:
    batch, vocab = _vars("batch_size", "vocab_size")
    probs = relax.Var("probs", relax.TensorType([batch, vocab], "float32"))
    with bb.function("argsort_probs", [probs]):
        with bb.dataflow():
            if target.kind.name == "webgpu":  # TVM's GPU argsort is a shader SwiftShader cannot compile
                values, indices = emit_bitonic_argsort(bb, probs, batch, vocab, sort_width(vocab_size),
                                                       threads_per_block(target))
            else:
                indices = bb.emit(relax.op.argsort(probs, axis=-1, descending=True, dtype="int32"))
                values = bb.emit(relax.op.gather_elements(probs, indices, axis=1))
            out = bb.emit_output(relax.Tuple([values, indices]))
        return bb.emit_func_output(out)


def _running_sum(bb: relax.BlockBuilder, x: relax.Expr, batch, vocab, target: Target, vocab_size: int) -> relax.Expr:
    """Inclusive running sums along the rows of ``x`` (``batch``, ``vocab``).  WebGPU: our scan network
    (:mod:`.running_sum`, rows up to ``vocab_size``), as TVM 0.26's GPU scan returned its input
    unscanned there.  Elsewhere TVM's scan, exclusive plus ``x``: TVM 0.26's dispatch sends an
    inclusive scan on a GPU to ``gpu_2d_continuous_cumsum``, which fails to build for WebGPU (a
    64-bit shift narrowed to 32 bits), and an exclusive one to ``topi.gpu.cumsum``."""
    if target.kind.name == "webgpu":
        return emit_running_sum(bb, x, batch, vocab, vocab_size, threads_per_block(target))
    return bb.emit(relax.op.add(bb.emit(relax.op.cumsum(x, axis=1, exclusive=True)), x))


def _row_search(rows, width, value, empty, name: str, reducer=te.min):
    """``reducer`` (``te.min`` or ``te.max``) over ``j < width`` of ``value(i, j)`` for each
    ``i < rows``, in two passes so that GPUs spread a row over threads: per chunk of
    :data:`SEARCH_CHUNK` entries (a thread or block each), then over the chunks.  ``empty`` (the
    reducer's identity for these values) stands for the entries past the row's end; ``value`` is
    evaluated only inside the row.  The same result as one pass: min and max do not round."""
    width, chunk = width.astype("int64"), tirx.const(SEARCH_CHUNK, "int64")
    jj = te.reduce_axis((0, chunk), name="jj")
    parts = te.compute((rows, (width + chunk - 1) // chunk), lambda i, c: reducer(
        tirx.if_then_else(c * chunk + jj < width, value(i, c * chunk + jj), empty), axis=jj), name=f"{name}_chunks")
    c = te.reduce_axis((0, parts.shape[1]), name="c")
    return te.compute((rows,), lambda i: reducer(parts[i, c], axis=c), name=name)


def _sample_with_top_p(bb: relax.BlockBuilder, target: Target, vocab_size: int) -> relax.GlobalVar:
    batch, n, vocab = _vars("batch_size", "num_samples", "vocab_size")
    sorted_probs = relax.Var("sorted_probs", relax.TensorType([batch, vocab], "float32"))
    sorted_indices = relax.Var("sorted_indices", relax.TensorType([batch, vocab], "int32"))
    uniform = relax.Var("uniform_samples", relax.TensorType([n], "float32"))
    rows = relax.Var("sample_indices", relax.TensorType([n], "int32"))
    top_p = relax.Var("top_p", relax.TensorType([batch], "float32"))
    biggest = tirx.max_value("float32")

    def cutoff(running, p):  # the running sum at the first entry reaching top_p (else the total)
        last = running.shape[1] - 1
        return _row_search(running.shape[0], running.shape[1], lambda i, j: tirx.Select(
            tirx.any(running[i, j] >= p[i], j == last), running[i, j], biggest), biggest, "top_p_cutoff")

    def position(running, cut, u, r):  # the first entry whose scaled running sum exceeds the draw
        width = running.shape[1]
        return _row_search(u.shape[0], width, lambda k, j: tirx.Select(  # int32: WebGPU has no 64-bit integers
            tirx.any(u[k] < running[r[k], j] / cut[r[k]], j == width - 1), j.astype("int32"), width.astype("int32")),
            width.astype("int32"), "top_p_position")

    def token(indices, r, pos):
        return te.compute(r.shape, lambda k: indices[r[k], pos[k]], name="top_p_token")

    with bb.function("sample_with_top_p", [sorted_probs, sorted_indices, uniform, rows, top_p]):
        with bb.dataflow():
            running = _running_sum(bb, sorted_probs, batch, vocab, target, vocab_size)
            cut = bb.emit_te(cutoff, running, top_p, primfunc_name_hint="top_p_cutoff")
            pos = bb.emit_te(position, running, cut, uniform, rows, primfunc_name_hint="top_p_position")
            out = bb.emit_output(bb.emit_te(token, sorted_indices, rows, pos, primfunc_name_hint="top_p_token"))
        return bb.emit_func_output(out)


def _multinomial_from_uniform(bb: relax.BlockBuilder, target: Target, vocab_size: int) -> relax.GlobalVar:
    del target, vocab_size  # the same kernels for every target and vocabulary
    batch, n, vocab = _vars("batch_size", "num_samples", "vocab_size")
    probs = relax.Var("probs", relax.TensorType([batch, vocab], "float32"))
    uniform = relax.Var("uniform_samples", relax.TensorType([n], "float32"))
    rows = relax.Var("sample_indices", relax.TensorType([n], "int32"))
    with bb.function("multinomial_from_uniform", [probs, uniform, rows]):
        with bb.dataflow():
            picked = bb.emit(relax.op.multinomial_from_uniform(
                probs, bb.emit(relax.op.reshape(uniform, [n, 1])), bb.emit(relax.op.reshape(rows, [n, 1])), "int32"))
            out = bb.emit_output(relax.op.reshape(picked, [n]))
        return bb.emit_func_output(out)


def _renormalize_by_top_p(bb: relax.BlockBuilder, target: Target, vocab_size: int) -> relax.GlobalVar:
    batch, vocab = _vars("batch_size", "vocab_size")
    probs = relax.Var("probs", relax.TensorType([batch, vocab], "float32"))
    top_p = relax.Var("top_p", relax.TensorType([batch], "float32"))
    pivots = relax.Var("init_pivots", relax.TensorType([batch, 3], "float32"))
    biggest = tirx.max_value("float32")
    # The TE functions read sizes from their tensors (emit_te gives them symbolic shapes of their own).

    def pivot(sorted_p, running, p):  # the smallest kept probability of each row
        return _row_search(sorted_p.shape[0], sorted_p.shape[1], lambda i, j: tirx.Select(
            running[i, j] - sorted_p[i, j] < p[i], sorted_p[i, j], biggest), biggest, "top_p_pivot")

    def kept_sum(sorted_p, running, cut):  # the running sum at the last kept entry
        zero = tirx.const(0, "float32")
        return _row_search(sorted_p.shape[0], sorted_p.shape[1], lambda i, j: tirx.Select(
            sorted_p[i, j] >= cut[i], running[i, j], zero), zero, "top_p_kept_sum", te.max)

    def renormalize(x, cut, total):
        return te.compute(x.shape, lambda i, j: tirx.Select(x[i, j] >= cut[i], x[i, j] / total[i],
                                                            tirx.const(0, "float32")), name="top_p_renorm")

    with bb.function("renormalize_by_top_p", [probs, top_p, pivots]):
        with bb.dataflow():
            sorted_p = bb.emit(relax.op.sort(probs, axis=-1, descending=True))
            running = _running_sum(bb, sorted_p, batch, vocab, target, vocab_size)
            cut = bb.emit_te(pivot, sorted_p, running, top_p, primfunc_name_hint="top_p_pivot")
            total = bb.emit_te(kept_sum, sorted_p, running, cut, primfunc_name_hint="top_p_kept_sum")
            out = bb.emit_output(bb.emit_te(renormalize, probs, cut, total, primfunc_name_hint="top_p_renorm"))
        return bb.emit_func_output(out)


def _sampler_take_probs(bb: relax.BlockBuilder, target: Target, vocab_size: int) -> relax.GlobalVar:
    del target, vocab_size  # the same kernels for every target and vocabulary
    batch, n, m, vocab = _vars("batch_size", "num_samples", "num_positions", "vocab_size")
    probs = relax.Var("unsorted_probs", relax.TensorType([batch, vocab], "float32"))
    sorted_indices = relax.Var("sorted_indices", relax.TensorType([batch, vocab], "int32"))
    rows = relax.Var("sample_indices", relax.TensorType([n], "int32"))
    results = relax.Var("sampling_results", relax.TensorType([n], "int32"))
    offsets = relax.Var("top_prob_offsets", relax.TensorType([m], "int32"))

    def sampled(p, r, tok):
        return te.compute(r.shape, lambda k: p[r[k], tok[k]], name="sampled_values")

    def top_index(idx, off):
        width = idx.shape[1].astype("int32")
        return te.compute(off.shape, lambda k: idx[off[k] // width, off[k] % width], name="top_prob_indices")

    def top_prob(p, idx, off):
        width = idx.shape[1].astype("int32")
        return te.compute(off.shape, lambda k: p[off[k] // width, idx[off[k] // width, off[k] % width]],
                          name="top_prob_probs")

    with bb.function("sampler_take_probs", [probs, sorted_indices, rows, results, offsets]):
        with bb.dataflow():
            values = bb.emit_te(sampled, probs, rows, results, primfunc_name_hint="sampled_values")
            top_p = bb.emit_te(top_prob, probs, sorted_indices, offsets, primfunc_name_hint="top_prob_probs")
            top_i = bb.emit_te(top_index, sorted_indices, offsets, primfunc_name_hint="top_prob_indices")
            out = bb.emit_output(relax.Tuple([values, top_p, top_i]))
        return bb.emit_func_output(out)


_BUILDERS = {"argsort_probs": _argsort_probs, "sample_with_top_p": _sample_with_top_p,
             "multinomial_from_uniform": _multinomial_from_uniform, "renormalize_by_top_p": _renormalize_by_top_p,
             "sampler_take_probs": _sampler_take_probs}


def attach_sampling_functions(bb: relax.BlockBuilder, target: Target, vocab_size: int = DEFAULT_VOCAB) -> list[str]:
    """Add ``softmax_with_temperature`` and the samplers of :func:`sampler_names` for ``target``
    to the module ``bb`` builds; returns the names added, in order.  ``vocab_size``: the model's
    vocabulary, the longest row WebGPU's ``argsort_probs`` sorts (:mod:`.bitonic_sort`; other
    targets take any length)."""
    attach_softmax_with_temperature(bb, target)
    names = sampler_names(target.kind.name)
    for name in names:
        _BUILDERS[name](bb, target, vocab_size)
    return ["softmax_with_temperature", *names]
