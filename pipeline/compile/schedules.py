"""Schedule rules by name: what a target preset's ``schedule.rules`` may list
(:data:`pipeline.compile.targets.RULE_NAMES`).

``gpu.<Rule>`` and ``cpu.<Rule>`` are TVM dlight's rules (``tvm.s_tir.dlight.gpu`` / ``.cpu``),
``CPUMatmul`` is ours (:mod:`pipeline.compile.cpu_matmul`), ``GenericMatmul`` is dlight's GPU
``Matmul`` without its vendor paths and ``LowBatchDispatch`` gives a product with a symbolic row
count dlight's ``LowBatchGEMV`` kernels for a few rows and the preset's later rules for more.
The preset gives the list in order (dlight applies the first rule that matches each kernel); the
code never picks rules by target kind.
"""

from __future__ import annotations

from collections.abc import Sequence

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.schedule.schedule import ScheduleError
from tvm.target import Target

from .cpu_matmul import CPUMatmul


class GenericMatmul(dl.gpu.Matmul):
    """dlight's ``gpu.Matmul`` with its vendor paths skipped.

    ``gpu.Matmul.apply`` hands Metal matmuls to ``MetalMatmul`` (simdgroup matrices; TVM 0.27
    crashes inside it) and float16/int8 CUDA matmuls on sm_70+ to tensor-core rules, choosing by
    ``target.kind``.  This rule calls the same ``apply`` with a stand-in target of a kind that has
    no vendor path (OpenCL without Adreno, with the real target's ``max_num_threads``), so every
    target gets dlight's generic tiled matmul under its default ``Matmul.Config`` (shared-memory
    tiles, 8x8 threads computing 4x4 outputs each).  The schedule carries no target, so it then
    compiles for the real one.
    """

    def apply(self, func, target, tunable):
        if not self.is_target_available(target):
            return None
        threads = int(target.attrs.get("max_num_threads", 256))
        return super().apply(func, Target({"kind": "opencl", "max_num_threads": threads}), tunable)


def _has_product_block(func) -> bool:
    """Whether ``func`` has a block of a product with weights: ``matmul`` (our dequantize-matmul,
    :mod:`pipeline.quantization.group_quant`) or TVM's legalized ``NT_matmul``."""
    names = []
    tirx.stmt_functor.post_order_visit(
        func.body, lambda node: names.append(node.name_hint) if isinstance(node, tirx.SBlock) else None)
    return any("matmul" in name for name in names)


class LowBatchDispatch(ScheduleRule):
    """A product with weights whose row count is its one symbolic variable (``batch_verify``'s draft tokens, the
    prefill entries' chunk) compiled three ways in one function, chosen at run time by the row
    count: dlight's ``LowBatchGEMV`` with rows padded to 2 for 1-2 rows and to 4 for 3-8 rows
    (each block reads a weight row once and uses it for every row, as a decode step's GEMV does),
    and the first of ``rest`` (the preset's later rules, e.g. ``gpu.Matmul``) that schedules it for
    more rows.  Without it a verify pass's products get ``Matmul``'s tiles, sized for a prefill
    chunk; on an H100 that pass cost about three decode steps (docs/cuda.md).  The design follows MLC LLM's
    ``LowBatchGemvSpecialize`` pass (``python/mlc_llm/compiler_pass/low_batch_specialization.py``):
    the branches test ``tvm_thread_invariant(rows <= limit)``, so each branch is its own kernel
    launch chosen on the host.  Functions it does not match go on to ``rest`` unchanged.
    """

    BRANCHES = ((2, 2), (8, 4))  # (largest row count, LowBatchGEMV's padding bucket)

    def __init__(self, rest=()):
        self.rest = list(rest)

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc):
            return None
        symbolic = {dim for param in func.params for dim in getattr(param, "shape", ()) if isinstance(dim, tirx.Var)}
        if len(symbolic) != 1:
            return None
        rows = symbolic.pop()
        if not _has_product_block(func):  # e.g. attention scores over a symbolic number of keys,
            return None                   # which LowBatchGEMV would take for the rows (and fail on)
        bodies = []
        for _, bucket in self.BRANCHES:
            try:
                low = dl.gpu.LowBatchGEMV(bucket).apply(func, target, False)
            except ScheduleError:  # e.g. a gathered expert product, which pad_einsum rejects
                return None
            if not isinstance(low, s_tir.Schedule):
                return None
            bodies.append(low.mod["main"].body)
        for rule in self.rest:
            many = rule.apply(func, target, tunable)
            if many is not None:
                break
        else:
            return None
        many = many[0] if isinstance(many, list) else many
        body = many.mod["main"].body
        for (limit, _), low_body in reversed(list(zip(self.BRANCHES, bodies))):
            body = tirx.IfThenElse(tirx.op.tvm_thread_invariant(rows <= limit), low_body, body)
        return s_tir.Schedule(func.with_body(tirx.SBlockRealize([], True, tirx.SBlock([], [], [], "root", body))))


def schedule_rule(name: str, rest: Sequence = ()):
    """A new instance of the rule called ``name`` (one of ``targets.RULE_NAMES``); ``rest``, the
    rule instances listed after it, is what ``LowBatchDispatch`` schedules many rows with.

    Raises:
        KeyError: no rule of that name (presets are validated against ``RULE_NAMES`` first).
    """
    if name == "CPUMatmul":
        return CPUMatmul()
    if name == "GenericMatmul":
        return GenericMatmul()
    if name == "LowBatchDispatch":
        return LowBatchDispatch(rest)
    namespace, _, rule = name.partition(".")
    module = {"gpu": dl.gpu, "cpu": dl.cpu}.get(namespace)
    if module is None or not hasattr(module, rule):
        raise KeyError(name)
    return getattr(module, rule)()
