"""TVM's Vulkan backend at build time: fit a preset's target to a device, and say what is missing.

Finding and loading the backend (the plugin libraries of ``scripts/build_tvm_vulkan.sh``, or a TVM
built with ``USE_VULKAN=ON``) and the device is :mod:`pipeline.runtime.vulkan`'s, re-exported here.

Building a library needs the code generator only; the device is needed for running it and for
reading its capabilities.  The rule for the target (:func:`fit_target`): a preset's target declares
the capabilities and limits of the devices the library is meant for (``supports_int64``,
``supports_float16``, ``max_num_threads``, ...).  With a Vulkan device on this machine, each of them
is narrowed to what the device has (a capability stays on only if the device has it too, a limit
becomes the smaller of the two), so the library also runs here; keys the preset does not declare
keep TVM's default for the kind (narrowed the same way), never the device's value, so a library built
on a large desktop GPU does not silently require more than the preset promises.  Without a device
the declared values are used as they are, and the build says so.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import tvm

from ..errors import PipelineError
from ..runtime.vulkan import (  # noqa: F401  # re-exported
    BUILD_INFO,
    BUILD_SCRIPT,
    COMPILER_LIB,
    DEFAULT_LIB_DIR,
    LIB_ENV,
    RUNTIME_LIB,
    device,
    has_codegen,
    has_runtime,
    how_to_get,
    lib_dir,
    load_backend,
    missing,
)

log = logging.getLogger(__name__)


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


def can_build() -> bool:
    """Whether SPIR-V can be emitted here, after loading the plugin where there is one."""
    load_backend()
    return has_codegen()


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


@functools.cache
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
    except Exception as err:
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
        new: int  # a bool for a capability
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
    from tvm.target import Target

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
    from tvm.base import _LOADED_LIBS

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
