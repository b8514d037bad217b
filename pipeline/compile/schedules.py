"""Schedule rules by name: what a target preset's ``schedule.rules`` may list
(:data:`pipeline.compile.targets.RULE_NAMES`).

``gpu.<Rule>`` and ``cpu.<Rule>`` are TVM dlight's rules (``tvm.s_tir.dlight.gpu`` / ``.cpu``),
``CPUMatmul`` is ours (:mod:`pipeline.compile.cpu_matmul`) and ``GenericMatmul`` is dlight's GPU
``Matmul`` without its vendor paths.  The preset gives the list in order (dlight applies the
first rule that matches each kernel); the code never picks rules by target kind.
"""

from __future__ import annotations

from tvm.s_tir import dlight as dl
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


def schedule_rule(name: str):
    """A new instance of the rule called ``name`` (one of ``targets.RULE_NAMES``).

    Raises:
        KeyError: no rule of that name (presets are validated against ``RULE_NAMES`` first).
    """
    if name == "CPUMatmul":
        return CPUMatmul()
    if name == "GenericMatmul":
        return GenericMatmul()
    namespace, _, rule = name.partition(".")
    module = {"gpu": dl.gpu, "cpu": dl.cpu}.get(namespace)
    if module is None or not hasattr(module, rule):
        raise KeyError(name)
    return getattr(module, rule)()
