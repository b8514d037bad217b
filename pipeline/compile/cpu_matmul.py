"""A dlight schedule rule for matrix products on the CPU (TVM 0.26's dlight has GEMV and
reduction rules for the CPU, none for GEMM, so prefill matmuls otherwise run as naive loops).

Pattern: one reduction block ``C[s..., j] += f(A[s..., k], W[j, k])`` (spatial loops, then one
reduction loop), optionally with injective producers (weight dequantization) and injective epilogues (cast,
activation, the ``act(gate) * up`` of a gated MLP).  Schedule (loop nest, outermost first):

    jo (parallel) / row tile / ji / ko / row in tile / ki (vectorized)

- ``k = ko * LANES + ki``, ``rfactor``-ed on ``ki``: LANES partial sums per output in SIMD lanes
  (two AVX2 vectors: independent FMA chains), over contiguous ``k`` (both operands are
  ``k``-contiguous in the ``NT`` layout);
- each chunk of LANES weights is dequantized once per ``(row tile, j, ko)`` into a small stack
  buffer and used by every row of the tile (``ROW_TILE`` rows): verifying or prefilling a few
  tokens streams each weight from memory once, not once per row;
- ``j = jo * J_TILE + ji``, the ``jo`` loop split across threads: a thread's ``J_TILE`` weight rows
  stay in cache while it sweeps the row tiles (prefill);
- a row count that is symbolic (prefill, ``batch_verify``) or not a multiple of ``ROW_TILE`` is
  padded to one (``pad_einsum``: padded copies of the activations and the output, copied
  serially, as are the epilogues then), so that the partial sums of a tile have a constant size
  and live on the stack (TVM allocates a buffer whose size depends on the row count from its
  workspace pool, per output); one row (decode) is its own tile.

Many rows (the kernels of the prefill entries, marked by :func:`mark_many_row_kernels`, row count
symbolic): a register-tiled product instead (:meth:`CPUMatmul._schedule_many_rows`):

    jo (parallel) / row tile / jm / ko / row in tile / jr / ki (vectorized)

- the task's ``J_TILE_MANY`` weight rows are dequantized once, into a float buffer (whole ``k``),
  and reused by every row tile: the dequantization is paid once per weight, not once per 4 rows;
- the innermost tile is ``MANY_ROW_TILE`` rows x ``JR`` weight rows x ``MANY_LANES`` lanes of
  partial sums (12 AVX2 registers): per ``k`` chunk 8 loads feed 12 FMAs;
- the padded output's copy and the epilogues run with each task's columns, in parallel (a prefill
  chunk's ``gelu(gate) * up`` over 128 x 2048 values was a serial loop after the product).

It is slower for the few rows of ``batch_verify`` (the staged weights are written and read back
for a single row tile: the 4-row head 21 -> 37 ms), hence the separate kernels.

Profile and measurements: docs/performance.md ("CPU matrix products").
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.schedule.schedule import ScheduleError
from tvm.target import Target
from tvm_ffi import structural_equal

from ..presets import CPU_KIND

LANES = 16  # partial sums per output (float32 SIMD lanes; 16 = two AVX2 vectors)

NARROW_LANES = 8  # for a reduction too short or odd for LANES (norms of 8k values)
ROW_TILE = 4  # rows sharing each dequantized weight chunk; 4 x 16 partial sums = 8 AVX2 registers
J_TILE = 16  # weight rows per parallel task
# One-row products (decode) of at most this many weights run on the calling thread: waking the
# engine's sleeping workers (TVM_THREAD_POOL_SPIN_COUNT=0, pipeline/runtime/engine.py) costs more
# than a second core saves on a layer's product (docs/performance.md); the output head stays parallel.
SERIAL_WEIGHTS = 1 << 22

# many-row (prefill) products; see the module docstring
MANY_ROWS_ATTR = "mlc_mtp.many_rows"  # PrimFunc attribute set by mark_many_row_kernels
MANY_ROW_ENTRIES = ("prefill", "batch_prefill", "prefill_to_last_hidden_states")
MANY_LANES = 8  # partial sums per output: one AVX2 vector
MANY_ROW_TILE = 6  # rows of the register tile
JR = 2  # weight rows of the register tile: 6 x 2 x 8 partial sums = 12 AVX2 registers
J_TILE_MANY = 16  # weight rows per parallel task, dequantized once into a float buffer


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
        if not isinstance(k_extent, int) or k_extent % NARROW_LANES:
            return None
        lanes = LANES if k_extent % LANES == 0 else NARROW_LANES

        try:
            if func.attrs is not None and func.attrs.get(MANY_ROWS_ATTR, False):
                many = self._schedule_many_rows(s_tir.Schedule(func), func)
                if many is not None:
                    return many
            return self._schedule(sch, main, producers, epilogues, lanes)
        except ScheduleError:  # a fusion the primitives reject (e.g. a gathered expert product
            return None       # feeding several consumers): leave it to the default schedule

    @staticmethod
    def _schedule(sch, main, producers, epilogues, lanes: int):
        block = main.block_rv
        row_iters = main.iters[:-2]
        row_extent: int | None = 1
        for it in row_iters:
            row_extent = row_extent * it.dom if isinstance(it.dom, int) and isinstance(row_extent, int) else None
        tile = 1 if row_extent == 1 else ROW_TILE
        padded = False  # the padding copies stay serial: a parallel launch costs more (the
        # engine's workers sleep between kernels) than copying a few rows
        if row_iters and tile > 1 and (row_extent is None or row_extent % tile):
            rows_at = max(i for i, it in enumerate(row_iters) if not _unit(it.dom))
            try:
                sch.pad_einsum(block, [tile if i == rows_at else 1 for i in range(len(main.iters))])
                padded = True
            except ScheduleError:  # not a product of two operands (a norm's sum of squares): a row per tile
                tile = 1
        n_extent = main.iters[-2].dom
        j_tile = next((t for t in (J_TILE, 8, 4, 2) if isinstance(n_extent, int) and n_extent % t == 0), 1)

        loops = sch.get_loops(block)
        spatial, j, k = loops[:-2], loops[-2], loops[-1]
        rows = sch.fuse(*spatial) if len(spatial) > 1 else (spatial[0] if spatial else None)
        ko, ki = sch.split(k, factors=[None, lanes])
        jo, ji = sch.split(j, factors=[None, j_tile])
        if rows is not None:
            r_outer, r_inner = sch.split(rows, factors=[None, tile])
            sch.reorder(jo, r_outer, ji, ko, r_inner, ki)
        else:
            sch.reorder(jo, ji, ko, ki)
        rf = sch.rfactor(ki, factor_axis=len(spatial) + 1)  # lanes innermost in the rf buffer
        rf_loops = sch.get_loops(rf)  # [jo, (r_outer), ji, ko, (r_inner), ki]
        sch.vectorize(rf_loops[-1])
        k_extent = main.iters[-1].dom
        if not (row_extent == 1 and isinstance(n_extent, int) and n_extent * k_extent <= SERIAL_WEIGHTS):
            sch.parallel(rf_loops[0])
        rf_ji, rf_ko = (rf_loops[2], rf_loops[3]) if rows is not None else (rf_loops[1], rf_loops[2])
        for producer in producers:  # a chunk of `lanes` weights, dequantized once per (row tile, j, ko)
            sch.compute_at(producer.block_rv, rf_ko)
            sch.vectorize(sch.get_loops(producer.block_rv)[-1])
        sch.reverse_compute_at(block, rf_ji)  # the partial sums' buffer: one tile's, on the stack
        if not padded:  # (padded, the epilogues read the padded output after the product)
            for epilogue in epilogues:  # elementwise on the product: computed with each task's rows
                if not _same_domain(epilogue, main):
                    break  # it and the rest run after the product, over their whole domain
                sch.reverse_compute_at(epilogue.block_rv, rf_loops[0])
        sch.decompose_reduction(rf, rf_ko)
        return sch

    @staticmethod
    def _schedule_many_rows(sch, func):
        """The many-row schedule (module docstring), or None where it does not apply: a static
        row count, a reduction that is not a product of two operands, a ``k`` or an output
        width that the tiles do not divide."""
        infos = normalize_prim_func(sch)
        reductions = [b for b in infos or () if not b.is_injective()]
        if len(reductions) != 1 or not reductions[0].dom_kind().endswith("R"):
            return None
        main = reductions[0]
        index = [b.name for b in infos].index(main.name)
        producers = infos[:index]
        row_iters = main.iters[:-2]
        n_extent, k_extent = main.iters[-2].dom, main.iters[-1].dom
        if (not row_iters or all(isinstance(it.dom, int) for it in row_iters) or k_extent % MANY_LANES
                or not isinstance(n_extent, int) or n_extent % J_TILE_MANY):
            return None
        block = main.block_rv
        rows_at = max(i for i, it in enumerate(row_iters) if not _unit(it.dom))
        try:
            sch.pad_einsum(block, [MANY_ROW_TILE if i == rows_at else 1 for i in range(len(main.iters))])
        except ScheduleError:
            return None
        loops = sch.get_loops(block)
        spatial, j, k = loops[:-2], loops[-2], loops[-1]
        rows = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
        ko, ki = sch.split(k, factors=[None, MANY_LANES])
        jo, jm, jr = sch.split(j, factors=[None, J_TILE_MANY // JR, JR])
        r_outer, r_inner = sch.split(rows, factors=[None, MANY_ROW_TILE])
        sch.reorder(jo, r_outer, jm, ko, r_inner, jr, ki)
        # lanes innermost in the rf buffer, whatever unit axes the loop nest dropped
        rf = sch.rfactor(ki, factor_axis=len(sch.get(block).writes[0].buffer.shape))
        rf_loops = sch.get_loops(rf)  # [jo, r_outer, jm, ko, r_inner, jr, ki]
        sch.vectorize(rf_loops[-1])
        sch.unroll(rf_loops[-2])
        sch.unroll(rf_loops[-3])
        sch.parallel(rf_loops[0])
        for producer in producers:  # the task's weight rows, dequantized once (whole k)
            sch.compute_at(producer.block_rv, rf_loops[0])
            _, inner = sch.split(sch.get_loops(producer.block_rv)[-1], factors=[None, MANY_LANES])
            sch.vectorize(inner)
        sch.reverse_compute_at(block, rf_loops[2])  # the partial sums: one register tile's
        sch.decompose_reduction(rf, rf_loops[3])
        # the padded output's copy and the epilogues, with each task's columns (unless an epilogue
        # covers more than the product's domain: moved, it would leave the rest unwritten)
        moving = all(_same_domain(e, main) for e in infos[index + 1:])
        consumers = list(sch.get_consumers(block)) if moving else []
        while consumers:
            consumer = consumers.pop(0)
            try:
                sch.reverse_compute_at(consumer, rf_loops[0])
            except ScheduleError:
                break  # it and the rest run after the product
            consumers.extend(sch.get_consumers(consumer))
        return sch


def _prim_func_callees(func, mod: tvm.IRModule) -> set:
    """GlobalVars of ``mod``'s PrimFuncs that the Relax function ``func`` refers to."""
    found = set()

    @relax.expr_functor.visitor
    class _Collect(relax.PyExprVisitor):
        def visit_global_var_(self, gv):
            if isinstance(mod[gv], tirx.PrimFunc):
                found.add(gv)

    _Collect().visit_expr(func)
    return found


def _takes_many_rows(func) -> bool:
    """Whether :meth:`CPUMatmul._schedule_many_rows` schedules ``func``."""
    try:
        return CPUMatmul._schedule_many_rows(s_tir.Schedule(func), func) is not None
    except ScheduleError:
        return False


@tvm.transform.module_pass(opt_level=0, name="MarkManyRowKernels")
def mark_many_row_kernels(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Give the prefill entries (:data:`MANY_ROW_ENTRIES`) products of their own, marked with
    :data:`MANY_ROWS_ATTR`, so that :class:`CPUMatmul` schedules them for many rows: a product
    called only by them is marked; one that other functions (``batch_verify``) call too is copied
    as ``<name>_many_rows``, marked, and the prefill entries call the copy.  Run after
    ``FuseTIR``, before the schedule rules; other targets' rules ignore the mark."""
    relax_funcs = {gv: f for gv, f in mod.functions.items() if isinstance(f, relax.Function)}
    called: set = set()
    few: set = set()
    for gv, func in relax_funcs.items():
        (called if gv.name_hint in MANY_ROW_ENTRIES else few).update(_prim_func_callees(func, mod))
    many = [gv for gv in sorted(called, key=lambda g: g.name_hint) if _takes_many_rows(mod[gv])]
    if not many:
        return mod
    builder = relax.BlockBuilder(tvm.IRModule(dict(mod.functions), attrs=mod.attrs, global_infos=mod.global_infos))
    remap = {}
    for gv in many:
        marked = mod[gv].with_attr(MANY_ROWS_ATTR, True)
        if gv in few:
            remap[gv] = builder.add_func(marked.without_attr("global_symbol"), f"{gv.name_hint}_many_rows")
        else:
            builder.update_func(gv, marked)
    if remap:

        @relax.expr_functor.mutator
        class _Redirect(relax.PyExprMutator):
            def visit_global_var_(self, gv):
                return remap.get(gv, gv)

        for gv, func in relax_funcs.items():
            if gv.name_hint in MANY_ROW_ENTRIES:
                builder.update_func(gv, _Redirect().visit_expr(func))
    return builder.get()
