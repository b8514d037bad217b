"""JSON Schema (draft 2020-12) of a pipeline YAML file (``configs/*.yaml``).

Sections: ``name``; ``model`` (family and config overrides); ``source`` (base weights: a GGUF
file or a Hugging Face directory, by path or from an installed Python package); ``quantization``
(MLC LLM's names, ``python/mlc_llm/quantization/quantization.py``); ``targets`` (preset names
from ``targets/``); ``output``; ``generation`` defaults; ``speculative`` (whether and how the
runtime decodes speculatively by default); ``mtp`` (reserved for MTP drafters).
"""

QUANTIZATIONS = ["q0f32", "q0f16", "q4f16_1", "q4f32_1"]
FAMILIES = ["gemma3"]
SOURCE_FORMATS = ["gguf", "hf-safetensors"]
SPECULATIVE_MODES = ["off", "mtp"]

# Speculative decoding settings, the same keys in the YAML file and in the package's runtime config
# (``mlc-mtp-config.json``), which adds the drafter's files (RUNTIME_SPECULATIVE).  The draft length
# rule is in pipeline/runtime/draft_length.py.
SPECULATIVE_DEFAULTS = {"mode": "off", "draft_length": 3, "adaptive": True, "min_draft_length": 1,
                        "max_draft_length": 8}
SPECULATIVE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "mode": {"enum": SPECULATIVE_MODES, "description": "off: plain decoding; mtp: the package's MTP drafter"},
        "draft_length": {"type": "integer", "minimum": 1, "description": "tokens drafted per step (the first step's when adaptive)"},
        "adaptive": {"type": "boolean", "description": "grow the draft length after fully accepted steps, shrink it after rejections"},
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
    },
}

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
            "oneOf": [{"required": ["path"]}, {"required": ["package"]}],
            "properties": {
                "format": {"enum": SOURCE_FORMATS},
                "path": {"type": "string", "minLength": 1},
                "package": {"type": "string", "minLength": 1},
                "entry": {"type": "string", "minLength": 1},
            },
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
        "mtp": {
            "type": "object",
            "additionalProperties": False,
            "description": "Reserved: multi-token-prediction heads (filled in by later releases).",
            "properties": {
                "source": {"type": "object"},
            },
        },
    },
}
