"""Target presets: one YAML file per compile target in ``targets/`` (or a user's folder).

A preset names everything the build decides per target, so a user adds a target by adding a file
(nothing in the code lists presets).  The presets' folder and what the code knows of TVM target
kinds (which kinds are GPUs, which ones the windowed attention kernels exist for, the runtime
device of each) live in :mod:`pipeline.presets`, which the runtime reads without TVM's compiler;
this module validates a preset and makes its TVM target, with the one preset branch on a kind,
which fits a Vulkan target to the local device's capabilities (:mod:`pipeline.compile.vulkan`).

Preset fields:

- ``target``: the TVM target in dict form (TVM 0.26 rejects target strings with flags): ``kind``
  and the kind's own options (``arch``, ``libs``, Vulkan capabilities ...);
- ``host``: the LLVM triple of the host code (absent: this machine), made ``target.host``;
- ``limits``: threads per block / work-group, shared memory per block (bytes) and warp size,
  merged into the TVM target (each given once: here or inside ``target``);
- ``supports_fp16``: whether the device computes in float16 (else only float32 models build);
- ``schedule.rules``: the schedule rules applied after fusion, in order
  (:mod:`pipeline.compile.schedules`);
- ``library``: the library MLC loads for this target (``so``, ``dylib``, ``tar``, ``wasm``),
  ``system_lib``: a ``.tar`` of a TVM system library whose symbols carry MLC's prefix
  ``<model>_<quantization>_`` (iOS, Android), and ``link``: the command that links the objects
  into a shared library, run where its program is found (see :mod:`pipeline.compile.compiler`).
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml

from ..errors import PipelineError
from ..presets import available_presets, preset_path, targets_dir

TARGETS_DIR = targets_dir()  # read once, at import

# Names a preset's schedule.rules may list (resolved by pipeline.compile.schedules.schedule_rule).
RULE_NAMES = (
    "CPUMatmul", "GenericMatmul", "LowBatchDispatch",
    "gpu.Matmul", "gpu.GEMV", "gpu.LowBatchGEMV", "gpu.Reduction", "gpu.GeneralReduction", "gpu.RMSNorm",
    "gpu.Transpose", "gpu.Fallback",
    "cpu.GEMV", "cpu.Reduction",
)
# dlight's generic GPU list (TVM's own gpu_generic and CUDA pipelines use it) after our dispatch of
# few-row products to LowBatchGEMV (as MLC LLM's pipeline does): the default (targets/webgpu.yaml
# leaves the dispatch out, and says why).
GPU_RULES = ("LowBatchDispatch", "gpu.Matmul", "gpu.GEMV", "gpu.Reduction", "gpu.GeneralReduction", "gpu.Fallback")
LIMITS = ("max_num_threads", "max_shared_memory_per_block", "thread_warp_size")

PRESET_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "target", "library"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9_-]+$"},
        "description": {"type": "string"},
        "target": {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string"}}},
        "host": {"type": "string", "pattern": "^[a-z0-9_.]+(-[a-z0-9_.]+){1,3}$"},
        "limits": {
            "type": "object", "additionalProperties": False,
            "properties": {key: {"type": "integer", "minimum": 1} for key in LIMITS},
        },
        "supports_fp16": {"type": "boolean"},
        "schedule": {
            "type": "object", "additionalProperties": False, "required": ["rules"],
            "properties": {"rules": {"type": "array", "minItems": 1, "items": {"enum": list(RULE_NAMES)}}},
        },
        "library": {"enum": ["so", "dylib", "tar", "wasm"]},
        "system_lib": {"type": "boolean"},
        "link": {
            "type": "object", "additionalProperties": False, "required": ["format", "command"],
            "properties": {
                "format": {"enum": ["so", "dylib"]},
                "command": {"type": "array", "minItems": 2, "items": {"type": "string"},
                            "allOf": [{"contains": {"const": "{output}"}}, {"contains": {"const": "{objects}"}}]},
            },
        },
    },
    "allOf": [
        {"if": {"required": ["system_lib"], "properties": {"system_lib": {"const": True}}},
         "then": {"properties": {"library": {"const": "tar"}}}},
        {"if": {"properties": {"library": {"const": "dylib"}}},
         "then": {"required": ["link"], "properties": {"link": {"properties": {"format": {"const": "dylib"}}}}}},
        {"if": {"properties": {"library": {"enum": ["so", "wasm"]}}}, "then": {"not": {"required": ["link"]}}},
    ],
}


@dataclasses.dataclass(frozen=True)
class TargetPreset:
    """A validated preset: ``target`` is the TVM target dict (``host`` and ``limits`` merged in);
    ``schedule`` the rule names; ``link`` the preset's ``{"format", "command"}`` or ``None``."""

    name: str
    target: dict[str, Any]
    library: str
    supports_fp16: bool
    path: Path
    schedule: tuple[str, ...] = GPU_RULES
    system_lib: bool = False
    link: dict[str, Any] | None = None

    def resolved_target(self) -> dict[str, Any]:
        """The target dict with ``mcpu: host`` resolved for this machine (see :func:`host_cpu`)."""
        target = dict(self.target)
        if target.get("mcpu") == "host":
            cpu = host_cpu()
            if cpu is None:
                del target["mcpu"]
            else:
                target["mcpu"] = cpu
        if target["kind"] == "vulkan":  # narrowed to the local Vulkan device, if any
            from .vulkan import fit_target

            target = fit_target(target, self.path)
        return target

    def check_buildable(self) -> None:
        """Stop early when the installed TVM cannot emit code for this target.

        Raises:
            PipelineError: naming the missing code generator (``target.build.<kind>``); for
                Vulkan, how to get a Vulkan-enabled TVM of the pinned version; for a ``wasm``
                library, the missing emscripten.
        """
        import tvm

        kind = self.target["kind"]
        if kind == "vulkan":  # loads TVM's Vulkan backend where it is a plugin; says how to get one
            from .vulkan import require_codegen

            require_codegen(self.path)
        if tvm.get_global_func(f"target.build.{kind}", allow_missing=True) is None:
            raise PipelineError(
                f"{self.path}: target kind {kind!r} cannot be built: this TVM has no target.build.{kind}"
            )
        if self.library == "wasm":  # linked by emscripten: refuse before any stage runs, not after
            from .wasm import find_emcc

            try:
                find_emcc()
            except PipelineError as err:
                raise PipelineError(f"{self.path}: library: 'wasm' cannot be linked here: {err}") from None

    def tvm_target(self):
        """The ``tvm.target.Target``.  Raises PipelineError if TVM rejects the dict."""
        from tvm.target import Target

        try:
            return Target(self.resolved_target())
        except Exception as err:
            raise PipelineError(f"{self.path}: target: TVM rejects {self.target}: {err}") from None


def host_cpu() -> str | None:
    """The LLVM CPU level to compile for on this machine, or ``None`` for LLVM's generic CPU.

    An x86-64 host with AVX2, FMA and F16C gets ``x86-64-v3``: the generic x86-64 CPU has no F16C,
    which makes float16 kernels about 17x slower, and TVM 0.26's LLVM rejects ``native``.  The
    exact CPU name is avoided on purpose: for ``znver5`` (AVX-512) LLVM 22 took over 400 s on a tiny
    model that builds in 13 s for ``x86-64-v3`` (measured 2026-11-30).
    """
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    except (OSError, IndexError):
        return None
    return "x86-64-v3" if {"avx2", "fma", "f16c"} <= flags else None


def available_targets(directory: Path = TARGETS_DIR) -> list[str]:
    """Names of the presets in ``directory``."""
    return available_presets(directory)


def load_target(name: str, directory: Path = TARGETS_DIR) -> TargetPreset:
    """Load preset ``name`` (a name in ``directory`` or a path to a YAML file).

    Raises:
        PipelineError: unknown name (lists the known ones), malformed YAML or a wrong field.
    """
    path = preset_path(name, directory)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: malformed YAML: {getattr(err, 'problem', err)}") from None
    errors = list(jsonschema.Draft202012Validator(PRESET_SCHEMA).iter_errors(raw or {}))
    if errors:
        raise PipelineError(f"{path}: {_schema_message(min(errors, key=lambda e: len(e.absolute_path)))}")
    target = dict(raw["target"])
    merged = {**({"host": {"kind": "llvm", "mtriple": raw["host"]}} if "host" in raw else {}),
              **raw.get("limits", {})}
    for key, value in merged.items():
        if key in target:
            where = "host" if key == "host" else f"limits.{key}"
            raise PipelineError(f"{path}: target.{key}: {target[key]!r} given twice (also as {where}: "
                                f"{raw['host'] if key == 'host' else value!r}); expected it once")
        target[key] = value
    return TargetPreset(
        name=raw["name"], target=target, library=raw["library"],
        supports_fp16=bool(raw.get("supports_fp16", True)), path=path,
        schedule=tuple(raw.get("schedule", {}).get("rules", GPU_RULES)),
        system_lib=bool(raw.get("system_lib", False)), link=raw.get("link"),
    )


def _schema_message(err: jsonschema.ValidationError) -> str:
    """``key: what was wrong`` for one schema error, listing the allowed keys for an unknown one."""
    key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    # Set on every error a validator yields (the stubs' Unset is for errors built by hand).
    schema, instance = cast(Mapping[str, Any], err.schema), cast(Any, err.instance)
    if err.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(instance) - set(allowed))
        return f"{key}: unknown key {', '.join(map(repr, unknown))}; allowed keys: {', '.join(allowed)}"
    if err.validator == "const":  # the allOf rules: system_lib needs a tar, a dylib a dylib link
        return f"{key}: {instance!r}, expected {err.validator_value!r} (system_lib: true needs library: tar; " \
               f"library: dylib needs link.format: dylib)"
    if err.validator == "not":  # the allOf rule on link
        return f"{key}: link with library {instance['library']!r}, expected library tar or dylib (so and wasm " \
               f"libraries are linked by TVM's export)"
    if err.validator == "contains":
        return f"{key}: {instance!r} lacks the placeholder {schema['contains']['const']!r}"
    return f"{key}: {err.message}"
