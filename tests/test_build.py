"""The staged build: MLC's package layout, cached re-runs, --force, and no partial output."""

from __future__ import annotations

import json

import pytest

from pipeline.build import build
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.package import write as write_module
from pipeline.runtime.engine import Engine
from tests.conftest import make_tiny_gemma3, write_config


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    make_tiny_gemma3(root / "hf", seed=1, shard=False)
    return load_config(write_config(root / "tiny.yaml", root / "hf"))


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


def test_unchanged_rerun_does_no_work_and_force_redoes_it(tiny_config, tmp_path):
    said = []
    first = build(tiny_config, output=tmp_path / "a", progress=False, say=said.append)
    assert [r.stage for r in first.stages] == ["import", "convert", "compile[cpu]"]
    said.clear()
    again = build(tiny_config, output=tmp_path / "a", progress=False, say=said.append)
    assert all(r.cached for r in again.stages)
    assert sum("up to date" in line and "nothing to do" in line for line in said) == len(again.stages)
    forced = build(tiny_config, output=tmp_path / "a", force=True, progress=False, say=lambda _: None)
    assert not any(r.cached for r in forced.stages)
    assert [r.key for r in forced.stages] == [r.key for r in first.stages]


def test_changed_setting_changes_only_the_stages_after_it(tiny_config, tmp_path):
    base = build(tiny_config, output=tmp_path / "b", progress=False, say=lambda _: None)
    other = build(tiny_config, output=tmp_path / "c", quantization="q4f32_1", progress=False, say=lambda _: None)
    assert other.stages[0].cached and other.stages[0].key == base.stages[0].key  # import reused
    assert other.stages[1].key != base.stages[1].key and not other.stages[1].cached
    with pytest.raises(PipelineError, match="q_weight"):  # a q4 library over q0f32 weights
        Engine(base.output, model_lib=other.output / "lib" / "tiny-q4f32_1-cpu.so")


def test_failed_packaging_leaves_the_previous_output_and_no_temporaries(tiny_config, tmp_path, monkeypatch):
    out = tmp_path / "pkg"
    build(tiny_config, output=out, progress=False, say=lambda _: None)
    before = sorted(p.name for p in out.iterdir())

    def explode(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(write_module, "chat_config", explode)
    with pytest.raises(RuntimeError):
        build(tiny_config, output=out, progress=False, say=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_generate_takes_its_defaults_from_the_config(tmp_path, capsys):
    """The config's generation.max_tokens reaches `mlc-mtp generate` through the package."""
    from pipeline.cli import main  # pylint: disable=import-outside-toplevel

    make_tiny_gemma3(tmp_path / "hf", seed=2, shard=False)
    config = load_config(write_config(tmp_path / "g.yaml", tmp_path / "hf",
                                      generation={"max_tokens": 5, "temperature": 0.0}))
    build(config, output=tmp_path / "pkg", progress=False, say=lambda _: None)
    assert main(["generate", str(tmp_path / "pkg"), "--prompt", "w4 w5 w6"]) == 0
    err = capsys.readouterr().err
    assert "5 generated" in err or "stopped by stop_token" in err, err
    assert main(["generate", str(tmp_path / "pkg"), "--prompt", "w4 w5 w6", "--max-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "2 generated" in err or "stopped by stop_token" in err, err


def test_renamed_config_compiles_its_own_library(tiny_config, tmp_path):
    """The library file name (from the config's name) is part of the compile stage's key: a second
    config that differs only in name gets its own library, while import and convert are reused."""
    import dataclasses  # pylint: disable=import-outside-toplevel

    first = build(tiny_config, output=tmp_path / "d", progress=False, say=lambda _: None)
    renamed = dataclasses.replace(tiny_config, name="tiny-renamed")
    second = build(renamed, output=tmp_path / "e", progress=False, say=lambda _: None)
    assert [r.cached for r in second.stages] == [True, True, False]
    assert second.libraries == {"cpu": "lib/tiny-renamed-q0f32-cpu.so"} and first.libraries != second.libraries
    assert Engine(second.output).metadata["model_name"] == "tiny-renamed"


def test_package_lists_every_library_with_its_target(tiny_config, tmp_path):
    """Metal without a Mac linker and iPhone: lib/ holds the Metal .tar and the iPhone system-library
    .tar; mlc-mtp-config.json lists each with its target, and the command that links the Metal
    .dylib is both printed and recorded.  (The Android .tar + .so: tests/compile/test_gpu_targets.py.)
    Both presets with GenericMatmul in place of gpu.Matmul: the same outputs without the ~30 s that
    dlight's MetalMatmul takes on a process's first Metal compile."""
    from pipeline.compile.targets import load_target  # pylint: disable=import-outside-toplevel
    from pipeline.compile.link import find_program  # pylint: disable=import-outside-toplevel

    if find_program("xcrun") is not None:
        pytest.skip("xcrun is here: the metal build links its .dylib")
    presets = []
    for name in ("metal", "iphone"):
        presets.append(tmp_path / f"{name}.yaml")
        presets[-1].write_text(load_target(name).path.read_text().replace("rules: [gpu.Matmul,", "rules: [GenericMatmul,"))
    said = []
    result = build(tiny_config, targets=[str(p) for p in presets], output=tmp_path / "pkg", progress=False,
                   say=said.append)
    runtime = json.loads((result.output / "mlc-mtp-config.json").read_text())
    expected = ["lib/tiny-q0f32-metal.tar", "lib/tiny-q0f32-iphone.tar"]
    assert [entry["path"] for entry in runtime["libraries"]] == expected
    assert sorted(p.name for p in (result.output / "lib").iterdir()) == sorted(e.split("/")[1] for e in expected)
    metal, iphone = runtime["libraries"]
    assert runtime["model_lib"] == {"metal": "lib/tiny-q0f32-metal.tar", "iphone": "lib/tiny-q0f32-iphone.tar"}
    assert (metal["target"], metal["format"], metal["role"], metal["system_lib_prefix"]) == ("metal", "tar", "model", None)
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
    from pipeline.compile.link import find_program  # pylint: disable=import-outside-toplevel

    if find_program("emcc") is None:
        pytest.skip("emcc (emscripten) is not on PATH: bash scripts/setup_webgpu.sh")
    result = build(tiny_config, targets=["webgpu"], output=tmp_path / "pkg", progress=False, say=lambda _: None)
    wasm = result.output / "lib" / "tiny-q0f32-webgpu.wasm"
    assert wasm.read_bytes()[:4] == b"\x00asm" and result.libraries == {"webgpu": "lib/tiny-q0f32-webgpu.wasm"}
    [entry] = json.loads((result.output / "mlc-mtp-config.json").read_text())["libraries"]
    assert (entry["target"], entry["format"], entry["tvm_target"]["kind"]) == ("webgpu", "wasm", "webgpu")


def _no_fp16_preset(tmp_path):
    """A CPU preset declaring no float16, standing in for WebGPU without shader-f16."""
    path = tmp_path / "cpu-f32.yaml"
    path.write_text("name: cpu-f32\ntarget: {kind: llvm}\nsupports_fp16: false\nschedule: {rules: [CPUMatmul]}\n"
                    "library: so\n")
    return str(path)


@pytest.fixture(scope="module")
def float32_only(tmp_path_factory):
    """(config, package, what the build said, preset): a q4f16_1 config built for a float32-only preset."""
    root = tmp_path_factory.mktemp("f32")
    make_tiny_gemma3(root / "hf", seed=2, shard=False)
    config = load_config(write_config(root / "tiny.yaml", root / "hf", quantization="q4f16_1"))
    said, preset = [], _no_fp16_preset(root)
    result = build(config, targets=[preset], output=root / "pkg", progress=False, say=said.append)
    return config, result.output, said, preset


def test_a_target_without_float16_builds_the_float32_variant_of_the_configs_scheme(float32_only, tmp_path):
    config, package, said, preset = float32_only
    assert json.loads((package / "mlc-chat-config.json").read_text())["quantization"] == "q4f32_1"
    assert (package / "lib" / "tiny-q4f32_1-cpu-f32.so").is_file()
    assert any("cpu-f32 has no float16: building q4f32_1 (float32 compute) instead of q4f16_1" in s for s in said)
    with pytest.raises(PipelineError, match=r"^--quantization q4f16_1: target cpu-f32 has no float16 support; "
                                            r"expected a float32 scheme such as q4f32_1$"):
        build(config, targets=[preset], output=tmp_path / "pkg2", quantization="q4f16_1", progress=False,
              say=said.append)
    assert not (tmp_path / "pkg2").exists()


def test_generate_runs_the_packages_only_library_on_its_recorded_device(float32_only, capsys, tmp_path):
    """No --target: the package's only library (preset cpu-f32, a file outside targets/) on the
    device of the kind the package records; a missing target or an unloadable library: one line."""
    package = float32_only[1]
    assert main(["generate", str(package), "--prompt", "w4 w5 w6", "--max-tokens", "2"]) == 0
    assert "2 generated" in capsys.readouterr().err
    assert main(["generate", str(package), "--prompt", "w4", "--target", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {package}: no library for target 'cuda' (has ['cpu-f32'])"
    fake = tmp_path / "model.wasm"
    fake.write_bytes(b"\0asm\1\0\0\0")
    assert main(["generate", str(package), "--prompt", "w4", "--model-lib", str(fake)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {fake}: TVM 0.26.0 cannot load it here: ") and "tvmjs" in err[0]
