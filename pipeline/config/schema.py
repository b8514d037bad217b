"""JSON Schema (draft 2020-12) of a pipeline YAML file (``configs/*.yaml``).

Sections: ``name``; ``model`` (family and config overrides); ``source`` (base weights: a GGUF
file or a Hugging Face directory, by path or from an installed Python package); ``quantization``
(MLC LLM's names, ``python/mlc_llm/quantization/quantization.py``, and ours:
:mod:`pipeline.quantization.schemes`); ``targets`` (preset names
from ``targets/``); ``output``; ``generation`` defaults; ``speculative`` (whether and how the
runtime decodes speculatively by default); ``mtp`` (the MTP drafter: family, weights format and
location, optional tensor-name map and architecture).

An architecture file (``model.architecture``, ``mtp.architecture``) is a model's Hugging Face
``config.json`` content kept in the repository, so that a config can be dry-run without its weights;
:func:`architecture_schema` gives the fields each family's file must hold, with their types
(:data:`BASE_ARCHITECTURE` for base families; a drafter's is in its folder).  Keys that
start with ``_`` (``_comment``: where each number comes from) are notes, never read.
"""

from typing import Any

from ..models.layer_types import LAYER_TYPES
from ..models.registry import base_families, drafter_families, get_family
from ..quantization.schemes import SCHEMES

QUANTIZATIONS = list(SCHEMES)
# Base families, and drafter families with the base families each drafts for, from the registry
# (pipeline/models/registry.py); a drafter family's older name (alias) is accepted by the loader.
FAMILIES = base_families()
SOURCE_FORMATS = sorted({f for name in FAMILIES for f in get_family(name).formats})
MTP_FAMILIES = {name: get_family(name).drafts_for for name in drafter_families()}
# Drafter family -> weights formats it can come in -> whether ``name_map`` is "required",
# "optional" or "refused" (each row's ``formats`` says what the formats are).
MTP_FORMATS = {name: {f: fmt.name_map for f, fmt in get_family(name).formats.items()} for name in drafter_families()}
SPECULATIVE_MODES = ["off", "mtp"]

# Speculative decoding settings, the same keys in the YAML file and in the package's runtime config
# (``mlc-mtp-config.json``), which adds the drafter's files (RUNTIME_SPECULATIVE).  The draft length
# rule is in pipeline/runtime/draft_length.py.
SPECULATIVE_DEFAULTS = {"mode": "off", "draft_length": 3, "adaptive": True, "min_draft_length": 1,
                        "max_draft_length": 8}
SPECULATIVE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "mode": {"enum": SPECULATIVE_MODES, "description": "off: plain decoding; mtp: the package's MTP drafter"},
        "draft_length": {"type": "integer", "minimum": 1,
                         "description": "tokens drafted per step (the first step's when adaptive)"},
        "adaptive": {"type": "boolean",
                     "description": "grow the draft length after fully accepted steps, shrink it after rejections"},
        "min_draft_length": {"type": "integer", "minimum": 1},
        "max_draft_length": {"type": "integer", "minimum": 1},
    },
}
RUNTIME_SPECULATIVE = {
    **SPECULATIVE,
    "properties": {
        **SPECULATIVE["properties"],
        "drafter_lib": {"type": ["object", "null"], "additionalProperties": {"type": "string"},
                        "description": "target preset -> drafter library path inside the package"},
        "drafter_weights": {"type": ["string", "null"], "description": "drafter weights directory inside the package"},
        "drafter_family": {"type": ["string", "null"],
                           "description": "model family of the drafter (e.g. gemma4_assistant)"},
        "draft_vocab": {"type": ["object", "null"],
                        "description": "the drafter's reduced vocabulary: size, the drafter parameter holding "
                                       "the token ids, and the counts file it was taken from"},
    },
}

# A file or directory given by ``path`` (relative to the YAML file) or made by an installed Python
# package (its ``entry`` function, default ``assemble``).
LOCATION_KEYS = {
    "path": {"type": "string", "minLength": 1},
    "package": {"type": "string", "minLength": 1},
    "entry": {"type": "string", "minLength": 1},
}
ONE_LOCATION = [{"required": ["path"]}, {"required": ["package"]}]

MTP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["family", "format"],
    "oneOf": ONE_LOCATION,
    "description": "The multi-token-prediction drafter built beside the base model.",
    "properties": {
        "family": {"enum": list(MTP_FAMILIES)},
        "format": {"enum": sorted({f for formats in MTP_FORMATS.values() for f in formats})},
        **LOCATION_KEYS,
        "name_map": {"type": "string", "minLength": 1,
                     "description": "YAML file (relative to the config) mapping source tensor names to ours"},
        "architecture": {"type": "string", "minLength": 1,
                         "description": "JSON file (relative to the config): the drafter's config.json content"},
        "draft_vocab": {
            "type": "object", "additionalProperties": False, "required": ["counts", "size"],
            "description": "draft over the base's most frequent generated tokens only (FR-Spec)",
            "properties": {
                "counts": {"type": "string", "minLength": 1,
                           "description": "safetensors file (relative to the config): token ids by frequency"},
                "size": {"type": "integer", "minimum": 1, "description": "number of tokens drafted over"},
            },
        },
    },
}

# --- architecture files -----------------------------------------------------------------------
POSITIVE = {"type": "integer", "minimum": 1}
COUNT = {"type": ["integer", "null"], "minimum": 0}  # 0 or null: the feature is off
ROPE = {"type": "object", "properties": {
    "rope_type": {"type": "string"}, "rope_theta": {"type": "number", "exclusiveMinimum": 0},
    "partial_rotary_factor": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "factor": {"type": "number", "exclusiveMinimum": 0}}}
# Fields of a Gemma text config (transformers' Gemma3TextConfig / Gemma4TextConfig names); other
# keys of a real config.json are allowed and not read here.
TEXT_CONFIG = {
    "type": "object",
    "required": ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads"],
    "properties": {
        "vocab_size": POSITIVE, "hidden_size": POSITIVE, "intermediate_size": POSITIVE,
        "num_hidden_layers": POSITIVE, "num_attention_heads": POSITIVE, "num_key_value_heads": POSITIVE,
        "head_dim": POSITIVE, "global_head_dim": POSITIVE,
        "num_global_key_value_heads": {"type": ["integer", "null"], "minimum": 1},
        "sliding_window": POSITIVE, "max_position_embeddings": POSITIVE,
        "layer_types": {"type": "array", "items": {"enum": list(LAYER_TYPES)}, "minItems": 1},
        "rms_norm_eps": {"type": "number", "exclusiveMinimum": 0},
        "final_logit_softcapping": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "hidden_size_per_layer_input": COUNT, "vocab_size_per_layer_input": COUNT,
        "num_kv_shared_layers": COUNT, "num_experts": COUNT, "top_k_experts": COUNT, "moe_intermediate_size": COUNT,
        "attention_k_eq_v": {"type": "boolean"}, "use_double_wide_mlp": {"type": "boolean"},
        "enable_moe_block": {"type": "boolean"},
        "rope_parameters": {"type": ["object", "null"], "properties": {t: ROPE for t in LAYER_TYPES}},
    },
}
# A base model's file: a text config, or a multimodal config.json whose text_config is one.
BASE_ARCHITECTURE = {"if": {"type": "object", "required": ["text_config"]},
                     "then": {"properties": {"text_config": TEXT_CONFIG}}, "else": TEXT_CONFIG}


def architecture_schema(family: str) -> dict:
    """The JSON schema of ``family``'s architecture file (its registry row's ``architecture``)."""
    return get_family(family).architecture_schema()


SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "model", "source"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
        "model": {
            "type": "object",
            "additionalProperties": False,
            "required": ["family"],
            "properties": {
                "family": {"enum": FAMILIES},
                "architecture": {"type": "string", "minLength": 1,
                                 "description": "JSON file (relative to the config): the model's config.json content"},
                "overrides": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "context_window_size": {"type": "integer", "minimum": 16},
                        "prefill_chunk_size": {"type": "integer", "minimum": 1},
                        "max_batch_size": {"type": "integer", "minimum": 1},
                        "sliding_window": {"type": "integer", "minimum": 1},
                    },
                },
            },
        },
        "source": {
            "type": "object",
            "additionalProperties": False,
            "required": ["format"],
            "oneOf": ONE_LOCATION,
            "properties": {"format": {"enum": SOURCE_FORMATS}, **LOCATION_KEYS},
        },
        "quantization": {"enum": QUANTIZATIONS},
        "targets": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "output": {"type": "string", "minLength": 1},
        "generation": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "temperature": {"type": "number", "minimum": 0},
                "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "max_tokens": {"type": "integer", "minimum": 1},
                "stop": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "prompt": {"type": "string"},
            },
        },
        "speculative": SPECULATIVE,
        "mtp": MTP,
    },
}
