"""TVM's Vulkan backend: find it, load it where it is a plugin, and fit a preset's target to a device.

PyPI's TVM 0.26.0 is built with ``USE_VULKAN=OFF``: no SPIR-V code generator (``target.build.vulkan``)
and no Vulkan runtime (``tvm.vulkan(0).exist`` is false).  Two ways to get both:

- a TVM 0.26.0 built from its ``v0.26.0`` tag with ``USE_VULKAN=ON``: both are registered when
  ``tvm`` is imported, and this module loads nothing;
- ``scripts/build_tvm_vulkan.sh``: TVM's own Vulkan sources of that tag built as two plugin libraries
  for the installed wheel (``libtvm_runtime_vulkan.so``, ``libtvm_compiler_vulkan.so``, and
  ``build-info.json`` naming the TVM version they were built for), in the folder
  ``$MLC_MTP_TVM_VULKAN_LIB`` (default ``~/.cache/mlc-mtp-vulkan/lib``).  :func:`load_backend`
  loads from there whatever this TVM lacks.

Building a library needs the code generator only; the device is needed for running it and for
reading its capabilities.  The rule for the target (:func:`fit_target`): a preset's target declares
the capabilities and limits of the devices the library is meant for (``supports_int64``,
``supports_float16``, ``max_num_threads``, ...).  With a Vulkan device on this machine, each of them
is narrowed to what the device has (a capability stays on only if the device has it too, a limit
becomes the smaller of the two), so the library also runs here; keys the preset does not declare
keep TVM's default for the kind (narrowed the same way), never the device's value, so a library built
on a large desktop GPU does not silently require more than the preset promises.  Without a device the declared values are
used as they are, and the build says so.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import tvm

from ..errors import PipelineError

log = logging.getLogger(__name__)

LIB_ENV = "MLC_MTP_TVM_VULKAN_LIB"
DEFAULT_LIB_DIR = Path.home() / ".cache" / "mlc-mtp-vulkan" / "lib"
RUNTIME_LIB, COMPILER_LIB, BUILD_INFO = "libtvm_runtime_vulkan.so", "libtvm_compiler_vulkan.so", "build-info.json"
BUILD_SCRIPT = "scripts/build_tvm_vulkan.sh"

# Vulkan target options that describe the device (the names of TVM 0.26's vulkan target kind and of
# its device API's ``device_api.vulkan.get_target_property``), and how a device narrows each.
CAPABILITIES = (
    "supports_float16", "supports_float32", "supports_float64", "supports_int8", "supports_int16",
    "supports_int32", "supports_int64", "supports_8bit_buffer", "supports_16bit_buffer",
    "supports_storage_buffer_storage_class", "supports_push_descriptor", "supports_dedicated_allocation",
    "supports_integer_dot_product", "supports_cooperative_matrix",
)
LIMITS = (
    "max_num_threads", "max_threads_per_block", "thread_warp_size", "max_block_size_x", "max_block_size_y",
    "max_block_size_z", "max_push_constants_size", "max_uniform_buffer_range", "max_storage_buffer_range",
    "max_per_stage_descriptor_storage_buffer", "max_shared_memory_per_block", "vulkan_api_version",
    "max_spirv_version",
)
SUBGROUP_OPERATIONS = "supported_subgroup_operations"  # a VkSubgroupFeatureFlags bit mask


def lib_dir() -> Path:
    """Folder of the plugin libraries: ``$MLC_MTP_TVM_VULKAN_LIB``, else ``~/.cache/mlc-mtp-vulkan/lib``."""
    return Path(os.environ.get(LIB_ENV) or DEFAULT_LIB_DIR)


def has_codegen() -> bool:
    """Whether this TVM can emit SPIR-V (``target.build.vulkan`` is registered)."""
    return tvm.get_global_func("target.build.vulkan", allow_missing=True) is not None


def can_build() -> bool:
    """Whether SPIR-V can be emitted here, after loading the plugin where there is one."""
    load_backend()
    return has_codegen()


def has_runtime() -> bool:
    """Whether this TVM has a Vulkan runtime (the ``device_api.vulkan`` device API is registered)."""
    return tvm.get_global_func("device_api.vulkan", allow_missing=True) is not None


@functools.lru_cache(maxsize=None)
def load_backend() -> str:
    """Load the plugin libraries for what this TVM lacks (the runtime always; the code generator
    only where TVM's compiler is loaded, not in a runtime-only TVM).  Idempotent.

    Returns:
        ``""`` when nothing failed, else why (part of) the plugin could not be loaded (one line: a
        wrong TVM version, a library that does not load); a missing folder is not a failure.
    """
    from tvm.base import _LOADED_LIBS  # pylint: disable=import-outside-toplevel

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


@functools.lru_cache(maxsize=None)
def _probe():
    """``(device or None, why none)``.  Without a Vulkan driver TVM's runtime raises
    (VK_ERROR_INCOMPATIBLE_DRIVER) rather than reporting no device."""
    load_backend()
    if not has_runtime():
        return None, "no Vulkan runtime"
    dev = tvm.vulkan(0)
    try:
        return (dev, "") if dev.exist else (None, "tvm.vulkan(0).exist is false")
    except Exception as err:  # pylint: disable=broad-except
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


def require_codegen(where: Path | str) -> None:
    """Stop before compiling when SPIR-V cannot be emitted.

    Raises:
        PipelineError: ``<where>: target kind 'vulkan' cannot be built: ...``, naming what is missing
            (code generator, runtime) and how to get a Vulkan-enabled TVM of the installed version.
    """
    problem = load_backend()
    if has_codegen():
        return
    runtime = "" if has_runtime() else " and no Vulkan runtime"
    raise PipelineError(f"{where}: target kind 'vulkan' cannot be built: this TVM {tvm.__version__} has no "
                        f"SPIR-V code generator (target.build.vulkan){runtime}: {problem or how_to_get()}")


def device_capabilities(dev) -> dict[str, Any]:
    """The device's values of the Vulkan target options (:data:`CAPABILITIES`, :data:`LIMITS`, the
    subgroup operation mask), read through TVM's Vulkan device API
    (``device_api.vulkan.get_target_property``; ``max_threads_per_block`` from the device attribute).
    Booleans for capabilities, ints for limits (bytes for memory sizes, ``VK_MAKE_API_VERSION``
    numbers for versions)."""
    query = tvm.get_global_func("device_api.vulkan.get_target_property")
    caps: dict[str, Any] = {key: bool(query(dev, key)) for key in CAPABILITIES}
    caps.update({key: int(query(dev, key)) for key in LIMITS if key != "max_threads_per_block"})
    caps["max_threads_per_block"] = int(dev.max_threads_per_block)
    caps[SUBGROUP_OPERATIONS] = int(query(dev, SUBGROUP_OPERATIONS))
    return caps


def fit_target(declared: dict[str, Any], where: Path | str) -> dict[str, Any]:
    """The target dict to build with: ``declared`` (a preset's ``vulkan`` target) narrowed to the
    local Vulkan device, by the rule in this module's docstring.  Logs (once per preset) which
    device narrowed what, or that no device was found and the declared values are used.

    Raises:
        PipelineError: TVM rejects ``declared``.
    """
    key = json.dumps(declared, sort_keys=True, default=str)
    return json.loads(_fit_target(key, str(where)))


@functools.lru_cache(maxsize=None)
def _fit_target(declared_json: str, where: str) -> str:
    declared = json.loads(declared_json)
    dev = device()
    if dev is None:
        if has_codegen():  # else the build stops anyway (require_codegen), saying why
            log.warning("%s: %s: building with the preset's declared capabilities, not checked against a "
                        "device", where, missing())
        return declared_json
    try:
        with_defaults = target_attrs(declared)
    except Exception as err:  # pylint: disable=broad-except
        raise PipelineError(f"{where}: target: TVM rejects {declared}: {err}") from None
    fitted, narrowed = narrow(declared, with_defaults, device_capabilities(dev))
    log.info("%s: Vulkan device %r: %s", where, str(dev.device_name),
             "narrowed " + ", ".join(narrowed) if narrowed else "has every declared capability")
    if narrowed:
        log.warning("%s: the Vulkan device here lacks part of the preset's target (%s); the library is "
                    "built for what both allow", where, ", ".join(narrowed))
    return json.dumps(fitted, sort_keys=True)


def narrow(declared: dict[str, Any], with_defaults: dict[str, Any],
           caps: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The rule of this module's docstring on plain dicts.

    Args:
        declared: the preset's target dict.
        with_defaults: its attributes as TVM completes them (``Target(declared).attrs``: declared
            values plus the kind's defaults, e.g. ``max_num_threads`` 256).
        caps: the device's values (:func:`device_capabilities`).

    Returns:
        ``(fitted, changes)``: ``declared`` with every option that both TVM's attributes and the
        device have narrowed (capabilities: both must have it; :data:`LIMITS`: the smaller; the
        subgroup operations: the common bits), and ``"name old -> new"`` for each value changed.
    """
    fitted, changes = dict(declared), []
    for name, value in with_defaults.items():
        if name not in caps:
            continue
        if name in CAPABILITIES:
            new = bool(value) and bool(caps[name])
        elif name == SUBGROUP_OPERATIONS:
            new = int(value) & int(caps[name])
        else:
            new = min(int(value), int(caps[name]))
        if new != value:
            changes.append(f"{name} {value} -> {new}")
            fitted[name] = new
    return fitted, changes


def target_attrs(target: dict[str, Any]) -> dict[str, Any]:
    """The attributes TVM gives ``target`` (a target dict): its own values plus the kind's defaults,
    as Python bools, ints and strings.  Raises what ``tvm.target.Target`` raises for a bad dict."""
    from tvm.target import Target  # pylint: disable=import-outside-toplevel

    attrs = {}
    for name, value in Target(target).attrs.items():
        if isinstance(value, (bool, int, str)):
            attrs[name] = value
        else:
            try:
                attrs[name] = int(value)
            except (TypeError, ValueError):
                attrs[name] = str(value)
    return attrs


def describe() -> str:
    """One line: where the code generator and runtime come from, and the device with its versions."""
    from tvm.base import _LOADED_LIBS  # pylint: disable=import-outside-toplevel

    problem = load_backend()

    def origin(ok: bool, key: str) -> str:
        if not ok:
            return "missing"
        lib = _LOADED_LIBS.get(key)
        return f"plugin {lib._name}" if lib is not None and lib._name.startswith(str(lib_dir())) else "built into TVM"

    line = (f"TVM {tvm.__version__} Vulkan: code generator {origin(has_codegen(), 'tvm_compiler_vulkan')}; "
            f"runtime {origin(has_runtime(), 'tvm_runtime_vulkan')}")
    dev = device()
    if dev is not None:
        caps = device_capabilities(dev)
        api, spirv = caps["vulkan_api_version"], caps["max_spirv_version"]
        line += (f"; device {dev.device_name!s} (Vulkan {api >> 22}.{(api >> 12) & 0x3FF}, "
                 f"SPIR-V {spirv >> 16}.{(spirv >> 8) & 0xFF})")
    return line + (f"; {problem}" if problem else "") + ("" if dev is not None or not has_runtime() else "; no device")
