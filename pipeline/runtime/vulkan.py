"""TVM's Vulkan backend at run time: find it, load it where it is a plugin, and find the device.

PyPI's TVM 0.26.0 is built with ``USE_VULKAN=OFF``: no SPIR-V code generator (``target.build.vulkan``)
and no Vulkan runtime (``tvm.vulkan(0).exist`` is false).  Two ways to get both:

- a TVM 0.26.0 built from its ``v0.26.0`` tag with ``USE_VULKAN=ON``: both are registered when
  ``tvm`` is imported, and this module loads nothing;
- ``scripts/build_tvm_vulkan.sh``: TVM's own Vulkan sources of that tag built as two plugin libraries
  for the installed wheel (``libtvm_runtime_vulkan.so``, ``libtvm_compiler_vulkan.so``, and
  ``build-info.json`` naming the TVM version they were built for), in the folder
  ``$MLC_MTP_TVM_VULKAN_LIB`` (default ``~/.cache/mlc-mtp-vulkan/lib``).  :func:`load_backend`
  loads from there whatever this TVM lacks (the code generator only where TVM's compiler is loaded).

Building a library needs the code generator only (:mod:`pipeline.compile.vulkan` fits a preset's
target to the device); the device is needed for running it and for reading its capabilities.
This module needs TVM's runtime only.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
from pathlib import Path

import tvm

LIB_ENV = "MLC_MTP_TVM_VULKAN_LIB"
DEFAULT_LIB_DIR = Path.home() / ".cache" / "mlc-mtp-vulkan" / "lib"
RUNTIME_LIB, COMPILER_LIB, BUILD_INFO = "libtvm_runtime_vulkan.so", "libtvm_compiler_vulkan.so", "build-info.json"
BUILD_SCRIPT = "scripts/build_tvm_vulkan.sh"


def lib_dir() -> Path:
    """Folder of the plugin libraries: ``$MLC_MTP_TVM_VULKAN_LIB``, else ``~/.cache/mlc-mtp-vulkan/lib``."""
    return Path(os.environ.get(LIB_ENV) or DEFAULT_LIB_DIR)


def has_codegen() -> bool:
    """Whether this TVM can emit SPIR-V (``target.build.vulkan`` is registered)."""
    return tvm.get_global_func("target.build.vulkan", allow_missing=True) is not None


def has_runtime() -> bool:
    """Whether this TVM has a Vulkan runtime (the ``device_api.vulkan`` device API is registered)."""
    return tvm.get_global_func("device_api.vulkan", allow_missing=True) is not None


@functools.cache
def load_backend() -> str:
    """Load the plugin libraries for what this TVM lacks (the runtime always; the code generator
    only where TVM's compiler is loaded, not in a runtime-only TVM).  Idempotent.

    Returns:
        ``""`` when nothing failed, else why (part of) the plugin could not be loaded (one line: a
        wrong TVM version, a library that does not load); a missing folder is not a failure.
    """
    from tvm.base import _LOADED_LIBS

    wanted = []
    if not has_runtime():
        wanted.append(("tvm_runtime_vulkan", RUNTIME_LIB))
    if not has_codegen() and "tvm_compiler" in _LOADED_LIBS:
        wanted.append(("tvm_compiler_vulkan", COMPILER_LIB))
    folder = lib_dir()
    if not wanted or not all((folder / name).is_file() for _, name in wanted):
        return ""
    try:
        built_for = json.loads((folder / BUILD_INFO).read_text())["tvm_version"]
    except (OSError, ValueError, KeyError):
        built_for = None
    if built_for != tvm.__version__:
        return (f"{folder} holds a Vulkan backend built for TVM {built_for or '(unknown: no ' + BUILD_INFO + ')'}, "
                f"this is TVM {tvm.__version__}: run {BUILD_SCRIPT} again")
    problems = []
    for key, name in wanted:  # each on its own: the code generator needs no Vulkan loader (libvulkan)
        try:
            _LOADED_LIBS[key] = ctypes.CDLL(str(folder / name), ctypes.RTLD_LOCAL)  # registers on load
        except OSError as err:
            problems.append(f"{folder / name} does not load: {err}")
    return "; ".join(problems)


def device():
    """Vulkan device 0 of this machine (``tvm.vulkan(0)``), or ``None`` where there is none, no
    Vulkan driver or no Vulkan runtime (loads the plugin first, see :func:`load_backend`)."""
    return _probe()[0]


@functools.cache
def _probe():
    """``(device or None, why none)``.  Without a Vulkan driver TVM's runtime raises
    (VK_ERROR_INCOMPATIBLE_DRIVER) rather than reporting no device."""
    load_backend()
    if not has_runtime():
        return None, "no Vulkan runtime"
    dev = tvm.vulkan(0)
    try:
        return (dev, "") if dev.exist else (None, "tvm.vulkan(0).exist is false")
    except Exception as err:
        return None, str(err).strip().splitlines()[-1]


def missing() -> str:
    """What keeps Vulkan kernels from being built and run here, as one sentence; ``""`` if nothing."""
    problem = load_backend()
    lacks = ([] if has_codegen() else ["no SPIR-V code generator (target.build.vulkan)"]) + (
        [] if has_runtime() else ["no Vulkan runtime"])
    if not lacks and device() is None:
        return f"no Vulkan device found ({_probe()[1]}; Mesa's lavapipe provides one on the CPU)"
    if not lacks:
        return ""
    return (f"this TVM {tvm.__version__} has {' and '.join(lacks)}: "
            + (problem if problem else how_to_get()))


def how_to_get() -> str:
    """The way to a Vulkan-enabled TVM of the installed version (for error messages)."""
    version = tvm.__version__
    return (f"build TVM's Vulkan backend for it with {BUILD_SCRIPT} (from tag v{version}; loaded from "
            f"${LIB_ENV}, here {lib_dir()}), or install TVM {version} built from tag v{version} with USE_VULKAN=ON")
