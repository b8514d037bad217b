"""A dlight schedule rule for matrix products on the CPU (TVM 0.26's dlight has GEMV and
reduction rules for the CPU, none for GEMM, so prefill matmuls otherwise run as naive loops).

Pattern: one reduction block ``C[s..., j] += f(A[s..., k], W[j, k])`` (spatial loops, then one
reduction loop), optionally with injective producers (weight dequantization) and injective epilogues (cast,
activation, the ``act(gate) * up`` of a gated MLP).  Schedule:

- the reduction is split ``k = ko * 8 + ki`` and ``rfactor``-ed on ``ki``, so eight partial sums
  run in SIMD lanes over contiguous ``k`` (both operands are ``k``-contiguous in the ``NT`` layout);
- rows (all spatial loops but the last) are tiled by 4 so that each weight row is read once per
  4 rows from L1; the loop nest is ``rows_outer, j, rows_inner, ko, ki``;
- the outer row tiles and ``j`` are fused and split across threads.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.schedule.schedule import ScheduleError
from tvm.target import Target
from tvm_ffi import structural_equal

from ..presets import CPU_KIND

LANES = 8
ROW_TILE = 8


def _unit(dom) -> bool:
    return isinstance(dom, int) and dom == 1


def _same_domain(epilogue, main) -> bool:
    """Whether ``epilogue`` iterates over the product's spatial domain or its whole domain (an
    elementwise step on the result, or on the inputs as a norm's scaling is).  Moving an epilogue
    under the product's loop keeps only the part of its domain that the loop covers, so one with a
    larger domain (``pad_kv_heads`` writing zeros past a norm's columns) would leave the rest of
    its output unwritten.  Unit loops are ignored (normalization drops some of them).  The product's
    reduction loop is last (``apply`` checks it)."""
    doms = [it.dom for it in epilogue.iters if not _unit(it.dom)]
    main_doms = [it.dom for it in main.iters if not _unit(it.dom)]

    def equal(a, b) -> bool:
        return a == b if isinstance(a, int) and isinstance(b, int) else bool(structural_equal(a, b))

    return any(len(doms) == len(ref) and all(equal(a, b) for a, b in zip(doms, ref))
               for ref in (main_doms[:-1], main_doms))


class CPUMatmul(ScheduleRule):
    """Schedule ``C[rows, j] = sum_k A[rows, k] * B[j, k]`` kernels for ``llvm`` targets."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        """Return a schedule for ``func`` or ``None`` when the pattern does not match."""
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != CPU_KIND:
            return None
        if func.attrs is not None and func.attrs.get("tirx.is_scheduled", False):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        reductions = [b for b in infos if not b.is_injective()]
        if len(reductions) != 1:
            return None
        main = reductions[0]
        kinds = main.dom_kind()
        if kinds.count("R") != 1 or not kinds.endswith("R") or len(kinds) < 2:
            return None
        index = [b.name for b in infos].index(main.name)
        producers = infos[:index]  # prologues such as weight dequantization
        if any(not p.is_injective() for p in producers):
            return None
        epilogues = infos[index + 1:]  # e.g. cast, or GELU(gate) * up of a gated MLP
        if any(not e.is_injective() for e in epilogues):
            return None
        k_extent = main.iters[-1].dom  # a Python int when static
        if not isinstance(k_extent, int) or k_extent % LANES:
            return None

        try:
            return self._schedule(sch, main, producers, epilogues)
        except ScheduleError:  # a fusion the primitives reject (e.g. a gathered expert product
            return None       # feeding several consumers): leave it to the default schedule

    @staticmethod
    def _schedule(sch, main, producers, epilogues):
        row_extent: int | None = 1
        for it in main.iters[:-2]:
            row_extent = row_extent * it.dom if isinstance(it.dom, int) and isinstance(row_extent, int) else None
        few_rows = row_extent is not None and row_extent < ROW_TILE
        if few_rows:  # decode: recompute each weight inline rather than staging rows
            for producer in reversed(producers):
                sch.compute_inline(producer.block_rv)
            producers = []

        block = main.block_rv
        loops = sch.get_loops(block)
        spatial, j, k = loops[:-2], loops[-2], loops[-1]
        rows = sch.fuse(*spatial) if len(spatial) > 1 else (spatial[0] if spatial else None)
        ko, ki = sch.split(k, factors=[None, LANES])
        if rows is not None and not few_rows:
            r_outer, r_inner = sch.split(rows, factors=[None, ROW_TILE])
            sch.reorder(r_outer, j, r_inner, ko, ki)
        elif rows is not None:
            sch.reorder(rows, j, ko, ki)
        rf = sch.rfactor(ki, factor_axis=len(spatial) + 1)  # lanes innermost in the rf buffer
        sch.set_scope(rf, 0, "local")
        rf_loops = sch.get_loops(rf)
        # rf block loops: [r_outer, j, r_inner, ko, ki] (ki now spatial); put the lanes innermost.
        sch.vectorize(rf_loops[-1])
        outer = sch.fuse(rf_loops[0], rf_loops[1]) if rows is not None else rf_loops[0]
        sch.parallel(outer)
        for producer in producers:  # computed once per (row tile, j): a weight row reused by the tile
            sch.compute_at(producer.block_rv, outer)
            inner = sch.get_loops(producer.block_rv)[-1]
            sch.vectorize(sch.split(inner, factors=[None, LANES])[1])
        sch.reverse_compute_at(block, outer)
        for epilogue in epilogues:  # elementwise on the product: computed with each row tile
            if not _same_domain(epilogue, main):
                break  # it and the rest run after the product, over their whole domain
            sch.reverse_compute_at(epilogue.block_rv, outer)
        sch.decompose_reduction(rf, rf_loops[-2])
        return sch
