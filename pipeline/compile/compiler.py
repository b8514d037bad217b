"""Export a model definition to Relax, compile it with TVM for a preset, and export the library.

The library carries MLC LLM's entry points plus a ``_metadata`` function returning JSON that
describes the parameters and sizes (mlc-llm ``interface/compile.py`` attaches the same; its
runtime reads it to load weights in order), and the functions MLC's engine and WebLLM look up
beyond the model's own (:mod:`pipeline.compile.mlc_functions`, added by :func:`relax_pipeline`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tvm
from tvm import relax
from tvm.s_tir import dlight as dl

from ..errors import PipelineError
from ..quantization import QuantScheme, quantize_model
from .cpu_matmul import mark_many_row_kernels
from .link import find_program, linker, user_link_command
from .mlc_functions import AttachMLCFunctions, attach_memory_usage
from .schedules import schedule_rule
from .targets import GPU_RULES, TargetPreset

log = logging.getLogger(__name__)


def library_name(model_name: str, quantization: str, preset: TargetPreset) -> str:
    """MLC's library file name: ``<name>-<quantization>-<target>.<ext>`` (``ext``: the preset's
    ``library``; :func:`compile_module` writes the other outputs beside it under the same stem)."""
    return f"{model_name}-{quantization}-{preset.name}.{preset.library}"


def system_lib_prefix(model_name: str, quantization: str) -> str:
    """MLC's system-library prefix for iOS and Android builds, ``<model>_<quantization>_`` with
    ``-`` turned into ``_`` (mlc-llm ``support/auto_target.py`` ``detect_system_lib_prefix``);
    the app names the library by it without the trailing ``_`` (its ``model_lib``)."""
    return f"{model_name}_{quantization}_".replace("-", "_")


def _attach_metadata(mod: tvm.IRModule, metadata: dict[str, Any]) -> tvm.IRModule:
    bb = relax.BlockBuilder(mod)
    with bb.function("_metadata", params=[]):
        bb.emit_func_output(relax.StringImm(json.dumps(metadata, sort_keys=True)))
    return bb.get()


def export_model(family, config, scheme: QuantScheme, preset: TargetPreset, model_name: str,
                 source_types: dict[str, str] | None = None):
    """Build the Relax module for ``config`` under ``scheme`` (``source_types``: weight name ->
    the type its source stored, which picks per-weight formats under ``qsrcf32``; see
    :func:`pipeline.quantization.quantize_model`).

    Returns ``(IRModule, [(param name, shape, dtype)], {quantized weight name: GroupFormat}``;
    parameter order is the order the compiled functions take them in.
    """
    if scheme.model_dtype == "float16" and not preset.supports_fp16:
        raise PipelineError(
            f"{preset.path}: target {preset.name} has no float16 support; use q0f32 or q4f32_1"
        )
    preset.check_buildable()
    model = family.model_cls(config, scheme.model_dtype)
    model, quantized = quantize_model(model, scheme, source_types)
    target = preset.tvm_target()
    with target:
        mod, named_params = model.export_tvm(spec=model.get_default_spec())
        if hasattr(model, "extend_module"):  # functions a family builds from its exported ones
            mod = model.extend_module(mod)
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
        "kv_state_kind": "kv_cache",  # "none" where the model has no cache (mlc_functions)
        "model_task": "chat",
        "active_vocab_size": None,  # MLC: None unless the vocabulary is truncated
        "params": [{"name": n, "shape": s, "dtype": d, "preprocs": []} for n, s, d in params],
        "memory_usage": {},
    }
    return _attach_metadata(mod, metadata), params, quantized


def schedule_rules(rules: Sequence[str] = GPU_RULES) -> list:
    """Instances of the schedule rules named ``rules`` (a preset's ``schedule.rules``, in order;
    names in :data:`pipeline.compile.targets.RULE_NAMES`).  The presets use two lists:

    - CPU (``cpu.yaml``): ``CPUMatmul`` only.  Other kernels (norms, RoPE, elementwise) stay
      serial: dlight 0.26's CPU ``Reduction`` rule parallelizes a norm over its hidden axis and
      redoes the row reduction once per element (640x the work for Gemma 3 270M), and serial code
      for a few thousand elements is cheaper than a parallel launch.
    - GPU (the default): ``LowBatchDispatch`` (:class:`~.schedules.LowBatchDispatch`: a product
      of a symbolic row count gets ``LowBatchGEMV`` kernels for 1-8 rows and the later rules'
      schedule for more, chosen at run time), then dlight's ``Matmul``, ``GEMV``, ``Reduction``,
      ``GeneralReduction``, ``Fallback``, which binds whatever is left to threads; the list TVM's
      own CUDA and generic GPU pipelines use.  Every GPU kernel must be bound to threads, and
      ``Fallback`` guarantees it; our fused dequantize-matmul (``pipeline.quantization``) is a
      reduction with an injective prologue, the shape ``GEMV`` (decode) and ``Matmul`` (prefill)
      take.

    Raises:
        PipelineError: a name with no rule (presets are validated against the names first).
    """
    made: list = []
    try:
        for name in reversed(rules):  # each rule is given the ones listed after it
            made.insert(0, schedule_rule(name, rest=list(made)))
    except KeyError as err:
        raise PipelineError(f"schedule.rules: no schedule rule {err.args[0]!r}") from None
    return made


# TVM's pass-context switch of RewriteCUDAGraph (relax/transform/rewrite_cuda_graph.cc, TVM 0.26).
CUDA_GRAPH_CONFIG = "relax.backend.use_cuda_graph"


def relax_pipeline(target, rules: Sequence[str] = GPU_RULES) -> tvm.transform.Pass:
    """TVM's Relax pipeline (the passes of ``relax/backend/cpu_generic/pipeline.py``, which
    ``gpu_generic`` shares but for the schedule) with the schedule rules ``rules``
    (:func:`schedule_rules`) applied after fusion; first MLC's function set is added to a model
    library, and its ``memory_usage`` is measured after memory planning
    (:mod:`.mlc_functions`).  For CUDA, TVM's ``RewriteCUDAGraph`` follows memory planning, as
    in TVM's own CUDA pipeline: it changes nothing unless the pass context sets
    :data:`CUDA_GRAPH_CONFIG`, when the static stretches of a function between its KV-cache
    calls are captured as CUDA graphs on their first run and replayed after."""
    from tvm.relax.backend.cpu_generic import pipeline as generic

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            finalize = []
            for step in generic.finalize_passes(target):
                finalize.append(step)
                if step.info.name == "StaticPlanBlockMemory":
                    finalize.append(attach_memory_usage)
                    if target.kind.name == "cuda":
                        finalize.append(relax.transform.RewriteCUDAGraph())
            passes = (
                [AttachMLCFunctions(target)]
                + [relax.transform.FuseTransposeMatmul()]  # x @ W.T without materializing W.T
                + generic.library_dispatch_passes(target)
                + generic.legalize_passes(target)
                + ([mark_many_row_kernels] if "CPUMatmul" in rules else [])  # prefill's own products
                + [dl.ApplyDefaultSchedule(*schedule_rules(rules))]
                + generic.dataflow_lower_passes(target)
                + finalize
            )
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def compile_module(mod: tvm.IRModule, preset: TargetPreset, output: Path,
                   lib_prefix: str | None = None) -> list[dict[str, Any]]:
    """Compile ``mod`` for ``preset`` and export its libraries as MLC places them.

    ``output`` is the path of the preset's ``library`` (``<stem>.<library>``); other outputs go
    beside it under the same stem:

    - ``so`` / ``wasm``: that file (``wasm``: linked with TVM's wasm runtime through emscripten,
      :func:`pipeline.compile.wasm.link_wasm`);
    - ``tar``: the host objects with the device code packed in (``system_lib``: of a TVM system
      library whose symbols carry ``lib_prefix``), plus, where ``link.command``'s program is
      found (:func:`~pipeline.compile.link.find_program`), the shared library linked from a
      non-system build of the same lowered module (``<stem>.<link.format>``);
    - ``dylib``: linked with ``link.command`` where its program is found, else ``<stem>.tar`` and
      the command that links it (:func:`~pipeline.compile.link.user_link_command`).

    Returns one dict per file written: ``file`` (name), ``format``, ``system_lib_prefix``
    (``None`` unless a system library) and ``link_command`` (``None`` unless left to the user).

    Raises:
        PipelineError: the installed TVM cannot build this target, or a linker failed.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    target = preset.tvm_target()

    def tvm_step(step):
        try:
            return step()
        except Exception as err:
            raise PipelineError(f"target {preset.name}: TVM failed to build: {str(err).splitlines()[-1]}") from None

    def lower():
        with target:
            return relax_pipeline(target, preset.schedule)(mod)

    lowered = tvm_step(lower)

    def build(system_lib: bool | None):  # None: TVM's choice (wasm hosts get a system library)
        module = lowered.with_attr("system_lib_prefix", lib_prefix or "") if system_lib else lowered
        return tvm_step(lambda: relax.build(module, target=target, relax_pipeline=None, system_lib=system_lib))

    executable = build(True if preset.system_lib else None)

    def entry(path: Path, fmt: str, prefix: str | None = None, command: str | None = None) -> dict[str, Any]:
        return {"file": path.name, "format": fmt, "system_lib_prefix": prefix, "link_command": command}

    program = find_program(preset.link["command"][0]) if preset.link else None
    if preset.library == "wasm":
        from .wasm import link_wasm

        executable.export_library(str(output), fcompile=link_wasm)
        return [entry(output, "wasm")]
    if preset.library == "so":
        executable.export_library(str(output))
        return [entry(output, "so")]
    if preset.library == "dylib" and program:
        executable.export_library(str(output), fcompile=linker(preset, program))
        return [entry(output, "dylib")]
    tar = output.with_suffix(".tar")
    executable.export_library(str(tar))
    if preset.library == "dylib":  # no linker here: the objects, and the command that links them
        return [entry(tar, "tar", command=user_link_command(preset, tar.name))]
    written = [entry(tar, "tar", prefix=(lib_prefix or "") if preset.system_lib else None)]
    if not preset.link:
        return written
    if not program:
        log.warning("target %s: %s is not on PATH: no .%s linked, only %s", preset.name, preset.link["command"][0],
                    preset.link["format"], tar.name)
    else:
        shared = output.with_suffix("." + preset.link["format"])
        shared_build = build(False) if preset.system_lib else executable
        shared_build.export_library(str(shared), fcompile=linker(preset, program))
        written.append(entry(shared, preset.link["format"]))
    return written
