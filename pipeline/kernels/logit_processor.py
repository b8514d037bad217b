"""The logit processors MLC LLM's engine and WebLLM call on a model library, as TIR functions.

Names, argument order, shapes and semantics are MLC LLM's (read from mlc-llm
``python/mlc_llm/compiler_pass/attach_logit_processor.py`` and the callers in
``cpp/serve/logit_processor.cc`` and WebLLM ``src/llm_chat.ts``); the kernels are ours.  All three
update ``logits`` (float32, ``(batch_size, vocab_size)``) in place and return nothing:

- ``apply_logit_bias_inplace(logits, pos2seq_id, token_ids, logit_bias)``: for each ``i`` of
  ``num_token``, ``logits[pos2seq_id[i], token_ids[i]] += logit_bias[i]`` (int32, int32, float32).
- ``apply_penalty_inplace(logits, seq_ids, pos2seq_id, token_ids, token_cnt, penalties)``: for
  each ``i``, with ``s = pos2seq_id[i]`` (a row of ``penalties``, ``(num_seq, 3)`` float32 =
  presence, frequency, repetition) and the logit ``x = logits[seq_ids[s], token_ids[i]]``:
  ``x -= presence + token_cnt[i] * frequency``, then ``x *= repetition`` if ``x < 0`` else
  ``x /= repetition``.
- ``apply_bitmask_inplace(logits, seq_ids, bitmask)``: ``bitmask`` is int32
  ``(batch_size, ceil(vocab_size / 32))``, bit ``v % 32`` of word ``v // 32`` of row ``r``
  allowing token ``v``; for each ``r`` in ``seq_ids`` every disallowed logit of row ``r`` becomes
  the lowest float32.

Shape variables are int32 (WebGPU has no 64-bit integers).  On a GPU the work is spread one
element per thread over the flattened range (tokens, or rows x vocabulary), in blocks of
:func:`threads_per_block` threads; on the CPU (``llvm``) the loops are serial.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T
from tvm.target import Target

from ..presets import is_gpu_kind

MAX_BLOCK_THREADS = 256  # threads per block for the element-wise kernels here and in .sampling


def threads_per_block(target: Target) -> int:
    """Threads per block of the element-wise kernels for ``target``: :data:`MAX_BLOCK_THREADS`,
    or the target's ``max_num_threads`` if lower."""
    return min(MAX_BLOCK_THREADS, int(target.attrs.get("max_num_threads", MAX_BLOCK_THREADS)))


def _attrs(name: str) -> dict:
    return {"global_symbol": name, "tirx.noalias": True, "tirx.is_scheduled": True}


def _logit_bias(gpu: bool, tx: int) -> tirx.PrimFunc:
    @T.prim_func(s_tir=True)
    def cpu(var_logits: T.handle, var_pos2seq_id: T.handle, var_token_ids: T.handle, var_logit_bias: T.handle):
        T.func_attr(_attrs("apply_logit_bias_inplace"))
        batch_size, vocab_size, num_token = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        pos2seq_id = T.match_buffer(var_pos2seq_id, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        logit_bias = T.match_buffer(var_logit_bias, (num_token,), "float32")
        for i in T.serial(num_token):
            with T.sblock("bias"):
                logits[pos2seq_id[i], token_ids[i]] = logits[pos2seq_id[i], token_ids[i]] + logit_bias[i]

    @T.prim_func(s_tir=True)
    def gpu_func(var_logits: T.handle, var_pos2seq_id: T.handle, var_token_ids: T.handle,
                 var_logit_bias: T.handle):
        T.func_attr(_attrs("apply_logit_bias_inplace"))
        batch_size, vocab_size, num_token = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        pos2seq_id = T.match_buffer(var_pos2seq_id, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        logit_bias = T.match_buffer(var_logit_bias, (num_token,), "float32")
        for bx in T.thread_binding((num_token + tx - 1) // tx, thread="blockIdx.x"):
            for t in T.thread_binding(tx, thread="threadIdx.x"):
                with T.sblock("bias"):
                    if bx * tx + t < num_token:
                        i: T.let[T.int32] = bx * tx + t
                        logits[pos2seq_id[i], token_ids[i]] = logits[pos2seq_id[i], token_ids[i]] + logit_bias[i]

    return gpu_func if gpu else cpu


@T.macro
def _penalize(logits, seq_ids, pos2seq_id, token_ids, token_cnt, penalties, i):
    s: T.let[T.int32] = pos2seq_id[i]
    row: T.let[T.int32] = seq_ids[s]
    x: T.let[T.float32] = logits[row, token_ids[i]] - (
        penalties[s, 0] + T.Cast("float32", token_cnt[i]) * penalties[s, 1])
    logits[row, token_ids[i]] = T.if_then_else(x < T.float32(0), x * penalties[s, 2], x / penalties[s, 2])


def _penalty(gpu: bool, tx: int) -> tirx.PrimFunc:
    @T.prim_func(s_tir=True)
    def cpu(var_logits: T.handle, var_seq_ids: T.handle, var_pos2seq_id: T.handle, var_token_ids: T.handle,
            var_token_cnt: T.handle, var_penalties: T.handle):
        T.func_attr(_attrs("apply_penalty_inplace"))
        batch_size, vocab_size, num_token, num_seq = T.int32(), T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        pos2seq_id = T.match_buffer(var_pos2seq_id, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        token_cnt = T.match_buffer(var_token_cnt, (num_token,), "int32")
        penalties = T.match_buffer(var_penalties, (num_seq, 3), "float32")
        for i in T.serial(num_token):
            with T.sblock("penalty"):
                _penalize(logits, seq_ids, pos2seq_id, token_ids, token_cnt, penalties, i)

    @T.prim_func(s_tir=True)
    def gpu_func(var_logits: T.handle, var_seq_ids: T.handle, var_pos2seq_id: T.handle, var_token_ids: T.handle,
                 var_token_cnt: T.handle, var_penalties: T.handle):
        T.func_attr(_attrs("apply_penalty_inplace"))
        batch_size, vocab_size, num_token, num_seq = T.int32(), T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        pos2seq_id = T.match_buffer(var_pos2seq_id, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        token_cnt = T.match_buffer(var_token_cnt, (num_token,), "int32")
        penalties = T.match_buffer(var_penalties, (num_seq, 3), "float32")
        for bx in T.thread_binding((num_token + tx - 1) // tx, thread="blockIdx.x"):
            for t in T.thread_binding(tx, thread="threadIdx.x"):
                with T.sblock("penalty"):
                    if bx * tx + t < num_token:
                        _penalize(logits, seq_ids, pos2seq_id, token_ids, token_cnt, penalties, bx * tx + t)

    return gpu_func if gpu else cpu


@T.macro
def _mask(logits, seq_ids, bitmask, vocab_size, flat):
    # row seq_ids[flat // vocab_size], column flat % vocab_size, written out rather than let-bound:
    # TVM 0.26's SPIR-V code generator rejects the let bindings once lowering has copied them
    # ("Let cannot bind the same var to two different values")
    if T.bitwise_and(T.shift_right(bitmask[seq_ids[flat // vocab_size], flat % vocab_size // 32],
                                   flat % vocab_size % 32), 1) == 0:
        logits[seq_ids[flat // vocab_size], flat % vocab_size] = T.min_value("float32")


def _bitmask(gpu: bool, tx: int) -> tirx.PrimFunc:
    @T.prim_func(s_tir=True)
    def cpu(var_logits: T.handle, var_seq_ids: T.handle, var_bitmask: T.handle):
        T.func_attr(_attrs("apply_bitmask_inplace"))
        batch_size, vocab_size, num_seq = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        bitmask = T.match_buffer(var_bitmask, (batch_size, (vocab_size + 31) // 32), "int32")
        for flat in T.serial(num_seq * vocab_size):
            with T.sblock("mask"):
                _mask(logits, seq_ids, bitmask, vocab_size, flat)

    @T.prim_func(s_tir=True)
    def gpu_func(var_logits: T.handle, var_seq_ids: T.handle, var_bitmask: T.handle):
        T.func_attr(_attrs("apply_bitmask_inplace"))
        batch_size, vocab_size, num_seq = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        bitmask = T.match_buffer(var_bitmask, (batch_size, (vocab_size + 31) // 32), "int32")
        for bx in T.thread_binding((num_seq * vocab_size + tx - 1) // tx, thread="blockIdx.x"):
            for t in T.thread_binding(tx, thread="threadIdx.x"):
                with T.sblock("mask"):
                    if bx * tx + t < num_seq * vocab_size:
                        _mask(logits, seq_ids, bitmask, vocab_size, bx * tx + t)

    return gpu_func if gpu else cpu


def logit_processors(target: Target) -> dict[str, tirx.PrimFunc]:
    """MLC's three logit processors for ``target`` (the module docstring gives their contracts),
    by name: GPU kernels for a kind of :data:`~pipeline.presets.GPU_KINDS`, serial loops otherwise."""
    gpu, tx = is_gpu_kind(target.kind.name), threads_per_block(target)
    return {"apply_logit_bias_inplace": _logit_bias(gpu, tx), "apply_penalty_inplace": _penalty(gpu, tx),
            "apply_bitmask_inplace": _bitmask(gpu, tx)}
