"""Target presets: one YAML file per compile target in ``targets/`` (or a user's folder).

A preset names the TVM target in dict form (TVM 0.26 rejects target strings with flags), the
library format the package gets, and whether the device computes in float16.  A user adds a
target by adding a file; nothing in the code lists them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import PipelineError

TARGETS_DIR = Path(os.environ.get("MLC_MTP_TARGETS", Path(__file__).resolve().parents[2] / "targets"))

PRESET_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "target", "library"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9_-]+$"},
        "description": {"type": "string"},
        "target": {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string"}}},
        "library": {"enum": ["so", "dylib", "tar", "wasm"]},
        "supports_fp16": {"type": "boolean"},
    },
}


@dataclasses.dataclass(frozen=True)
class TargetPreset:
    """A validated preset: ``target`` is the TVM target dict."""

    name: str
    target: dict[str, Any]
    library: str
    supports_fp16: bool
    path: Path

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
            from .vulkan import fit_target  # pylint: disable=import-outside-toplevel

            target = fit_target(target, self.path)
        return target

    def check_buildable(self) -> None:
        """Stop early when the installed TVM cannot emit code for this target.

        Raises:
            PipelineError: naming the missing code generator (``target.build.<kind>``); for
                Vulkan, how to get a Vulkan-enabled TVM of the pinned version.
        """
        import tvm  # pylint: disable=import-outside-toplevel

        kind = self.target["kind"]
        if kind == "vulkan":  # loads TVM's Vulkan backend where it is a plugin; says how to get one
            from .vulkan import require_codegen  # pylint: disable=import-outside-toplevel

            require_codegen(self.path)
        if tvm.get_global_func(f"target.build.{kind}", allow_missing=True) is None:
            raise PipelineError(
                f"{self.path}: target kind {kind!r} cannot be built: this TVM has no target.build.{kind}"
            )

    def tvm_target(self):
        """The ``tvm.target.Target``.  Raises PipelineError if TVM rejects the dict."""
        from tvm.target import Target  # pylint: disable=import-outside-toplevel

        try:
            return Target(self.resolved_target())
        except Exception as err:  # pylint: disable=broad-except
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
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_target(name: str, directory: Path = TARGETS_DIR) -> TargetPreset:
    """Load preset ``name`` (a name in ``directory`` or a path to a YAML file).

    Raises:
        PipelineError: unknown name (lists the known ones), malformed YAML or a wrong field.
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else directory / f"{name}.yaml"
    if not path.is_file():
        raise PipelineError(f"target {name!r} is unknown; expected one of {available_targets(directory)}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: malformed YAML: {getattr(err, 'problem', err)}") from None
    errors = list(jsonschema.Draft202012Validator(PRESET_SCHEMA).iter_errors(raw or {}))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        raise PipelineError(f"{path}: {key}: {err.message}")
    return TargetPreset(
        name=raw["name"], target=dict(raw["target"]), library=raw["library"],
        supports_fp16=bool(raw.get("supports_fp16", True)), path=path,
    )
