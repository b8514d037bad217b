"""Where Gemma 4's parameters come from: Hugging Face tensor names -> ours.

Our parameter names are those of transformers' ``Gemma4ForCausalLM``
(``model.layers.N.self_attn.q_proj.weight``, ...), with ``.weight`` added to the expert tensors.  Multimodal checkpoints
(``Gemma4ForConditionalGeneration``) keep the text model under ``model.language_model.``; their
vision and audio towers and embedders are skipped.  ``Gemma4RMSNorm`` multiplies by its weight
as stored, so no tensor is transformed.
"""

from __future__ import annotations

import numpy as np

from ...errors import PipelineError

# Prefixes under which Hugging Face checkpoints keep the text model.
HF_PREFIXES = ("model.language_model.", "model.")
# Parts of multimodal checkpoints that the text model does not use.
# The 3-D expert tensors, parameters of their own in transformers, ``.weight`` of a module in ours.
EXPERT_TENSORS = ("experts.gate_up_proj", "experts.down_proj")
HF_SKIPPED = ("model.vision_tower.", "model.audio_tower.", "model.embed_vision.", "model.embed_audio.")


def hf_name(source_name: str) -> str | None:
    """Our name for a Hugging Face tensor name, or ``None`` for a tensor the text model skips
    (multimodal towers; ``lm_head.weight``, tied to the embedding)."""
    if source_name.startswith(HF_SKIPPED) or source_name == "lm_head.weight":
        return None
    for prefix in HF_PREFIXES:
        if source_name.startswith(prefix):
            ours = "model." + source_name[len(prefix):]
            return ours + ".weight" if ours.endswith(EXPERT_TENSORS) else ours
    return None


def hf_transform(_our_name: str, array: np.ndarray) -> np.ndarray:
    """Hugging Face tensors are already in our convention."""
    return array


def config_from_gguf(source, **_overrides):
    """Not supported yet: Gemma 4 imports from Hugging Face directories.

    Raises:
        PipelineError: always.
    """
    raise PipelineError(f"{source.path}: GGUF import of Gemma 4 is not supported; use format hf-safetensors")


def gguf_name_map(_num_layers: int) -> dict[str, str]:
    """No GGUF names (see :func:`config_from_gguf`)."""
    return {}
