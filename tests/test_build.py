"""The staged build: MLC's package layout, cached re-runs, --force, and no partial output."""

from __future__ import annotations

import json

import pytest

from pipeline import build as build_module
from pipeline.build import build
from pipeline.config import load_config
from pipeline.errors import PipelineError
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

    monkeypatch.setattr(build_module, "chat_config", explode)
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
