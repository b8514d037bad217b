"""The architecture file of a Gemma 4 assistant drafter (the registry row's ``architecture``):
transformers' ``Gemma4AssistantConfig`` fields, as a JSON schema."""

from ...config.schema import POSITIVE, TEXT_CONFIG

SCHEMA = {
    "type": "object",
    "required": ["backbone_hidden_size", "text_config"],
    "properties": {
        "backbone_hidden_size": POSITIVE, "use_ordered_embeddings": {"type": "boolean"},
        "num_centroids": POSITIVE, "centroid_intermediate_top_k": POSITIVE, "text_config": TEXT_CONFIG,
    },
}
