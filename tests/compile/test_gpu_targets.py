"""GPU target presets: the windowed attention kernels and a tiny Gemma 3 compile for each GPU kind
this TVM can build (CUDA, Metal, WebGPU, OpenCL for Android), the outputs hold our kernels and
objects of the right architecture, and Vulkan is refused with the reason.  Nothing here runs a
GPU (tests/models/test_gpu_cuda.py does, where one exists).

On a machine without a CUDA driver, TVM 0.26 keeps a CUDA library's kernels as CUDA C (compiled by
NVRTC when a GPU machine loads the library), so the CUDA C is compiled here with nvcc for sm_90.
"""

from __future__ import annotations

import shutil
import tarfile

import pytest
import tvm
from tvm.support import nvcc

from pipeline.compile.build import (
    compile_module,
    export_model,
    relax_pipeline,
    schedule_rules,
)
from pipeline.compile.targets import load_target
from pipeline.errors import PipelineError
from pipeline.models import attention_kernels as ak
from pipeline.models.attention_kernels_gpu import block_threads
from pipeline.models.kv_cache import KERNEL_TARGET_KINDS, require_kernel_target
from pipeline.models.registry import get_family
from pipeline.quantization import get_scheme

NO_NVCC = "" if shutil.which("nvcc") else "nvcc (the CUDA toolkit) is not on PATH"
GPU_PRESETS = ["cuda", "metal", "webgpu", "android"]
KERNELS = ("windowed_ragged_prefill_gpu", "windowed_paged_prefill_gpu", "windowed_paged_decode_gpu")
# What each kind's shading language calls a work-group barrier, and its device source module.
BARRIER = {"cuda": "__syncthreads()", "metal": "threadgroup_barrier", "webgpu": "workgroupBarrier()",
           "opencl": "barrier(CLK_LOCAL_MEM_FENCE)"}
TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
            context_window_size=256, prefill_chunk_size=64)


def device_source(executable) -> str:
    """Device code of a compiled module (CUDA C, MSL, WGSL or OpenCL C), from every module of a
    GPU kind in its import tree."""
    pending, sources = [executable.mod], []
    while pending:
        module = pending.pop()
        if module.kind in ("cuda", "metal", "webgpu", "opencl"):
            sources.append(module.inspect_source())
        pending.extend(module.imports)
    return "".join(sources)


def compile_cuda_source(source: str, target) -> bytes:
    """CUDA C -> cubin with nvcc, for the preset's architecture."""
    with target:
        return bytes(nvcc.compile_cuda(source, target_format="cubin", arch=target.arch, compiler="nvcc"))


@pytest.mark.parametrize("name", GPU_PRESETS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_attention_kernels_compile_with_barriers(name, dtype):
    """Gemma 3 270M's shape (1 KV head, 4 query heads, head_dim 256), block size from the preset."""
    preset = load_target(name)
    if dtype == "float16" and not preset.supports_fp16:
        pytest.skip(f"{name} builds float32 models only")
    target = preset.tvm_target()
    threads = block_threads(int(target.attrs["max_num_threads"]))
    funcs = {
        "ragged": ak.ragged_prefill(1, 4, 256, dtype, 512, threads),
        "prefill": ak.paged_prefill(1, 4, 256, dtype, 512, 16, threads),
        "decode": ak.paged_decode(1, 4, 256, dtype, 512, 16, threads),
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


def _tiny_library(tmp_path, name: str, quantization: str):
    family, scheme, preset = get_family("gemma3"), get_scheme(quantization), load_target(name)
    mod, _, _ = export_model(family, family.config_cls(**TINY), scheme, preset, "tiny")
    library = tmp_path / f"tiny-{quantization}-{name}.{preset.library}"
    compile_module(mod, preset, library)
    return library


def test_tiny_model_builds_a_cuda_library(tmp_path):
    """A shared object carrying the CUDA C of our attention kernels (no CUDA driver here)."""
    data = _tiny_library(tmp_path, "cuda", "q0f32").read_bytes()
    assert data[:4] == b"\x7fELF"
    for kernel in KERNELS:
        assert kernel.encode() in data


@pytest.mark.skipif(bool(NO_NVCC), reason=NO_NVCC)
def test_every_cuda_kernel_of_a_q4f16_1_model_compiles():
    """All kernels of the tiny model in q4f16_1 (float16 attention, the fused dequantize-matmul
    under the GPU schedules, TVM's cache kernels) through nvcc for sm_90."""
    family, preset = get_family("gemma3"), load_target("cuda")
    mod, _, _ = export_model(family, family.config_cls(**TINY), get_scheme("q4f16_1"), preset, "tiny")
    target = preset.tvm_target()
    source = device_source(tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target)))
    assert "dequantize" in source and all(kernel in source for kernel in KERNELS)
    assert compile_cuda_source(source, target)[:4] == b"\x7fELF"


MAGIC = {"metal": (b"\xcf\xfa\xed\xfe\x0c\x00\x00\x01", "Mach-O arm64"), "webgpu": (b"\x00asm", "wasm"),
         "android": (b"\x7fELF", "ELF")}


@pytest.mark.parametrize("name", ["metal", "webgpu", "android"])
def test_tiny_model_builds_an_object_archive(tmp_path, name):
    """A .tar of host objects for the preset's host (Mach-O arm64, wasm32, aarch64 ELF) with the
    shaders inside (MSL, WGSL, OpenCL C as text): compiled here, not run."""
    library = _tiny_library(tmp_path, name, "q0f32")
    with tarfile.open(library) as tar:
        objects = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    magic, label = MAGIC[name]
    assert objects and all(data.startswith(magic) for data in objects.values()), label
    if name == "android":
        assert all(data[18:20] == (183).to_bytes(2, "little") for data in objects.values())  # EM_AARCH64
    assert any(all(k.encode() in data for k in KERNELS) for data in objects.values())


def test_gpu_kinds_get_dlight_gpu_rules_and_the_cpu_its_own():
    gpu = [type(rule).__name__ for rule in schedule_rules(load_target("cuda").tvm_target())]
    assert gpu == ["Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback"]
    assert [type(rule).__name__ for rule in schedule_rules(load_target("cpu").tvm_target())] == ["CPUMatmul"]


def test_vulkan_preset_is_refused_with_the_way_to_a_vulkan_tvm(tmp_path):
    """PyPI's TVM without the Vulkan plugin (an empty plugin folder; run in a fresh interpreter, as a
    loaded plugin cannot be unloaded): one line naming both missing parts and the two ways to them."""
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

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
