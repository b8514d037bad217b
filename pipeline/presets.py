"""Where the target presets are, and what the code knows of TVM target kinds, without TVM.

The runtime (which may run with TVM's runtime library only) and the compile side
(:mod:`pipeline.compile.targets`, which validates a preset and makes its TVM target) both read
this module; it imports nothing of TVM.

- :func:`targets_dir` and :func:`preset_path`: the presets' folder and a preset's file;
- :func:`preset_kind`: a preset's TVM target kind, read from its YAML file;
- :data:`CPU_KIND`, :data:`GPU_KINDS`, :data:`KERNEL_TARGET_KINDS`: which kinds get which
  kernels (:mod:`pipeline.kernels`); :data:`DEVICE_OF_KIND`: the runtime device of a kind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from .errors import PipelineError

CPU_KIND = "llvm"  # TVM's kind for CPU code (the host's, or a cross-compiled one)
GPU_KINDS = ("cuda", "metal", "opencl", "vulkan", "webgpu")  # generic GPU TIR serves each of them
KERNEL_TARGET_KINDS = (CPU_KIND, *GPU_KINDS)  # TVM target kinds the windowed attention kernels exist for
# TVM target kind -> runtime device type (tvm.device names); kinds without a runtime here are absent.
DEVICE_OF_KIND = {"llvm": "cpu", "cuda": "cuda", "rocm": "rocm", "metal": "metal", "vulkan": "vulkan",
                  "opencl": "opencl"}


def is_gpu_kind(kind: str) -> bool:
    """Whether TVM target ``kind`` gets the GPU kernels (thread blocks, shared memory): one of
    :data:`GPU_KINDS`."""
    return kind in GPU_KINDS


def require_kernel_target(kind: str, where: str) -> None:
    """Raise PipelineError when the windowed attention kernels (:mod:`pipeline.kernels`) do not
    exist for TVM target ``kind`` (``where`` names the preset file or target in the message)."""
    if kind not in KERNEL_TARGET_KINDS:
        raise PipelineError(
            f"{where}: windowed attention kernels exist for target kinds {', '.join(KERNEL_TARGET_KINDS)}, "
            f"not {kind}"
        )


def targets_dir() -> Path:
    """Where the presets are: ``$MLC_MTP_TARGETS``, else ``targets/`` of a source checkout (an
    editable install), else ``<prefix>/share/mlc-mtp/targets`` where a wheel install puts them
    (``pyproject.toml``'s data-files)."""
    if os.environ.get("MLC_MTP_TARGETS"):
        return Path(os.environ["MLC_MTP_TARGETS"])
    checkout = Path(__file__).resolve().parents[1] / "targets"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "mlc-mtp" / "targets"


def available_presets(directory: Path) -> list[str]:
    """Names of the presets (``*.yaml`` files) in ``directory``, sorted."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def preset_path(name: str, directory: Path) -> Path:
    """The file of preset ``name``: ``name`` itself when it is a path to a YAML file, else
    ``<directory>/<name>.yaml``.

    Raises:
        PipelineError: no such file (lists the presets in ``directory``).
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else directory / f"{name}.yaml"
    if not path.is_file():
        raise PipelineError(f"target {name!r} is unknown; expected one of {available_presets(directory)}")
    return path


def preset_kind(name: str) -> str:
    """The TVM target kind (``target.kind``) of preset ``name`` (a name in :func:`targets_dir` or
    a path to a YAML file), read from its file without validating the rest.

    Raises:
        PipelineError: no such preset, or one without a ``target.kind`` string.
    """
    path = preset_path(name, targets_dir())
    try:
        kind = (yaml.safe_load(path.read_text()) or {}).get("target", {}).get("kind")
    except (yaml.YAMLError, AttributeError):
        kind = None
    if not isinstance(kind, str):
        raise PipelineError(f"{path}: target.kind: not found, expected a TVM target kind (e.g. 'llvm')")
    return kind
