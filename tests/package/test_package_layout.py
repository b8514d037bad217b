"""The package the build writes: MLC's layout, every library listed with its target, the WebGPU .wasm,
and no partial output when packaging fails."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline.build import build
from pipeline.package import write as write_module


def test_package_layout_follows_mlc(tiny_package):
    package = tiny_package[0]
    chat = json.loads((package / "mlc-chat-config.json").read_text())
    for key in ("model_type", "quantization", "model_config", "vocab_size", "context_window_size",
                "sliding_window_size", "prefill_chunk_size", "tensor_parallel_shards", "tokenizer_files",
                "conv_template", "bos_token_id", "eos_token_id", "pad_token_id", "temperature", "top_p"):
        assert key in chat, key
    assert chat["model_type"] == "gemma3" and chat["quantization"] == "q0f32"
    assert chat["model_config"]["sliding_window"] == 8 and chat["sliding_window_size"] == -1
    cache = json.loads((package / "tensor-cache.json").read_text())
    shards = {record["dataPath"] for record in cache["records"]}
    assert shards and all((package / s).is_file() and s.startswith("params_shard_") for s in shards)
    assert (package / "lib" / "tiny-q0f32-cpu.so").is_file()
    assert set(chat["tokenizer_files"]) <= {p.name for p in package.iterdir()}
    runtime = json.loads((package / "mlc-mtp-config.json").read_text())
    assert runtime["model_lib"] == {"cpu": "lib/tiny-q0f32-cpu.so"}


def test_failed_packaging_leaves_the_previous_output_and_no_temporaries(tiny_config, tmp_path, monkeypatch):
    out = tmp_path / "pkg"
    build(tiny_config, output=out, progress=False, say=lambda _: None)
    before = sorted(p.name for p in out.iterdir())

    def explode(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(write_module, "chat_config", explode)
    # other generation defaults: the package is written again (an unchanged build leaves it as it is)
    changed = dataclasses.replace(tiny_config, generation={**tiny_config.generation, "max_tokens": 7})
    with pytest.raises(RuntimeError):
        build(changed, output=out, progress=False, say=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_package_lists_every_library_with_its_target(tiny_config, tmp_path):
    """Metal without a Mac linker and iPhone: lib/ holds the Metal .tar and the iPhone system-library
    .tar; mlc-mtp-config.json lists each with its target, and the command that links the Metal
    .dylib is both printed and recorded.  (The Android .tar + .so: tests/compile/test_gpu_targets.py.)
    Both presets with GenericMatmul in place of gpu.Matmul: the same outputs without the ~30 s that
    dlight's MetalMatmul takes on a process's first Metal compile."""
    from pipeline.compile.link import find_program
    from pipeline.compile.targets import load_target

    if find_program("xcrun") is not None:
        pytest.skip("xcrun is here: the metal build links its .dylib")
    presets = []
    for name in ("metal", "iphone"):
        presets.append(tmp_path / f"{name}.yaml")
        preset = load_target(name).path.read_text()
        presets[-1].write_text(preset.replace("rules: [gpu.Matmul,", "rules: [GenericMatmul,"))
    said = []
    result = build(tiny_config, targets=[str(p) for p in presets], output=tmp_path / "pkg", progress=False,
                   say=said.append)
    runtime = json.loads((result.output / "mlc-mtp-config.json").read_text())
    expected = ["lib/tiny-q0f32-metal.tar", "lib/tiny-q0f32-iphone.tar"]
    assert [entry["path"] for entry in runtime["libraries"]] == expected
    assert sorted(p.name for p in (result.output / "lib").iterdir()) == sorted(e.split("/")[1] for e in expected)
    metal, iphone = runtime["libraries"]
    assert runtime["model_lib"] == {"metal": "lib/tiny-q0f32-metal.tar", "iphone": "lib/tiny-q0f32-iphone.tar"}
    assert (metal["target"], metal["format"], metal["role"], metal["system_lib_prefix"]) == (
        "metal", "tar", "model", None)
    assert metal["tvm_target"]["kind"] == "metal" and metal["tvm_target"]["host"]["mtriple"] == "arm64-apple-macos"
    assert metal["link_command"].endswith("-o lib/tiny-q0f32-metal.dylib lib/tiny-q0f32-metal-objects/*.o")
    assert [line for line in said if "not linked" in line] == [
        f"package: metal: lib/tiny-q0f32-metal.tar is not linked (no xcrun here); in {result.output} run: "
        f"{metal['link_command']}"]
    assert (iphone["target"], iphone["format"], iphone["system_lib_prefix"], iphone["link_command"]) == (
        "iphone", "tar", "tiny_q0f32_", None)
    assert iphone["tvm_target"]["libs"] == ["iphoneos"] and iphone["tvm_target"]["host"]["mtriple"] == "arm64-apple-ios"


def test_webgpu_build_gives_the_wasm(tiny_config, tmp_path):
    """`library: wasm`: the build links the .wasm WebLLM loads (emscripten, TVM's wasm runtime)."""
    from pipeline.compile.link import find_program

    if find_program("emcc") is None:
        pytest.skip("emcc (emscripten) is not on PATH: bash scripts/setup_webgpu.sh")
    result = build(tiny_config, targets=["webgpu"], output=tmp_path / "pkg", progress=False, say=lambda _: None)
    wasm = result.output / "lib" / "tiny-q0f32-webgpu.wasm"
    assert wasm.read_bytes()[:4] == b"\x00asm" and result.libraries == {"webgpu": "lib/tiny-q0f32-webgpu.wasm"}
    [entry] = json.loads((result.output / "mlc-mtp-config.json").read_text())["libraries"]
    assert (entry["target"], entry["format"], entry["tvm_target"]["kind"]) == ("webgpu", "wasm", "webgpu")
