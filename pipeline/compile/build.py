"""Export a model definition to Relax, compile it with TVM for a preset, and export the library.

The library carries MLC LLM's entry points plus a ``_metadata`` function returning JSON that
describes the parameters and sizes (mlc-llm ``interface/compile.py`` attaches the same; its
runtime reads it to load weights in order).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import tvm
from tvm import relax
from tvm.s_tir import dlight as dl

from ..errors import PipelineError
from ..quantization import QuantScheme, quantize_model
from .cpu_matmul import CPUMatmul
from .targets import TargetPreset


def library_name(model_name: str, quantization: str, preset: TargetPreset) -> str:
    """MLC's library file name: ``<name>-<quantization>-<target>.<ext>``."""
    return f"{model_name}-{quantization}-{preset.name}.{preset.library}"


def _attach_metadata(mod: tvm.IRModule, metadata: dict[str, Any]) -> tvm.IRModule:
    bb = relax.BlockBuilder(mod)
    with bb.function("_metadata", params=[]):
        bb.emit_func_output(relax.StringImm(json.dumps(metadata, sort_keys=True)))
    return bb.get()


def export_model(family, config, scheme: QuantScheme, preset: TargetPreset, model_name: str):
    """Build the Relax module for ``config`` under ``scheme``.

    Returns ``(IRModule, [(param name, shape, dtype)], quantized weight names)``; parameter order
    is the order the compiled functions take them in.
    """
    if scheme.model_dtype == "float16" and not preset.supports_fp16:
        raise PipelineError(
            f"{preset.path}: target {preset.name} has no float16 support; use q0f32 or q4f32_1"
        )
    preset.check_buildable()
    model = family.model_cls(config, scheme.model_dtype)
    model, quantized = quantize_model(model, scheme)
    target = preset.tvm_target()
    with target:
        mod, named_params = model.export_tvm(spec=model.get_default_spec())
    params = [(name, [int(x) for x in p.shape], p.dtype) for name, p in named_params]
    metadata = {
        "model_type": family.name,
        "model_name": model_name,
        "quantization": scheme.name,
        "context_window_size": config.context_window_size,
        "sliding_window_size": -1,  # applied inside the attention kernels, exactly
        "model_sliding_window": config.sliding_window,
        "attention_sink_size": -1,
        "prefill_chunk_size": config.prefill_chunk_size,
        "max_batch_size": config.max_batch_size,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "disaggregation": False,
        "kv_state_kind": "kv_cache",
        "params": [{"name": n, "shape": s, "dtype": d, "preprocs": []} for n, s, d in params],
        "memory_usage": {},
    }
    return _attach_metadata(mod, metadata), params, quantized


def schedule_rules(target) -> list:
    """dlight rules for ``target``: :class:`CPUMatmul` on the CPU (``llvm``); TVM's generic GPU rules
    (``Matmul``, ``GEMV``, ``Reduction``, ``GeneralReduction``, then ``Fallback``, which binds
    whatever is left to threads) on GPU kinds, the list TVM's own CUDA and generic GPU pipelines use.

    CPU: other kernels (norms, RoPE, elementwise) stay serial: dlight 0.26's CPU ``Reduction`` rule
    parallelizes a norm over its hidden axis and redoes the row reduction once per element (640x the
    work for Gemma 3 270M), and serial code for a few thousand elements is cheaper than a parallel
    launch.  GPU: every kernel must be bound to threads, and ``Fallback`` guarantees it; our fused
    dequantize-matmul (``pipeline.quantization``) is a reduction with an injective prologue, the
    shape ``GEMV`` (decode) and ``Matmul`` (prefill) take.
    """
    if target.kind.name == "llvm":
        return [CPUMatmul()]
    return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]


def relax_pipeline(target) -> tvm.transform.Pass:
    """TVM's Relax pipeline (the passes of ``relax/backend/cpu_generic/pipeline.py``, which
    ``gpu_generic`` shares but for the schedule) with :func:`schedule_rules` applied after fusion."""
    from tvm.relax.backend.cpu_generic import pipeline as generic  # pylint: disable=import-outside-toplevel

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            passes = (
                [relax.transform.FuseTransposeMatmul()]  # x @ W.T without materializing W.T
                + generic.library_dispatch_passes(target)
                + generic.legalize_passes(target)
                + [dl.ApplyDefaultSchedule(*schedule_rules(target))]
                + generic.dataflow_lower_passes(target)
                + generic.finalize_passes(target)
            )
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def compile_module(mod: tvm.IRModule, preset: TargetPreset, output: Path) -> float:
    """Compile ``mod`` for ``preset`` and export the library to ``output``; returns seconds taken.

    Raises:
        PipelineError: the installed TVM cannot build this target.
    """
    target = preset.tvm_target()
    start = time.perf_counter()
    try:
        executable = tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target))
    except Exception as err:  # pylint: disable=broad-except
        raise PipelineError(f"target {preset.name}: TVM failed to build: {str(err).splitlines()[-1]}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    executable.export_library(str(output))
    return time.perf_counter() - start
