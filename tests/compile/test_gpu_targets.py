"""GPU target presets: the windowed attention kernels and a tiny Gemma 3 compile for each GPU kind
this TVM can build (CUDA, Metal, WebGPU, OpenCL for Android), the outputs as MLC places them
(objects of the right architecture, system-library prefixes, the Android .so linked by ld.lld, the
Metal link command where no Mac linker exists), the preset's schedule rules, and Vulkan refused
with the reason.  Nothing here runs a GPU (tests/models/test_gpu_cuda.py does, where one exists).

On a machine without a CUDA driver, TVM 0.26 keeps a CUDA library's kernels as CUDA C (compiled by
NVRTC when a GPU machine loads the library), so the CUDA C is compiled here with nvcc for sm_90.
"""

from __future__ import annotations

import math
import re
import shutil
import tarfile
from pathlib import Path

import pytest
import tvm
from tvm.s_tir import dlight as dl
from tvm.support import nvcc

from pipeline.compile.compiler import (
    CUDA_GRAPH_CONFIG,
    compile_module,
    export_model,
    relax_pipeline,
    schedule_rules,
    system_lib_prefix,
)
from pipeline.compile.link import find_program
from pipeline.compile.targets import RULE_NAMES, load_target
from pipeline.errors import PipelineError
from pipeline.kernels import attention as ak
from pipeline.kernels.attention_gpu import block_threads
from pipeline.models.registry import get_family
from pipeline.presets import KERNEL_TARGET_KINDS, require_kernel_target
from pipeline.quantization import get_scheme
from tests.helpers.gemma3 import TINY_CONFIG
from tests.helpers.opencl import compile_split, device_source

pytestmark = pytest.mark.compile

NO_NVCC = "" if shutil.which("nvcc") else "nvcc (the CUDA toolkit) is not on PATH"
GPU_PRESETS = ["cuda", "metal", "webgpu", "android"]
KERNELS = ("windowed_ragged_prefill_gpu", "windowed_paged_prefill_gpu", "windowed_paged_decode_gpu")
# What each kind's shading language calls a work-group barrier, and its device source module.
BARRIER = {"cuda": "__syncthreads()", "metal": "threadgroup_barrier", "webgpu": "workgroupBarrier()",
           "opencl": "barrier(CLK_LOCAL_MEM_FENCE)"}


def compile_cuda_source(source: str, target) -> bytes:
    """CUDA C -> cubin with nvcc, for the preset's architecture."""
    with target:
        return bytes(nvcc.compile_cuda(source, target_format="cubin", arch=target.arch, compiler="nvcc"))


@pytest.mark.parametrize("name", GPU_PRESETS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("split", [False, True], ids=["one-block", "split"])
def test_attention_kernels_compile_with_barriers(name, dtype, split):
    """Gemma 3 270M's shape (1 KV head, 4 query heads, head_dim 256), block size from the preset;
    ``split``: flash-decoding's kernels (switched on per kind: ``kv_cache.SPLIT_DECODE_KINDS``)."""
    preset = load_target(name)
    if dtype == "float16" and not preset.supports_fp16:
        pytest.skip(f"{name} builds float32 models only")
    target = preset.tvm_target()
    threads = block_threads(int(target.attrs["max_num_threads"]))
    funcs = {
        "ragged": ak.ragged_prefill(1, 4, 256, dtype, 512, threads),
        "prefill": ak.paged_prefill(1, 4, 256, dtype, 512, 16, threads, split=split),
        "decode": ak.paged_decode(1, 4, 256, dtype, 512, 16, threads, split=split),
    }
    source = device_source(tvm.compile(tvm.IRModule(funcs), target=target))
    for kernel in KERNELS:
        assert kernel in source
    assert source.count(BARRIER[target.kind.name]) >= 3 * (2 * 7 + 4)  # two reductions of 7 levels + 4 more
    if name == "cuda" and not NO_NVCC:
        assert compile_cuda_source(source, target)[:4] == b"\x7fELF"


@pytest.mark.parametrize("preset,threads", [("cuda", 128), ("metal", 128), ("webgpu", 128), ("android", 128)])
def test_block_size_follows_the_preset_limit(preset, threads):
    assert block_threads(int(load_target(preset).tvm_target().attrs["max_num_threads"])) == threads
    assert block_threads(96) == 64 and block_threads(1) == 1


def _tiny_library(tmp_path, name: str, quantization: str, **overrides):
    """Compile the tiny model for preset ``name`` (a name or a YAML path) into ``tmp_path``;
    returns ``compile_module``'s records with ``path`` added."""
    family, scheme, preset = get_family("gemma3"), get_scheme(quantization), load_target(name)
    mod, _, _ = export_model(family, family.config_cls(**{**TINY_CONFIG, **overrides}), scheme, preset, "tiny")
    library = tmp_path / f"tiny-{quantization}-{preset.name}.{preset.library}"
    records = compile_module(mod, preset, library, system_lib_prefix("tiny", quantization))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(r["file"] for r in records)
    return [{**r, "path": tmp_path / r["file"]} for r in records]


def test_tiny_model_builds_a_cuda_library(tmp_path):
    """A shared object carrying the CUDA C of our attention kernels (no CUDA driver here)."""
    [record] = _tiny_library(tmp_path, "cuda", "q0f32")
    data = record["path"].read_bytes()
    assert data[:4] == b"\x7fELF"
    for kernel in KERNELS:
        assert kernel.encode() in data


@pytest.mark.skipif(bool(NO_NVCC), reason=NO_NVCC)
def test_every_cuda_kernel_of_a_q4f16_1_model_compiles():
    """All kernels of the tiny model in q4f16_1 (float16 attention, the fused dequantize-matmul
    under the GPU schedules, TVM's cache kernels) through nvcc for sm_90."""
    family, preset = get_family("gemma3"), load_target("cuda")
    mod, _, _ = export_model(family, family.config_cls(**TINY_CONFIG), get_scheme("q4f16_1"), preset, "tiny")
    target = preset.tvm_target()
    source = device_source(tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target)))
    assert "dequantize" in source and all(kernel in source for kernel in KERNELS)
    assert compile_cuda_source(source, target)[:4] == b"\x7fELF"


def test_cuda_graphs_are_captured_only_when_the_pass_context_asks():
    """CUDA's Relax pipeline runs TVM's RewriteCUDAGraph: ``decode`` (static shapes) gets graph
    captures between its KV-cache calls with ``relax.backend.use_cuda_graph``, none without."""
    family, preset = get_family("gemma3"), load_target("cuda")
    mod, _, _ = export_model(family, family.config_cls(**TINY_CONFIG), get_scheme("q0f32"), preset, "tiny")
    target = preset.tvm_target()
    scripts = {}
    for on in (False, True):
        with tvm.transform.PassContext(config={CUDA_GRAPH_CONFIG: on}), target:
            scripts[on] = relax_pipeline(target, preset.schedule)(mod)["decode"].script()
    assert "vm.builtin.cuda_graph.run_or_capture" in scripts[True]
    assert "cuda_graph" not in scripts[False]


@pytest.mark.parametrize("name", ["metal", "iphone"])
def test_every_device_kernel_is_emitted_as_msl(name):
    """Nothing here runs or parses Metal (Apple's shader compiler is macOS-only), so check the
    code generator's output against what it was given: every device kernel that TVM's
    ``SplitHostDevice`` made of a one-layer q4f16_1 model (the model's fused kernels, the cache's
    kernels, ours) is one ``kernel void`` function of the MSL, with a threadgroup size within the
    preset's limit, and none is left over."""
    family, preset = get_family("gemma3"), load_target(name)
    mod, _, _ = export_model(family, family.config_cls(**{**TINY_CONFIG, **ONE_LAYER}), get_scheme("q4f16_1"), preset,
                             "tiny")
    target = preset.tvm_target()
    executable, _, kernels = compile_split(mod, target, relax_pipeline=relax_pipeline(target, preset.schedule))
    msl = device_source(executable, ("metal",))
    emitted = re.findall(r"^kernel void (\w+)\(", msl, flags=re.M)
    assert len(kernels) > 40 and sorted(emitted) == sorted(kernels)
    assert all(any(e.startswith(k) for e in emitted) for k in KERNELS) and "half" in msl
    limit = int(target.attrs["max_num_threads"])
    for kernel, func in kernels.items():
        extents = {}
        tvm.tirx.stmt_functor.post_order_visit(func.body, lambda node, extents=extents: extents.update(
            {node.node.thread_tag: int(node.value)} if type(node).__name__ == "AttrStmt"
            and node.attr_key == "thread_extent" and node.node.thread_tag.startswith("threadIdx") else {}))
        assert 1 <= math.prod(extents.values()) <= limit, f"{kernel}: threads {extents} over {limit}"


MACHO_ARM64 = b"\xcf\xfa\xed\xfe\x0c\x00\x00\x01"  # MH_MAGIC_64, CPU_TYPE_ARM64
ELF_AARCH64 = (183).to_bytes(2, "little")  # e_machine EM_AARCH64
# MLC's system-library symbol for model "tiny", q0f32: <prefix>__tvm_ffi__library_bin (mlc-llm's
# `mlc_llm package` looks the model up by it).
PREFIXED_BLOB = b"tiny_q0f32___tvm_ffi__library_bin"
ONE_LAYER = {"num_hidden_layers": 1, "layer_types": ["sliding_attention"]}


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _is_aarch64_elf(data: bytes, e_type: int) -> bool:
    return data[:4] == b"\x7fELF" and data[16:18] == e_type.to_bytes(2, "little") and data[18:20] == ELF_AARCH64


@pytest.fixture(scope="module")
def metal_build(tmp_path_factory):
    # The first Metal compile in a process spends ~30 s once in dlight's MetalMatmul (gpu.Matmul's
    # Metal path; GenericMatmul skips it); later ones take seconds.
    return _tiny_library(tmp_path_factory.mktemp("metal"), "metal", "q0f32", **ONE_LAYER)


@pytest.mark.skipif(find_program("xcrun") is not None, reason="xcrun is here: the metal build links a .dylib")
def test_metal_without_a_mac_linker_gives_objects_and_the_link_command(metal_build):
    """No xcrun (not a Mac): a .tar of arm64 Mach-O objects holding the MSL of our kernels, and
    the command a Mac user runs to get the .dylib MLC loads."""
    [record] = metal_build
    assert record["format"] == "tar" and record["file"] == "tiny-q0f32-metal.tar"
    assert record["system_lib_prefix"] is None
    objects = _members(record["path"])
    assert objects and all(data.startswith(MACHO_ARM64) for data in objects.values())
    assert any(all(k.encode() in data for k in KERNELS) and b"threadgroup_barrier" in data for data in objects.values())
    assert not any(PREFIXED_BLOB in data for data in objects.values())  # a shared library's objects
    assert record["link_command"] == (
        "mkdir -p lib/tiny-q0f32-metal-objects && tar -xf lib/tiny-q0f32-metal.tar -C lib/tiny-q0f32-metal-objects"
        " && xcrun -sdk macosx clang -dynamiclib -arch arm64 -undefined dynamic_lookup"
        " -o lib/tiny-q0f32-metal.dylib lib/tiny-q0f32-metal-objects/*.o")


@pytest.mark.skipif(find_program("ld64.lld") is None,
                    reason="ld64.lld (LLVM's Mach-O linker, Debian lld) is not on PATH")
def test_a_user_preset_with_a_linker_present_gets_the_dylib(tmp_path):
    """The metal preset with its link command swapped for LLVM's Mach-O linker, present here: a
    preset file and no code change give the .dylib (a Mach-O arm64 MH_DYLIB; not run)."""
    preset = tmp_path / "metal-lld.yaml"
    preset.write_text(load_target("metal").path.read_text().replace("name: metal", "name: metal-lld").replace(
        "command: [xcrun, -sdk, macosx, clang, -dynamiclib, -arch, arm64,",
        "command: [ld64.lld, -dylib, -arch, arm64, -platform_version, macos, '11.0', '11.0',"))
    out = tmp_path / "out"
    out.mkdir()
    [record] = _tiny_library(out, str(preset), "q0f32", **ONE_LAYER)
    data = record["path"].read_bytes()
    assert record["format"] == "dylib" and record["file"] == "tiny-q0f32-metal-lld.dylib" and not record["link_command"]
    assert data.startswith(MACHO_ARM64) and int.from_bytes(data[12:16], "little") == 6  # filetype MH_DYLIB
    assert b"__tvm_ffi__library_bin" in data and all(k.encode() in data for k in KERNELS)


def test_iphone_gives_a_system_library_tar_with_mlc_prefix(tmp_path):
    """As mlc-llm builds for iOS: arm64 Mach-O objects of a system library whose blob symbol carries
    the prefix <model>_<quantization>_, the MSL of our kernels inside."""
    [record] = _tiny_library(tmp_path, "iphone", "q0f32")
    assert record["format"] == "tar" and record["file"] == "tiny-q0f32-iphone.tar"
    assert record["system_lib_prefix"] == "tiny_q0f32_" and record["link_command"] is None
    objects = _members(record["path"])
    assert objects and all(data.startswith(MACHO_ARM64) for data in objects.values())
    assert any(b"_" + PREFIXED_BLOB in data for data in objects.values())  # Mach-O symbols get a leading _
    assert any(all(k.encode() in data for k in KERNELS) for data in objects.values())


def test_android_gives_a_system_library_tar_and_an_so_where_ld_lld_is(tmp_path):
    """A .tar of aarch64 ELF relocatable objects (system library, MLC's prefix, OpenCL C inside) and,
    where ld.lld is found (Debian: ld.lld-14), an aarch64 shared object exporting TVM's
    unprefixed library blob, which TVM's runtime loads on a phone (not run here)."""
    records = _tiny_library(tmp_path, "android", "q0f32")
    tar = records[0]
    assert tar["format"] == "tar" and tar["system_lib_prefix"] == "tiny_q0f32_"
    objects = _members(tar["path"])
    assert objects and all(_is_aarch64_elf(data, 1) for data in objects.values())  # ET_REL
    assert any(PREFIXED_BLOB in data for data in objects.values())
    assert any(all(k.encode() in data for k in KERNELS) and b"__kernel" in data for data in objects.values())
    if find_program("ld.lld") is None:
        assert len(records) == 1
        pytest.skip("ld.lld is not on PATH: no .so")
    [so] = records[1:]
    data = so["path"].read_bytes()
    assert so["format"] == "so" and so["file"] == "tiny-q0f32-android.so" and so["system_lib_prefix"] is None
    assert _is_aarch64_elf(data, 3)  # ET_DYN
    assert b"__tvm_ffi__library_bin" in data and PREFIXED_BLOB not in data


def test_a_linker_not_found_is_said_and_the_tar_kept(tmp_path, caplog):
    """A preset whose link program is absent: the system-library .tar alone, and a warning naming
    the program (a build must not drop the .so silently)."""
    preset = tmp_path / "android-nold.yaml"
    preset.write_text(load_target("android").path.read_text().replace("name: android", "name: android-nold")
                      .replace("command: [ld.lld,", "command: [ld.llx,"))
    out = tmp_path / "out"
    out.mkdir()
    records = _tiny_library(out, str(preset), "q0f32", **ONE_LAYER)
    assert [r["format"] for r in records] == ["tar"]
    assert "target android-nold: ld.llx is not on PATH: no .so linked, only tiny-q0f32-android-nold.tar" in caplog.text


def test_schedule_rules_follow_the_preset():
    gpu = [type(rule).__name__ for rule in schedule_rules(load_target("cuda").schedule)]
    assert gpu == ["LowBatchDispatch", "Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback"]
    assert [type(rule).__name__ for rule in schedule_rules(load_target("cuda").schedule)[0].rest] == gpu[1:]
    assert [type(rule).__name__ for rule in schedule_rules(load_target("cpu").schedule)] == ["CPUMatmul"]
    assert len(schedule_rules(RULE_NAMES)) == len(RULE_NAMES)  # every name a preset may list exists
    with pytest.raises(PipelineError, match="no schedule rule 'gpu.Nope'"):
        schedule_rules(["gpu.Nope"])


def test_generic_matmul_skips_the_metal_simdgroup_schedule():
    """gpu.Matmul gives Metal float16 matmuls dlight's MetalMatmul (simdgroup matrices, which
    TVM 0.27 crashes on); GenericMatmul gives them the generic tiled schedule, bound to threads."""
    def matmul():  # a fresh module per rule: ApplyDefaultSchedule marks functions scheduled in place
        a = tvm.te.placeholder((1, 128, 256), "float16", name="A")
        b = tvm.te.placeholder((512, 256), "float16", name="B")
        k = tvm.te.reduce_axis((0, 256), "k")
        c = tvm.te.compute((1, 128, 512), lambda n, i, j: tvm.te.sum(a[n, i, k] * b[j, k], axis=k), name="C")
        return tvm.IRModule({"main": tvm.te.create_prim_func([a, b, c])})

    target = load_target("metal").tvm_target()
    scripts = {}
    for name in ("gpu.Matmul", "GenericMatmul"):
        with target:
            scripts[name] = dl.ApplyDefaultSchedule(*schedule_rules([name]))(matmul()).script()
    assert "simdgroup" in scripts["gpu.Matmul"]
    assert "simdgroup" not in scripts["GenericMatmul"] and 'thread_binding' in scripts["GenericMatmul"]
    assert "threadIdx.x" in scripts["GenericMatmul"] and "shared" in scripts["GenericMatmul"]


def test_vulkan_preset_is_refused_with_the_way_to_a_vulkan_tvm(tmp_path):
    """PyPI's TVM without the Vulkan plugin (an empty plugin folder; run in a fresh interpreter, as a
    loaded plugin cannot be unloaded): one line naming both missing parts and the two ways to them."""
    import os
    import subprocess
    import sys

    if tvm.support.libinfo().get("USE_VULKAN", "OFF") != "OFF":
        pytest.skip("this TVM has its own Vulkan backend (USE_VULKAN=ON)")
    code = ("from pipeline.compile.targets import load_target\nfrom pipeline.errors import PipelineError\n"
            "try:\n    load_target('vulkan').check_buildable()\nexcept PipelineError as err:\n    print(err)")
    out = subprocess.run([sys.executable, "-c", code], cwd=load_target("vulkan").path.parents[1], check=True,
                         env={**os.environ, "MLC_MTP_TVM_VULKAN_LIB": str(tmp_path)}, capture_output=True,
                         text=True, timeout=120).stdout.strip()
    v = tvm.__version__
    assert out == (f"{load_target('vulkan').path}: target kind 'vulkan' cannot be built: this TVM {v} has no "
                   f"SPIR-V code generator (target.build.vulkan) and no Vulkan runtime: build TVM's Vulkan backend "
                   f"for it with scripts/build_tvm_vulkan.sh (from tag v{v}; loaded from $MLC_MTP_TVM_VULKAN_LIB, here "
                   f"{tmp_path}), or install TVM {v} built from tag v{v} with USE_VULKAN=ON")


def test_kernel_kinds_and_the_refusal_of_others():
    assert set(KERNEL_TARGET_KINDS) == {"llvm", "cuda", "metal", "opencl", "vulkan", "webgpu"}
    with pytest.raises(PipelineError, match="rocm.yaml: windowed attention kernels exist for target kinds llvm, "):
        require_kernel_target("rocm", "rocm.yaml")
