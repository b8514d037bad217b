"""Target presets: every shipped preset loads and TVM accepts its target; the explicit fields land
in the TVM target; a wrong field is one line naming the file, the key, the value and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import presets
from pipeline.compile.targets import GPU_RULES, RULE_NAMES, TARGETS_DIR, available_targets, load_target
from pipeline.errors import PipelineError

SHIPPED = ["android", "cpu", "cuda", "iphone", "metal", "vulkan", "webgpu"]


def test_shipped_presets():
    assert set(SHIPPED) <= set(available_targets())
    for name in SHIPPED:
        preset = load_target(name)
        assert preset.name == name and preset.path == TARGETS_DIR / f"{name}.yaml"
        assert preset.tvm_target().kind.name == preset.target["kind"]
        assert set(preset.schedule) <= set(RULE_NAMES)


@pytest.mark.parametrize("name,kind,host,threads,smem,warp,library,fp16,rules", [
    ("cpu", "llvm", None, None, None, None, "so", True, ("CPUMatmul",)),
    ("cuda", "cuda", None, 1024, 49152, 32, "so", True, GPU_RULES),
    ("metal", "metal", "arm64-apple-macos", 256, 32768, 16, "dylib", True, GPU_RULES),
    ("iphone", "metal", "arm64-apple-ios", 256, 32768, 1, "tar", True, GPU_RULES),
    ("webgpu", "webgpu", "wasm32-unknown-unknown-wasm", 256, None, 1, "wasm", False, GPU_RULES[1:]),  # no dispatch
    ("android", "opencl", "aarch64-linux-android", 256, 16384, 1, "tar", True, GPU_RULES),
])
def test_preset_fields_reach_the_tvm_target(name, kind, host, threads, smem, warp, library, fp16, rules):
    preset = load_target(name)
    target = preset.tvm_target()
    assert target.kind.name == kind
    assert (target.host.attrs["mtriple"] if target.host is not None else None) == host
    attrs = dict(target.attrs)
    assert (attrs.get("max_num_threads"), attrs.get("max_shared_memory_per_block"), attrs.get("thread_warp_size")) == (
        threads, smem, warp)
    assert (preset.library, preset.supports_fp16, preset.schedule) == (library, fp16, rules)


def test_system_library_and_link_settings():
    assert load_target("iphone").system_lib and load_target("iphone").link is None
    assert load_target("iphone").target["libs"] == ["iphoneos"]
    android = load_target("android")
    assert android.system_lib and android.link == {"format": "so", "command": ["ld.lld", "-shared", "-o", "{output}",
                                                                                "{objects}"]}
    metal = load_target("metal")
    assert not metal.system_lib and metal.link["format"] == "dylib" and metal.link["command"][0] == "xcrun"


BASE = "name: mine\ntarget: {kind: opencl}\nlibrary: tar\n"


@pytest.mark.parametrize("text,needles", [
    (BASE.replace("library: tar", "library: exe"), ["mine.yaml: library: 'exe' is not one of", "'wasm'"]),
    (BASE + "colour: red\n", ["mine.yaml: <top level>: unknown key 'colour'; allowed keys: ", "schedule"]),
    (BASE + "host: 'aarch64 linux'\n", ["mine.yaml: host: 'aarch64 linux' does not match"]),
    (BASE + "limits: {max_num_threads: 0}\n", ["mine.yaml: limits.max_num_threads: 0 is less than the minimum of 1"]),
    (BASE + "limits: {max_threads: 64}\n", ["limits: unknown key 'max_threads'; allowed keys: max_num_threads, "]),
    (BASE + "supports_fp16: maybe\n", ["mine.yaml: supports_fp16: 'maybe' is not of type 'boolean'"]),
    (BASE + "schedule: {rules: [gpu.Matmull]}\n", ["mine.yaml: schedule.rules.0: 'gpu.Matmull' is not one of",
                                                   "'GenericMatmul'"]),
    (BASE + "schedule: {rules: []}\n", ["mine.yaml: schedule.rules: [] should be non-empty"]),
    (BASE.replace("library: tar", "library: so") + "system_lib: true\n",
     ["mine.yaml: library: 'so', expected 'tar' (system_lib: true needs library: tar"]),
    (BASE.replace("library: tar", "library: dylib"), ["mine.yaml: <top level>: 'link' is a required property"]),
    (BASE + "link: {format: so, command: [ld.lld, -o, '{output}']}\n",
     ["mine.yaml: link.command: ['ld.lld', '-o', '{output}'] lacks the placeholder '{objects}'"]),
    (BASE.replace("target: {kind: opencl}", "target: {kind: opencl, host: {kind: llvm}}")
     + "host: aarch64-linux-android\n",
     ["mine.yaml: target.host: {'kind': 'llvm'} given twice (also as host: 'aarch64-linux-android'); "
      "expected it once"]),
    (BASE.replace("target: {kind: opencl}", "target: {kind: opencl, max_num_threads: 64}")
     + "limits: {max_num_threads: 128}\n",
     ["target.max_num_threads: 64 given twice (also as limits.max_num_threads: 128)"]),
    (BASE.replace("library: tar", "library: so") + "link: {format: so, command: [ld.lld, '{output}', '{objects}']}\n",
     ["mine.yaml: <top level>: link with library 'so', expected library tar or dylib"]),
    ("name: mine\ntarget: [opencl\n", ["mine.yaml: malformed YAML"]),
], ids=["library-value", "unknown-key", "host-triple", "limit-minimum", "limit-key", "fp16-type", "rule-name",
        "no-rules", "system-lib-not-tar", "dylib-without-link", "link-without-objects", "host-twice", "limit-twice",
        "link-with-so", "malformed"])
def test_wrong_field_is_one_line_naming_file_key_value_and_expected(tmp_path, text, needles):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError) as err:
        load_target(str(path))
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    for needle in needles:
        assert needle in message, message


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(PipelineError, match=r"target 'playstation' is unknown; expected one of \['android', 'cpu'"):
        load_target("playstation")


def test_a_user_preset_needs_no_code(tmp_path):
    """A new preset file with every field: loads, and its fields reach the TVM target."""
    path = tmp_path / "adreno.yaml"
    path.write_text("name: adreno\ntarget: {kind: opencl, device: adreno}\nhost: aarch64-linux-android\n"
                    "limits: {max_num_threads: 512, max_shared_memory_per_block: 32768}\nsupports_fp16: true\n"
                    "schedule: {rules: [GenericMatmul, gpu.GEMV, gpu.Fallback]}\nlibrary: tar\nsystem_lib: true\n")
    preset = load_target(str(path))
    target = preset.tvm_target()
    assert target.attrs["device"] == "adreno" and target.attrs["max_num_threads"] == 512
    assert target.host.attrs["mtriple"] == "aarch64-linux-android"
    assert preset.schedule == ("GenericMatmul", "gpu.GEMV", "gpu.Fallback") and preset.system_lib


def test_presets_are_found_in_a_checkout_then_where_a_wheel_puts_them(monkeypatch, tmp_path):
    monkeypatch.delenv("MLC_MTP_TARGETS", raising=False)
    assert presets.targets_dir() == Path(presets.__file__).resolve().parents[1] / "targets"
    monkeypatch.setattr(presets, "__file__", str(tmp_path / "site-packages/pipeline/presets.py"))
    monkeypatch.setattr(presets.sys, "prefix", str(tmp_path / "venv"))
    assert presets.targets_dir() == tmp_path / "venv/share/mlc-mtp/targets"
    monkeypatch.setenv("MLC_MTP_TARGETS", str(tmp_path / "mine"))
    assert presets.targets_dir() == tmp_path / "mine"
