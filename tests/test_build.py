"""The staged build: cached re-runs, --force, stage keys, and the float32 variant for a target without
float16.  (The package it writes: tests/package/.)"""

from __future__ import annotations

import json

import pytest

from pipeline.build import build
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.runtime.engine import Engine
from tests.helpers.gemma3 import make_tiny_gemma3
from tests.helpers.packages import build_package, write_config

pytestmark = pytest.mark.compile


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


def test_generate_takes_its_defaults_from_the_config(tmp_path, capsys):
    """The config's generation.max_tokens reaches `mlc-mtp generate` through the package."""
    from pipeline.cli import main

    make_tiny_gemma3(tmp_path / "hf", seed=2, shard=False)
    build_package(tmp_path, tmp_path / "hf", generation={"max_tokens": 5, "temperature": 0.0})
    assert main(["generate", str(tmp_path / "pkg"), "--prompt", "w4 w5 w6"]) == 0
    err = capsys.readouterr().err
    assert "5 generated" in err or "stopped by stop_token" in err, err
    assert main(["generate", str(tmp_path / "pkg"), "--prompt", "w4 w5 w6", "--max-tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "2 generated" in err or "stopped by stop_token" in err, err


def test_renamed_config_compiles_its_own_library(tiny_config, tmp_path):
    """The library file name (from the config's name) is part of the compile stage's key: a second
    config that differs only in name gets its own library, while import and convert are reused."""
    import dataclasses

    first = build(tiny_config, output=tmp_path / "d", progress=False, say=lambda _: None)
    renamed = dataclasses.replace(tiny_config, name="tiny-renamed")
    second = build(renamed, output=tmp_path / "e", progress=False, say=lambda _: None)
    assert [r.cached for r in second.stages] == [True, True, False]
    assert second.libraries == {"cpu": "lib/tiny-renamed-q0f32-cpu.so"} and first.libraries != second.libraries
    assert Engine(second.output).metadata["model_name"] == "tiny-renamed"


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


def test_an_up_to_date_build_leaves_the_package_as_it_is(tiny_config, tmp_path):
    """A re-run with nothing changed writes nothing; a package whose files changed is written again."""
    first = build(tiny_config, output=tmp_path / "u", progress=False, say=lambda _: None)
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.output.rglob("*") if p.is_file()}
    said = []
    again = build(tiny_config, output=tmp_path / "u", progress=False, say=said.append)
    assert said[-1].startswith(f"package: {tmp_path / 'u'} already holds this build (")
    assert said[-1].endswith("); left as it is")
    assert again.libraries == first.libraries
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.output.rglob("*") if p.is_file()} == stamps
    (first.output / "tokenizer.json").write_text("{}")  # damaged: written again
    said.clear()
    build(tiny_config, output=tmp_path / "u", progress=False, say=said.append)
    assert said[-1] == f"package: wrote {tmp_path / 'u'}" and Engine(first.output).tokenizer is not None


def test_changing_the_context_window_reuses_the_import(tiny_config, tmp_path):
    import dataclasses

    base = build(tiny_config, output=tmp_path / "w1", progress=False, say=lambda _: None)
    wider = dataclasses.replace(tiny_config, overrides={**tiny_config.overrides, "context_window_size": 512})
    other = build(wider, output=tmp_path / "w2", progress=False, say=lambda _: None)
    assert [r.cached for r in other.stages] == [True, True, False]  # import and convert reused, compiled again
    assert other.stages[0].key == base.stages[0].key
    assert Engine(other.output).context_window == 512 and Engine(base.output).context_window == 256


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path, capsys):
    from tests.helpers.gemma3 import write_word_tokenizer

    make_tiny_gemma3(tmp_path / "hf", seed=3, shard=False)
    write_word_tokenizer(tmp_path / "hf", 120)  # the model's vocabulary has 96 entries
    config = write_config(tmp_path / "c.yaml", tmp_path / "hf", output=str(tmp_path / "pkg"))
    capsys.readouterr()  # transformers' progress bars while the model was saved
    status = main(["build", str(config), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == [f"error: {tmp_path / 'hf'}: tokenizer of 120 tokens, expected at most the "
                                   f"model's vocab_size of 96 (ids past it would index outside the embedding)"]
    assert not (tmp_path / "pkg").exists()


def test_generate_takes_the_configs_prompt_when_none_is_given(tmp_path, capsys):
    make_tiny_gemma3(tmp_path / "hf", seed=2, shard=False)
    build_package(tmp_path, tmp_path / "hf", generation={"max_tokens": 2, "prompt": "w7 w8"})
    assert main(["generate", str(tmp_path / "pkg")]) == 0
    assert capsys.readouterr().out.startswith("w7 w8")
    assert main(["generate", str(tmp_path / "pkg"), "--prompt", "w9"]) == 0
    assert capsys.readouterr().out.startswith("w9")


def test_the_build_drops_tvms_take_warning_and_keeps_other_stderr(tiny_config, tmp_path, capfd):
    import os

    from pipeline.build import TAKE_WARNING, _stderr_without

    with _stderr_without("drop me"):
        os.write(2, b"keep 1\ndrop me please\nkeep 2\n")
    assert capfd.readouterr().err == "keep 1\nkeep 2\n"
    build(tiny_config, output=tmp_path / "t", force=True, progress=False, say=lambda _: None)
    err = capfd.readouterr().err
    assert TAKE_WARNING not in err
