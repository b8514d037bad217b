"""Model families: ``family`` name -> config class, model class and weight loaders.

Adding a family is adding a folder under ``pipeline/models/`` and a row here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..errors import PipelineError
from .gemma3 import loader as gemma3_loader
from .gemma3.model import Gemma3Config, Gemma3ForCausalLM
from .gemma4 import loader as gemma4_loader
from .gemma4.config import Gemma4Config
from .gemma4.model import Gemma4ForCausalLM
from .gemma4_assistant import loader as assistant_loader
from .gemma4_assistant.model import Gemma4AssistantConfig, Gemma4AssistantForCausalLM


@dataclasses.dataclass(frozen=True)
class Family:
    """How to build and load one model family."""

    name: str
    config_cls: type
    model_cls: type
    config_from_hf: Callable[..., Any]
    config_from_gguf: Callable[..., Any]
    gguf_name_map: Callable[[int], dict[str, str]]
    hf_name: Callable[[str], str | None]
    hf_transform: Callable[[str, Any], Any]
    gguf_architecture: str


FAMILIES = {
    "gemma3": Family(
        name="gemma3",
        config_cls=Gemma3Config,
        model_cls=Gemma3ForCausalLM,
        config_from_hf=Gemma3Config.from_hf,
        config_from_gguf=gemma3_loader.config_from_gguf,
        gguf_name_map=gemma3_loader.gguf_name_map,
        hf_name=gemma3_loader.hf_name,
        hf_transform=gemma3_loader.hf_transform,
        gguf_architecture="gemma3",
    ),
    "gemma4": Family(
        name="gemma4",
        config_cls=Gemma4Config,
        model_cls=Gemma4ForCausalLM,
        config_from_hf=Gemma4Config.from_hf,
        config_from_gguf=gemma4_loader.config_from_gguf,
        gguf_name_map=gemma4_loader.gguf_name_map,
        hf_name=gemma4_loader.hf_name,
        hf_transform=gemma4_loader.hf_transform,
        gguf_architecture="gemma4",
    ),
    "gemma4_assistant": Family(  # an MTP drafter, built beside a gemma4 base model
        name="gemma4_assistant",
        config_cls=Gemma4AssistantConfig,
        model_cls=Gemma4AssistantForCausalLM,
        config_from_hf=Gemma4AssistantConfig.from_hf,
        config_from_gguf=assistant_loader.config_from_gguf,
        gguf_name_map=assistant_loader.gguf_name_map,
        hf_name=assistant_loader.hf_name,
        hf_transform=assistant_loader.hf_transform,
        gguf_architecture="gemma4_assistant",
    ),
}


def get_family(name: str) -> Family:
    """The family called ``name``.  Raises PipelineError listing the known families."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise PipelineError(f"model family {name!r} is unknown; expected one of {sorted(FAMILIES)}") from None
