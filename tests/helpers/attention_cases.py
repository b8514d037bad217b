"""Random inputs for the windowed attention kernels, a float64 reference, and runners that call a
kernel compiled for the CPU (TVM's LLVM target) or its OpenCL translation on PoCL (a CPU OpenCL
implementation: work-groups, local memory and barriers as on a GPU).

The reference applies the mask from absolute positions (``key <= query`` when causal,
``query - key < window`` on sliding layers), independently of the kernels' index arithmetic.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from pipeline.kernels import PAGE_SIZE
from pipeline.kernels import attention as ak
from pipeline.kernels.attention_cpu import SERIAL_DECODE_KEYS
from tests.helpers.opencl import PoCL, build_opencl, call_tvm

H_KV, H_Q, WINDOW = 2, 4, 8
EMPTY_LSE = -1e30


@dataclasses.dataclass
class Case:
    """One kernel call: ``buffers`` and ``scalars`` by the kernel's parameter names, and the
    reference ``output`` (float64) and ``lse`` (log2 units, -1e30 where no key is visible)."""

    buffers: dict
    scalars: dict
    output: np.ndarray
    lse: np.ndarray


def reference(q_rows, q_positions, keys, values, key_positions, scale, causal, window):
    """float64 attention of ``q_rows`` (n, h_q, d) over keys (m, h_kv, d); returns output, lse (log2)."""
    n, h_q, _ = q_rows.shape
    group = h_q // keys.shape[1]
    out = np.zeros(q_rows.shape)
    lse = np.full((n, h_q), EMPTY_LSE)
    for r in range(n):
        visible = np.ones(len(key_positions), bool)
        if causal:
            visible &= key_positions <= q_positions[r]
        if scale < 0:
            visible &= q_positions[r] - key_positions < window
        if not visible.any():
            continue
        for h in range(h_q):
            s = keys[visible, h // group] @ q_rows[r, h].astype(np.float64) * abs(scale)
            m = s.max()
            p = np.exp(s - m)
            out[r, h] = p @ values[visible, h // group] / p.sum()
            lse[r, h] = (m + math.log(p.sum())) / math.log(2)
    return out, lse


def _indptr(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def ragged_case(rng, d, dtype, sliding, q_lengths=(5, 13, 1)):
    """A batch of prefill chunks attending among themselves (the runtime's ragged call: keys = queries)."""
    indptr = _indptr(q_lengths)
    n = int(indptr[-1])
    q = rng.standard_normal((n, H_Q, d)).astype(dtype)
    k = rng.standard_normal((n, H_KV, d)).astype(dtype)
    v = rng.standard_normal((n, H_KV, d)).astype(dtype)
    scale = -0.3 if sliding else 0.3
    output, lse = np.zeros((n, H_Q, d)), np.zeros((n, H_Q))
    for b in range(len(q_lengths)):
        rows = slice(indptr[b], indptr[b + 1])
        pos = np.arange(q_lengths[b])
        output[rows], lse[rows] = reference(q[rows], pos, k[rows].astype(np.float64),
                                            v[rows].astype(np.float64), pos, scale, True, WINDOW)
    buffers = dict(q=q, q_indptr=indptr, k=k, v=v, kv_indptr=indptr, q_pos=np.zeros(n, np.int32),
                   k_pos_offset=np.zeros(len(q_lengths), np.int32))
    scalars = dict(batch=len(q_lengths), n_rows=n, causal=1, rotary_mode=0, rope_scale=1.0, rope_theta=1e4,
                   sm_scale=scale)
    return Case(buffers, scalars, output, lse)


def paged_case(rng, d, dtype, sliding, causal, prefix=(40, 3, 0), q_lengths=(13, 4, 2), decode=False):
    """Queries against keys in a shuffled paged cache.  Sequence ``b`` holds ``prefix[b]`` cached
    keys (plus its own chunk when ``causal``: the runtime then appends before attending); its
    queries sit at positions ``prefix[b] + i``.  With ``decode`` every sequence has one query."""
    if decode:
        q_lengths = (1,) * len(prefix)
    stored = [p + (n if causal else 0) for p, n in zip(prefix, q_lengths)]
    pages_of = [math.ceil(s / PAGE_SIZE) for s in stored]
    page_ids = rng.permutation(sum(pages_of) + 3).astype(np.int32)  # a few pages left unused
    pages = rng.standard_normal((len(page_ids), 2, H_KV, PAGE_SIZE, d)).astype(dtype)
    page_indptr = _indptr(pages_of)
    length_info = np.array([s - (p - 1) * PAGE_SIZE if p else 0 for s, p in zip(stored, pages_of)], np.int32)
    q_indptr = _indptr(q_lengths)
    n = int(q_indptr[-1])
    q = rng.standard_normal((n, H_Q, d)).astype(dtype)
    q_pos = np.concatenate([prefix[b] + np.arange(q_lengths[b]) for b in range(len(prefix))]).astype(np.int32)
    scale = -0.3 if sliding else 0.3
    output, lse = np.zeros((n, H_Q, d)), np.zeros((n, H_Q))
    for b, count in enumerate(stored):
        ids = page_ids[page_indptr[b]:page_indptr[b + 1]]
        keys = pages[ids, 0].transpose(0, 2, 1, 3).reshape(-1, H_KV, d)[:count].astype(np.float64)
        vals = pages[ids, 1].transpose(0, 2, 1, 3).reshape(-1, H_KV, d)[:count].astype(np.float64)
        rows = slice(q_indptr[b], q_indptr[b + 1])
        output[rows], lse[rows] = reference(q[rows], q_pos[rows], keys, vals, np.arange(count), scale,
                                            causal, WINDOW)
    buffers = dict(q=q, pages=pages, page_indptr=page_indptr, page_values=page_ids, length_info=length_info,
                   k_pos_offset=np.zeros(len(prefix), np.int32), q_pos=q_pos)
    scalars = dict(batch=len(prefix), causal=int(causal), rotary_mode=0, rope_scale=1.0, rope_theta=1e4,
                   sm_scale=scale)
    if not decode:
        buffers["q_indptr"] = q_indptr
        scalars["n_rows"] = n
    return Case(buffers, scalars, output, lse)


def _arrays(case: Case, fill: float) -> dict:
    """The case's buffers plus ``output`` and ``lse`` filled with ``fill``."""
    return {**case.buffers, "output": np.full(case.output.shape, fill, case.buffers["q"].dtype),
            "lse": np.full(case.lse.shape, fill, np.float32)}


def run_cpu(func, case: Case):
    """Compile ``func`` for the CPU and call it; returns (output, lse)."""
    import tvm

    lib = tvm.compile(tvm.IRModule({"kernel": func}), target="llvm")
    result = call_tvm(lib[func.attrs["global_symbol"]], func, _arrays(case, 0), case.scalars)
    return result["output"], result["lse"]


def run_pocl(func, case: Case):
    """Run ``func``'s OpenCL translation on PoCL as its host code launches it; returns (output, lse).
    Outputs start as NaN: every element must be written."""
    import tvm

    name = str(func.attrs["global_symbol"])
    build = build_opencl({name: func}, tvm.target.Target({"kind": "opencl", "host": {"kind": "llvm"}}))
    result, _ = PoCL(build).run(name, _arrays(case, np.nan), case.scalars)
    return result["output"], result["lse"]


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
            # one sequence: the CPU kernel reads a short cache serially, a long one in parallel
            (f"decode-one-short-{kind}", ak.paged_decode, {"page_size": PAGE_SIZE},
             paged_case(rng, d, dtype, sliding, causal=True, prefix=(40,), decode=True)),
            (f"decode-one-long-{kind}", ak.paged_decode, {"page_size": PAGE_SIZE},
             paged_case(rng, d, dtype, sliding, causal=True, prefix=(SERIAL_DECODE_KEYS + 40,), decode=True)),
            # flash-decoding (GPU kernels; the CPU kernel ignores ``split``), on draws of its own so
            # that the other cases' inputs stay as they were
            (f"decode-split-{kind}", ak.paged_decode, {"page_size": PAGE_SIZE, "split": True},
             paged_case(np.random.default_rng([seed, int(sliding)]), d, dtype, sliding, causal=True, decode=True)),
        ]
    return out


def split_prefill_cases(seed: int, d: int, dtype: str):
    """``paged_prefill(..., split=True)`` (GPU kernels): a verify pass's few rows (the cached keys
    of each row split over blocks, then merged), sliding and full, and more rows than
    ``SPLIT_PREFILL_ROWS`` (the one-block-per-row branch of the same function).  Apart from
    :func:`cases`: each runs for seconds on PoCL."""
    extra = {"page_size": PAGE_SIZE, "split": True}
    return [
        ("paged-prefix-split-sliding", ak.paged_prefill, extra,
         paged_case(np.random.default_rng([seed, 1]), d, dtype, True, causal=False, q_lengths=(4, 2, 1))),
        ("paged-causal-split-full", ak.paged_prefill, extra,
         paged_case(np.random.default_rng([seed, 2]), d, dtype, False, causal=True, q_lengths=(5, 2, 1))),
        ("paged-causal-many-split-sliding", ak.paged_prefill, extra,
         paged_case(np.random.default_rng([seed, 3]), d, dtype, True, causal=True)),
    ]


def check(case, output, lse, dtype):
    empty = case.lse == EMPTY_LSE
    assert not np.isnan(output).any() and not np.isnan(lse).any()
    np.testing.assert_array_equal(lse[empty], np.float32(EMPTY_LSE))
    np.testing.assert_array_equal(output[empty], 0)
    np.testing.assert_allclose(lse[~empty], case.lse[~empty], atol=TOLERANCE[dtype], rtol=0)
    np.testing.assert_allclose(output.astype(np.float64), case.output, atol=TOLERANCE[dtype], rtol=0)
