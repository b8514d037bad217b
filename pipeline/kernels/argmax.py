"""Greedy token choice on the device: ``argmax_logits(logits (b, V) float32) -> (b,) int32``, the
index of each row's largest logit, the lowest index among equal maxima (numpy's ``argmax`` rule;
NaN logits are not handled).  The runtime's greedy decoding and greedy verification call it so
that only the ids cross to the host (:meth:`pipeline.runtime.engine.Engine.greedy`), not 4 bytes
per vocabulary entry and row.

Two kernels, the same on every target but for their loops: per chunk of :data:`ARGMAX_CHUNK`
entries of a row the chunk's maximum and its index (on a GPU one block of threads per chunk, each
thread scanning its strided share in registers and a tree in shared memory merging the threads'
(value, index) pairs; on the CPU a plain loop), then per row the merge of the row's chunks (64 for
Gemma's 262,144 entries; one thread per row on a GPU).
"""

from __future__ import annotations

from tvm import relax, tirx
from tvm.script import tirx as T
from tvm.target import Target

from ..presets import is_gpu_kind
from .logit_processor import threads_per_block

ARGMAX_CHUNK = 4096  # vocabulary entries per block of the GPU kernel's first pass
NAME = "argmax_logits"


def _takes(value, index, best_value, best_index):
    """Whether (``value``, ``index``) beats the held (``best_value``, ``best_index``): larger, or
    equal and earlier; a held index of -1 is "nothing yet" (so a row of -inf still gets index 0).
    Arithmetic and comparisons only (TVM's ThreadSync cannot place shared-memory reads inside a
    conditional expression)."""
    return tirx.Or(best_index < 0, tirx.And(index >= 0, tirx.Or(
        value > best_value, tirx.And(value == best_value, index < best_index))))


def _chunk_argmax(tx: int) -> tirx.PrimFunc:
    chunk = ARGMAX_CHUNK
    per_thread = chunk // tx

    @T.prim_func(private=True, s_tir=True)
    def func(var_logits: T.handle, var_cval: T.handle, var_cidx: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch, vocab, chunks = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        cval = T.match_buffer(var_cval, (batch, chunks), "float32")
        cidx = T.match_buffer(var_cidx, (batch, chunks), "int32")
        for b in T.thread_binding(batch, thread="blockIdx.y"):
            for c in T.thread_binding(chunks, thread="blockIdx.x"):
                for t in T.thread_binding(tx, thread="threadIdx.x"):
                    with T.sblock("chunk_argmax"):
                        v = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        i = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        v_shared = T.sblock_alloc_buffer((tx,), "float32", scope="shared")
                        i_shared = T.sblock_alloc_buffer((tx,), "int32", scope="shared")
                        take = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        # no -inf literal (WGSL has none); a thread holding nothing has index -1,
                        # which loses every comparison (_takes), so its value never wins
                        v[0] = T.min_value("float32")
                        i[0] = -1
                        for k in T.serial(per_thread):  # this thread's indices rise with k: ties keep the first
                            if c * chunk + k * tx + t < vocab:
                                if i[0] < 0 or logits[b, c * chunk + k * tx + t] > v[0]:
                                    v[0] = logits[b, c * chunk + k * tx + t]
                                    i[0] = c * chunk + k * tx + t
                        v_shared[t] = v[0]
                        i_shared[t] = i[0]
                        T.tvm_storage_sync("shared")
                        for level in T.unroll(tx.bit_length() - 1):
                            # decide first (reading both pairs), then move the winner's value and
                            # index together; the barriers stay outside the conditions
                            if t < (tx >> (level + 1)):
                                take[0] = T.Select(
                                    _takes(v_shared[t + (tx >> (level + 1))], i_shared[t + (tx >> (level + 1))],
                                           v_shared[t], i_shared[t]), 1, 0)
                            T.tvm_storage_sync("shared")
                            if t < (tx >> (level + 1)):
                                v_shared[t] = T.Select(take[0] == 1, v_shared[t + (tx >> (level + 1))], v_shared[t])
                                i_shared[t] = T.Select(take[0] == 1, i_shared[t + (tx >> (level + 1))], i_shared[t])
                            T.tvm_storage_sync("shared")
                        if t == 0:
                            cval[b, c] = v_shared[0]
                            cidx[b, c] = i_shared[0]

    return func


def _merge_chunks(gpu: bool) -> tirx.PrimFunc:
    @T.prim_func(private=True, s_tir=True)
    def cpu_func(var_cval: T.handle, var_cidx: T.handle, var_ids: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch, chunks = T.int32(), T.int32()
        cval = T.match_buffer(var_cval, (batch, chunks), "float32")
        cidx = T.match_buffer(var_cidx, (batch, chunks), "int32")
        ids = T.match_buffer(var_ids, (batch,), "int32")
        for b in T.serial(batch):
            with T.sblock("merge_chunks"):
                v = T.sblock_alloc_buffer((1,), "float32")
                i = T.sblock_alloc_buffer((1,), "int32")
                v[0] = cval[b, 0]
                i[0] = cidx[b, 0]
                for k in T.serial(chunks - 1):
                    if cval[b, k + 1] > v[0]:
                        v[0] = cval[b, k + 1]
                        i[0] = cidx[b, k + 1]
                ids[b] = i[0]

    @T.prim_func(private=True, s_tir=True)
    def gpu_func(var_cval: T.handle, var_cidx: T.handle, var_ids: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch, chunks = T.int32(), T.int32()
        cval = T.match_buffer(var_cval, (batch, chunks), "float32")
        cidx = T.match_buffer(var_cidx, (batch, chunks), "int32")
        ids = T.match_buffer(var_ids, (batch,), "int32")
        for b in T.thread_binding(batch, thread="blockIdx.x"):
            for t in T.thread_binding(1, thread="threadIdx.x"):
                with T.sblock("merge_chunks"):
                    v = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    i = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    v[0] = cval[b, 0]
                    i[0] = cidx[b, 0]
                    for k in T.serial(chunks - 1):  # chunks in index order: strictly larger wins
                        if cval[b, k + 1] > v[0]:
                            v[0] = cval[b, k + 1]
                            i[0] = cidx[b, k + 1]
                    ids[b] = i[0]

    return gpu_func if gpu else cpu_func


def _chunk_argmax_cpu() -> tirx.PrimFunc:
    chunk = ARGMAX_CHUNK

    @T.prim_func(private=True, s_tir=True)
    def func(var_logits: T.handle, var_cval: T.handle, var_cidx: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch, vocab, chunks = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab), "float32")
        cval = T.match_buffer(var_cval, (batch, chunks), "float32")
        cidx = T.match_buffer(var_cidx, (batch, chunks), "int32")
        for b, c in T.grid(batch, chunks):
            with T.sblock("chunk_argmax"):
                v = T.sblock_alloc_buffer((1,), "float32")
                i = T.sblock_alloc_buffer((1,), "int32")
                v[0] = logits[b, c * chunk]
                i[0] = c * chunk
                for k in T.serial(chunk - 1):
                    if c * chunk + k + 1 < vocab:
                        if logits[b, c * chunk + k + 1] > v[0]:
                            v[0] = logits[b, c * chunk + k + 1]
                            i[0] = c * chunk + k + 1
                cval[b, c] = v[0]
                cidx[b, c] = i[0]

    return func


def attach_argmax(bb: relax.BlockBuilder, target: Target) -> relax.GlobalVar:
    """Add ``argmax_logits`` (module docstring) for ``target`` to the module ``bb`` builds."""
    batch, vocab = tirx.Var("batch_size", "int64"), tirx.Var("vocab_size", "int64")
    logits = relax.Var("logits", relax.TensorType([batch, vocab], "float32"))
    ids = relax.TensorType([batch], "int32")
    gpu = is_gpu_kind(target.kind.name)
    chunks = (vocab + ARGMAX_CHUNK - 1) // ARGMAX_CHUNK
    stats = [relax.TensorType([batch, chunks], dtype) for dtype in ("float32", "int32")]
    with bb.function(NAME, [logits]):
        with bb.dataflow():
            per_chunk = _chunk_argmax(threads_per_block(target)) if gpu else _chunk_argmax_cpu()
            both = bb.emit(relax.call_tir(bb.add_func(per_chunk, "argmax_chunks"), [logits], out_ty=stats))
            out = bb.emit_output(relax.call_tir(
                bb.add_func(_merge_chunks(gpu), "argmax_merge_chunks"),
                [bb.emit(relax.TupleGetItem(both, 0)), bb.emit(relax.TupleGetItem(both, 1))], out_ty=ids))
        return bb.emit_func_output(out)
