"""The architecture file of a Gemma 3 MTP head (the registry row's ``architecture``):
:class:`pipeline.models.gemma3_mtp.config.MTPConfig` without ``base`` (the base model's config),
as a JSON schema."""

from ..layer_types import LAYER_TYPES

SCHEMA = {
    "type": "object",
    "required": ["layer_type"],
    "additionalProperties": False,
    "patternProperties": {"^_": {}},
    "properties": {"layer_type": {"enum": list(LAYER_TYPES)}, "use_post_norm": {"type": "boolean"},
                   "hidden_states_first": {"type": "boolean"}},
}
