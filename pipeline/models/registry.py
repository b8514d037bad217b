"""Model families: one row per family, the one place that names them.

Adding a family is adding a folder under ``pipeline/models/`` (named as the family) and a row
here; the config schema, the config loader, the build, the dry run, the package writer and the
runtime look families up here instead of naming them.

Rows hold no classes or functions, only lazy references, ``"module:attr"`` strings resolved on
first use (``attr`` may be dotted, e.g. ``Config.from_hf``), so importing this module imports
neither TVM's compiler (``tvm.relax``) nor any model definition: a machine with TVM's runtime
only imports it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import PipelineError

BASE, DRAFTER = "base", "drafter"
NAME_MAP_POLICIES = ("required", "optional", "refused")


@functools.cache
def resolve(reference: str) -> Any:
    """The object a ``"package.module:attr[.attr...]"`` reference names (imported on first use)."""
    module_name, _, attrs = reference.partition(":")
    value: Any = importlib.import_module(module_name)
    for attr in attrs.split("."):
        value = getattr(value, attr)
    return value


@dataclasses.dataclass(frozen=True)
class SourceFormat:
    """How a family's weights are read in one source format.

    ``loader``: reference to the import function, called
    ``(family, source_format, path, overrides, progress, *, architecture, name_map) -> (config,
    {name: float32 array})`` (:func:`pipeline.models.importer.import_weights` is the common one).
    ``name_map``: whether the config's ``name_map`` is ``"required"``, ``"optional"`` or
    ``"refused"`` for this format.  ``default_name_map``: reference to the name-map file (a
    :class:`~pathlib.Path`) used when the config gives none; None: no default.
    """

    loader: str
    name_map: str = "refused"
    default_name_map: str | None = None

    def __post_init__(self):
        if self.name_map not in NAME_MAP_POLICIES:
            raise ValueError(f"name_map {self.name_map!r}, expected one of {NAME_MAP_POLICIES}")

    @property
    def import_weights(self) -> Callable[..., tuple[Any, dict[str, Any]]]:
        """The import function (:attr:`loader` resolved)."""
        return resolve(self.loader)

    def default_name_map_path(self) -> Path | None:
        """The default name-map file, or None."""
        return None if self.default_name_map is None else Path(resolve(self.default_name_map))


IMPORT_WEIGHTS = "pipeline.models.importer:import_weights"
BASE_FORMATS = {"gguf": SourceFormat(IMPORT_WEIGHTS), "hf-safetensors": SourceFormat(IMPORT_WEIGHTS)}


@dataclasses.dataclass(frozen=True, eq=False)  # rows compare and hash by identity (``formats`` is a dict)
class Family:
    """One model family (every field but ``name``, ``role``, ``drafts_for``, ``aliases`` and
    ``formats`` is a lazy ``"module:attr"`` reference, or None where the family has no such thing).

    - ``name``: the family name (``model.family`` / ``mtp.family`` in a config, ``model_type`` in
      a package); its folder is ``pipeline/models/<name>/``.
    - ``role``: ``"base"`` (a model of its own) or ``"drafter"`` (an MTP drafter built beside a
      base model); ``drafts_for``: a drafter's base families.
    - ``aliases``: older names still accepted in configs and packages (``drafter_family``).
    - ``formats``: source format -> :class:`SourceFormat` (loader, name-map policy).
    - ``config_class``, ``model_class``: the config dataclass and the ``tvm.relax.frontend.nn``
      module; ``from_hf``: ``(config.json dict, **overrides) -> config`` (raises KeyError,
      ValueError, TypeError on a bad architecture).
    - ``loader_module``: the module with ``hf_name``, ``hf_transform``, ``config_from_gguf`` and
      ``gguf_name_map`` (:func:`pipeline.models.importer.import_weights` uses them); None for a
      family with a loader of its own.
    - ``gguf_architecture``: a GGUF file's ``general.architecture`` for this family.
    - ``config_from_base``: a drafter whose config is derived from its base model's (the build
      and the dry run pass ``base=<base config>`` as the only override).
    - ``kv_layers``: ``(config) -> list[KVLayer]`` (:class:`pipeline.models.kv_layout.KVLayer`)
      for a model with a cache of its own; None: it reads the base model's K/V.
    - ``fit_check``: ``(base config, drafter config, origin path) -> None``, raising
      PipelineError when a drafter does not fit its base; None: nothing to check.
    - ``chat_template``: a base family's chat template (MLC's ``Conversation`` dict).
    - ``architecture``: the JSON schema of the family's architecture file (``model.architecture``
      / ``mtp.architecture``).
    - ``runtime_drafter``: a drafter's runtime class, constructed ``(engine, library, weights)``.
    - ``draft_vocab``: a drafter that shares its base's tied head and can draft over a reduced
      vocabulary (``mtp.draft_vocab``; :mod:`pipeline.models.draft_vocab`); its config takes
      ``draft_vocab_size``.
    """

    name: str
    role: str
    formats: dict[str, SourceFormat]
    config_class: str
    model_class: str
    from_hf: str
    architecture: str
    drafts_for: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    loader_module: str | None = None
    gguf_architecture: str | None = None
    config_from_base: bool = False
    kv_layers: str | None = None
    fit_check: str | None = None
    chat_template: str | None = None
    runtime_drafter: str | None = None
    draft_vocab: bool = False

    # --- resolved references ---------------------------------------------------------------
    @property
    def config_cls(self) -> type:
        """The config dataclass."""
        return resolve(self.config_class)

    @property
    def model_cls(self) -> type:
        """The model definition (``tvm.relax.frontend.nn.Module``); importing it needs ``tvm.relax``."""
        return resolve(self.model_class)

    @property
    def config_from_hf(self) -> Callable[..., Any]:
        """``(config.json dict, **overrides) -> config``."""
        return resolve(self.from_hf)

    def _loader(self, attr: str) -> Any:
        if self.loader_module is None:
            raise PipelineError(f"model family {self.name!r} has no {attr}; expected its own loader to be used")
        return resolve(f"{self.loader_module}:{attr}")

    @property
    def config_from_gguf(self) -> Callable[..., Any]:
        """``(GGUFSource, **overrides) -> config``."""
        return self._loader("config_from_gguf")

    @property
    def gguf_name_map(self) -> Callable[[int], dict[str, str]]:
        """``(number of layers) -> {GGUF tensor name: our name}``."""
        return self._loader("gguf_name_map")

    @property
    def hf_name(self) -> Callable[[str], str | None]:
        """Our name of a Hugging Face tensor name (None: not a parameter)."""
        return self._loader("hf_name")

    @property
    def hf_transform(self) -> Callable[[str, Any], Any]:
        """``(our name, array) -> array`` in our convention."""
        return self._loader("hf_transform")

    def kv_layers_of(self, config: Any) -> list[Any]:
        """Each layer's own KV facts (``KVLayer``) of a model with this family's ``config``.

        Raises:
            PipelineError: the family's models have no cache of their own.
        """
        if self.kv_layers is None:
            raise PipelineError(f"model family {self.name!r} has no KV cache of its own")
        return resolve(self.kv_layers)(config)

    def check_fits(self, base_config: Any, drafter_config: Any, origin: Path) -> None:
        """Check that this drafter's ``drafter_config`` fits ``base_config`` (no-op without a fit check).

        Raises:
            PipelineError: naming ``origin``, the drafter's field, its value and the base model's.
        """
        if self.fit_check is not None:
            resolve(self.fit_check)(base_config, drafter_config, origin)

    def template(self) -> dict[str, Any]:
        """The chat template of a base family.

        Raises:
            PipelineError: the family is a drafter (it has none).
        """
        if self.chat_template is None:
            raise PipelineError(f"model family {self.name!r} has no chat template; expected a base family")
        return resolve(self.chat_template)

    def architecture_schema(self) -> dict[str, Any]:
        """The JSON schema of this family's architecture file."""
        return resolve(self.architecture)


BASE_ARCHITECTURE = "pipeline.config.schema:BASE_ARCHITECTURE"

_ROWS = (
    Family(
        name="gemma3",
        role=BASE,
        formats=BASE_FORMATS,
        config_class="pipeline.models.gemma3.config:Gemma3Config",
        model_class="pipeline.models.gemma3.model:Gemma3ForCausalLM",
        from_hf="pipeline.models.gemma3.config:Gemma3Config.from_hf",
        architecture=BASE_ARCHITECTURE,
        loader_module="pipeline.models.gemma3.loader",
        gguf_architecture="gemma3",
        kv_layers="pipeline.models.gemma3.kv_layout:kv_layers",
        chat_template="pipeline.models.gemma3.chat:TEMPLATE",
    ),
    Family(
        name="gemma4",
        role=BASE,
        formats=BASE_FORMATS,
        config_class="pipeline.models.gemma4.config:Gemma4Config",
        model_class="pipeline.models.gemma4.model:Gemma4ForCausalLM",
        from_hf="pipeline.models.gemma4.config:Gemma4Config.from_hf",
        architecture=BASE_ARCHITECTURE,
        loader_module="pipeline.models.gemma4.loader",
        gguf_architecture="gemma4",
        kv_layers="pipeline.models.gemma4.kv_layout:kv_layers",
        chat_template="pipeline.models.gemma4.chat:TEMPLATE",
    ),
    Family(  # Google's Gemma 4 assistant: reads the base model's K/V, no cache of its own
        name="gemma4_assistant",
        role=DRAFTER,
        drafts_for=("gemma4",),
        # hf-safetensors: a Hugging Face directory (config.json + *.safetensors, Hugging Face
        # names); litertlm: a LiteRT-LM container with a tf_lite_mtp_drafter section; safetensors:
        # one file, in names the name map translates.
        formats={
            "hf-safetensors": SourceFormat(IMPORT_WEIGHTS, "refused"),
            "litertlm": SourceFormat(IMPORT_WEIGHTS, "optional",
                                     "pipeline.models.gemma4_assistant.loader:LITERTLM_NAME_MAP"),
            "safetensors": SourceFormat(IMPORT_WEIGHTS, "required"),
        },
        config_class="pipeline.models.gemma4_assistant.config:Gemma4AssistantConfig",
        model_class="pipeline.models.gemma4_assistant.model:Gemma4AssistantForCausalLM",
        from_hf="pipeline.models.gemma4_assistant.config:Gemma4AssistantConfig.from_hf",
        architecture="pipeline.models.gemma4_assistant.architecture:SCHEMA",
        loader_module="pipeline.models.gemma4_assistant.loader",
        gguf_architecture="gemma4_assistant",
        fit_check="pipeline.models.gemma4_assistant.fit:check_drafter_fits",
        runtime_drafter="pipeline.runtime.drafters.assistant:AssistantDrafter",
    ),
    Family(  # a DeepSeek-V3-style MTP head over a Gemma 3 base: one safetensors file
        name="gemma3_mtp",
        role=DRAFTER,
        drafts_for=("gemma3",),
        aliases=("mtp",),
        # safetensors: one file in DeepSeek-V3's or transformers' names (the loader knows both),
        # or in other names that the name map translates into those.
        formats={"safetensors": SourceFormat("pipeline.models.gemma3_mtp.loader:import_mtp", "optional")},
        config_class="pipeline.models.gemma3_mtp.config:MTPConfig",
        model_class="pipeline.models.gemma3_mtp.model:Gemma3MTP",
        from_hf="pipeline.models.gemma3_mtp.config:MTPConfig.from_architecture",
        architecture="pipeline.models.gemma3_mtp.architecture:SCHEMA",
        config_from_base=True,
        kv_layers="pipeline.models.gemma3_mtp.kv_layout:kv_layers",
        runtime_drafter="pipeline.runtime.drafters.mtp_head:MTPHeadDrafter",
        draft_vocab=True,
    ),
)

FAMILIES: dict[str, Family] = {row.name: row for row in _ROWS}
ALIASES: dict[str, str] = {alias: row.name for row in _ROWS for alias in row.aliases}


def canonical_name(name: str) -> str:
    """``name``, or the family an alias of it stands for (unknown names are returned as they are)."""
    return ALIASES.get(name, name)


def get_family(name: str) -> Family:
    """The family called ``name`` (or one of its aliases).  Raises PipelineError listing the known families."""
    try:
        return FAMILIES[canonical_name(name)]
    except KeyError:
        raise PipelineError(f"model family {name!r} is unknown; expected one of {sorted(FAMILIES)}") from None


def base_families() -> list[str]:
    """Names of the base families, in registry order."""
    return [row.name for row in _ROWS if row.role == BASE]


def drafter_families() -> list[str]:
    """Names of the drafter families, in registry order."""
    return [row.name for row in _ROWS if row.role == DRAFTER]


def family_of_runtime_drafter(reference: str) -> str:
    """The drafter family whose ``runtime_drafter`` is ``reference`` (``"module:attr"``): how a
    runtime drafter class learns the name its libraries record as ``model_type``.

    Raises:
        PipelineError: no row names ``reference``.
    """
    for row in _ROWS:
        if row.runtime_drafter == reference:
            return row.name
    raise PipelineError(f"no drafter family has runtime drafter {reference!r}")


def runtime_drafter(family: str) -> type:
    """The runtime drafter class of drafter family ``family`` (or an alias), imported on first use;
    constructed ``(engine, library path, weights directory)``.

    Raises:
        PipelineError: ``family`` is unknown or not a drafter.
    """
    row = get_family(family)
    if row.runtime_drafter is None:
        raise PipelineError(f"model family {family!r} is not a drafter; expected one of {drafter_families()}")
    return resolve(row.runtime_drafter)
