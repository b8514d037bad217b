"""Importing a ``gemma4_assistant`` drafter through a name map: from the TFLite drafter of a
``.litertlm`` file (configs/name-maps/litertlm-gemma4-mtp-drafter.yaml) and from a community
safetensors extraction (configs/name-maps/coreml-llm-gemma4-mtp-drafter.yaml).

The ``.litertlm`` files are packed with ``litert-lm-builder`` (tests/sources/litert_fixtures.py):
a drafter whose tensors carry the names of the real Gemma 4 drafter, INT8 and INT4 per-channel
weights, float32/bfloat16 norms with stray quantization metadata, non-parameter constants, beside
a prefill/decode model, LLM metadata and a tokenizer.  Expected values are computed independently
(``float32(float64(scale) * (q - zero_point))``, the reference dequantization).
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from pipeline.errors import PipelineError
from pipeline.models.gemma4_assistant.loader import LITERTLM_NAME_MAP
from pipeline.models.importer import expected_shapes, import_weights
from pipeline.models.name_map import NameMap
from pipeline.models.registry import get_family
from tests.helpers.litert import (
    ARG_SUFFIX,
    DRAFTER_NORMS,
    TT,
    float_weight,
    gemma4_drafter_litertlm,
    gemma4_drafter_names,
    gemma4_drafter_tensors,
    quantized_weight,
)

FAMILY = get_family("gemma4_assistant")
COMMUNITY_MAP = LITERTLM_NAME_MAP.parent / "coreml-llm-gemma4-mtp-drafter.yaml"
# The real drafter's structure at toy sizes: 3 sliding layers and a full one, query-only attention.
ARCHITECTURE = {
    "model_type": "gemma4_assistant", "backbone_hidden_size": 24, "use_ordered_embeddings": False,
    "text_config": {
        "vocab_size": 40, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "global_head_dim": 16,
        "sliding_window": 8, "max_position_embeddings": 512, "final_logit_softcapping": 30.0,
        "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
    },
}
SHAPES = expected_shapes(FAMILY, FAMILY.config_from_hf(ARCHITECTURE))


def write_architecture(directory: Path) -> tuple[dict, Path]:
    """The architecture file and its content, as ``import_weights`` takes them."""
    path = directory / "drafter-architecture.json"
    path.write_text(json.dumps(ARCHITECTURE))
    return ARCHITECTURE, path


def test_litertlm_drafter_values_land_in_their_parameters(tmp_path):
    weights, expected = gemma4_drafter_tensors(SHAPES)
    assert {TT.INT8, TT.INT4, TT.FLOAT32, TT.BFLOAT16} <= {w.type for w in weights}
    path = gemma4_drafter_litertlm(tmp_path, weights)
    config, imported = import_weights(FAMILY, "litertlm", path, {}, progress=False,
                                      architecture=write_architecture(tmp_path),
                                      name_map=NameMap.read(LITERTLM_NAME_MAP))
    assert config.num_hidden_layers == 4 and config.backbone_hidden_size == 24
    assert list(imported) == list(SHAPES)
    for name, array in imported.items():
        assert array.dtype == np.float32, name
        np.testing.assert_array_equal(array, expected[name], err_msg=name)
    # the float norms kept their values despite the tiny stray scales; one constant fills three query norms
    assert np.abs(imported["model.norm.weight"]).min() > 1e-6
    for i in (1, 2):
        np.testing.assert_array_equal(imported[f"model.layers.{i}.self_attn.q_norm.weight"],
                                      imported["model.layers.0.self_attn.q_norm.weight"])
    assert not np.array_equal(imported["model.layers.3.self_attn.q_norm.weight"][:8],
                              imported["model.layers.0.self_attn.q_norm.weight"])


def coreml_names() -> dict[str, str]:
    """Transformers name -> the CoreML-LLM port's state-dict name (its module attributes)."""
    names = {"pre_projection.weight": "mtp_pre_proj.weight", "post_projection.weight": "mtp_post_proj.weight",
             "model.embed_tokens.weight": "lm_head.weight", "model.norm.weight": "final_norm.weight"}
    for i in range(4):
        for ours, theirs in (("self_attn.q_proj", "attn.q_proj"), ("self_attn.o_proj", "attn.o_proj"),
                             ("self_attn.q_norm", "attn.q_norm"), ("mlp.gate_proj", "mlp.gate1"),
                             ("mlp.up_proj", "mlp.gate2"), ("mlp.down_proj", "mlp.down"),
                             *((norm, norm) for norm in DRAFTER_NORMS)):
            names[f"model.layers.{i}.{ours}.weight"] = f"layers.{i}.{theirs}.weight"
    return names


def transformers_checkpoint(seed: int = 1) -> dict[str, np.ndarray]:
    """Random drafter tensors in transformers' names, norms in bfloat16, layer scalars 1."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in SHAPES.items():
        values = rng.normal(0.0, 0.5, size=shape).astype(np.float32)
        if name.endswith("layer_scalar"):
            values = np.ones(shape, np.float32)
        tensors[name] = values.astype(ml_dtypes.bfloat16) if len(shape) == 1 else values
    return tensors


def test_renamed_extraction_imports_as_the_transformers_original(tmp_path):
    original = transformers_checkpoint()
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(ARCHITECTURE))
    save_file(original, str(tmp_path / "hf" / "model.safetensors"))
    renamed = {theirs: original[ours] for ours, theirs in coreml_names().items()}
    assert len(renamed) == 44 and not set(renamed) & set(original)
    save_file(renamed, str(tmp_path / "extraction.safetensors"))

    _, reference = import_weights(FAMILY, "hf-safetensors", tmp_path / "hf", {}, progress=False)
    _, imported = import_weights(FAMILY, "safetensors", tmp_path / "extraction.safetensors", {}, progress=False,
                                 architecture=write_architecture(tmp_path), name_map=NameMap.read(COMMUNITY_MAP))
    assert list(imported) == list(reference)
    for name in reference:
        np.testing.assert_array_equal(imported[name], reference[name], err_msg=name)
    np.testing.assert_array_equal(imported["model.layers.2.mlp.up_proj.weight"],
                                  original["model.layers.2.mlp.up_proj.weight"])


def _litertlm_case(tmp_path, change):
    """``(format, file, name map, the source name the error must give)`` for a bad LiteRT drafter
    (a missing one as the map's pattern gives it)."""
    weights, _ = gemma4_drafter_tensors(SHAPES)
    by_name = {w.name: w for w in weights}
    named = {"missing": f"jax2tf_arg_22/{ARG_SUFFIX}", "unmatched": "layer_1/layer_1.post_qkv/mlp/bias",
             "wrong-shape": gemma4_drafter_names()["model.layers.1.self_attn.q_proj.weight"]}[change]
    if change == "missing":
        del by_name[named]
    elif change == "unmatched":
        by_name[named] = float_weight(np.random.default_rng(3), named, (32,))
    else:
        by_name[named] = quantized_weight(np.random.default_rng(3), named, (16, 16), bits=8)
    named = "'jax2tf_arg_22/*'" if change == "missing" else named
    return "litertlm", gemma4_drafter_litertlm(tmp_path, list(by_name.values())), LITERTLM_NAME_MAP, named


def _safetensors_case(tmp_path, change):
    """The same for a renamed safetensors extraction."""
    tensors = {coreml_names().get(ours, ours): value for ours, value in transformers_checkpoint().items()
               if "layer_scalar" not in ours}
    named = {"missing": "layers.1.post_feedforward_layernorm.weight", "unmatched": "layers.1.mlp.bias",
             "wrong-shape": "layers.1.attn.q_proj.weight"}[change]
    if change == "missing":
        del tensors[named]
    else:
        tensors[named] = np.zeros((32,) if change == "unmatched" else (16, 16), np.float32)
    save_file(tensors, str(tmp_path / "extraction.safetensors"))
    return "safetensors", tmp_path / "extraction.safetensors", COMMUNITY_MAP, named


@pytest.mark.parametrize("case", [_litertlm_case, _safetensors_case], ids=["litertlm", "safetensors"])
@pytest.mark.parametrize("change, words", [
    ("missing", ["1 parameter(s) missing, first model.layers.1.post_feedforward_layernorm.weight (shape [16]), "
                 "expected under the source name"]),
    ("unmatched", ["(shape [32]) matches no entry of the name map"]),
    ("wrong-shape", ["has shape [16, 16], expected [32, 16] for model.layers.1.self_attn.q_proj.weight"]),
], ids=["missing", "unmatched", "wrong-shape"])
def test_bad_sources_give_one_line_errors(tmp_path, case, change, words):
    source_format, path, map_path, named = case(tmp_path, change)
    with pytest.raises(PipelineError) as err:
        import_weights(FAMILY, source_format, path, {}, progress=False,
                       architecture=write_architecture(tmp_path), name_map=NameMap.read(map_path))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    for word in [*words, named]:
        assert word in message, message


@pytest.mark.parametrize("mapping, words", [
    ({"a.{layer}.w": "model.layers.{layer}.mlp.up_proj.weight", "b": "model.layers.{layer}.input_layernorm.weight"},
     ["'b'", "uses {layer}", "no {layer}"]),
    ({"a": "unused:"}, ["'a'", "unused: <why"]),
    ({"constant: one": "model.norm.weight"}, ["constant: <number>"]),
    ({"a": "model.norm.weight, ,x"}, ["target ''"]),
    ({"a": ["model.norm.weight"]}, ["'a'", "expected 'source tensor name"]),
])
def test_malformed_name_map_entries(mapping, words):
    with pytest.raises(PipelineError) as err:
        NameMap(mapping, "maps/m.yaml")
    assert str(err.value).startswith("maps/m.yaml: ") and all(w in str(err.value) for w in words), str(err.value)


def test_name_map_lookup_rules():
    name_map = NameMap({"x.{layer}.w": "model.layers.{layer}.mlp.up_proj.weight", "x.*": "unused: rest",
                        "x.7.w": "model.norm.weight", "y*": "unused: y", "*z": "unused: z",
                        "q.{layer}.a.{layer}": "model.layers.{layer}.self_attn.q_norm.weight"}, "m.yaml")
    assert name_map.lookup("x.7.w") == ("model.norm.weight",)  # the exact entry wins over the patterns
    assert name_map.lookup("x.12.v") == ()
    assert name_map.lookup("q.2.a.2") == ("model.layers.2.self_attn.q_norm.weight",)
    assert name_map.lookup("q.2.a.3") is None  # one index, written twice
    assert name_map.expected_source("model.layers.5.self_attn.q_norm.weight") == "q.5.a.5"
    with pytest.raises(PipelineError, match=r"m.yaml: source tensor 'yz' matches both 'y\*' and '\*z'"):
        name_map.lookup("yz")
    constants = NameMap({"constant: 1": "model.layers.{layer}.layer_scalar, model.norm.weight",
                         "constant: -0.5": "pre_projection.weight"}, "m.yaml")
    assert constants.lookup("constant: 1") is None  # a constant is no source tensor
    assert constants.constants(list(SHAPES)) == {**{f"model.layers.{i}.layer_scalar": 1.0 for i in range(4)},
                                                 "model.norm.weight": 1.0, "pre_projection.weight": -0.5}
    with pytest.raises(PipelineError, match=r"m.yaml: 'constant: 2': target 'model.layers.{layer}.scalar' matches "
                                            r"no parameter"):
        NameMap({"constant: 2": "model.layers.{layer}.scalar"}, "m.yaml").constants(list(SHAPES))


def test_target_that_is_no_parameter(tmp_path):
    weights, _ = gemma4_drafter_tensors(SHAPES)
    mapping = dict(NameMap.read(LITERTLM_NAME_MAP).mapping)
    mapping["jax2tf_arg_0/ReadVariableOp;StatefulPartitionedCall"] = "model.final_norm.weight"
    with pytest.raises(PipelineError, match=r"^m.yaml: tensor 'jax2tf_arg_0/.*' maps to 'model.final_norm.weight', "
                                            r"which is not a parameter of this gemma4_assistant model"):
        import_weights(FAMILY, "litertlm", gemma4_drafter_litertlm(tmp_path, weights), {}, progress=False,
                       architecture=write_architecture(tmp_path), name_map=NameMap(mapping, "m.yaml"))


@pytest.mark.parametrize("source_format, name_map", [("safetensors", COMMUNITY_MAP), ("litertlm", LITERTLM_NAME_MAP),
                                                     ("litertlm", None)])
def test_drafter_source_from_config(tmp_path, source_format, name_map):
    """The build's drafter source: the config's name map (checked by the config loader) or the
    LiteRT default, and the architecture file's content; without an architecture, one line."""
    from pipeline.build import _drafter_source
    from pipeline.config import load_config
    from tests.helpers.packages import write_config

    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"")
    _, arch_path = write_architecture(tmp_path)
    mtp = {"family": "gemma4_assistant", "format": source_format, "path": str(weights)}
    if name_map is not None:
        mtp["name_map"] = str(name_map)
    config_path = write_config(tmp_path / "c.yaml", tmp_path, model={"family": "gemma4"}, mtp=mtp)
    with pytest.raises(PipelineError, match=r"mtp.architecture: not given"):
        _drafter_source(load_config(config_path))
    config_path = write_config(tmp_path / "c.yaml", tmp_path, model={"family": "gemma4"},
                               mtp={**mtp, "architecture": str(arch_path)})
    family, found_format, path, options = _drafter_source(load_config(config_path))
    assert (family.name, found_format, path) == ("gemma4_assistant", source_format, weights)
    assert options["architecture"] == (ARCHITECTURE, arch_path)
    assert options["name_map"] == NameMap.read(name_map or LITERTLM_NAME_MAP)
    assert options["name_map"].origin == str(name_map or LITERTLM_NAME_MAP)
