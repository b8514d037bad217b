"""The plan of ``mlc-mtp build CONFIG --dry-run``: what a build would make, from the architecture alone.

Validates the config and its targets, instantiates the model definitions (the base model's and,
with an ``mtp`` section, the drafter's) from their ``config.json`` content
(:meth:`pipeline.config.PipelineConfig.hf_config`: the weights' own file when present, else the
architecture file; for a GGUF source without an architecture file, the GGUF's header metadata, as
the build reads it), applies the quantization scheme, and reports every parameter's shape and
stored form, the totals, and the KV cache for the configured context window (:mod:`.report`
formats it).  No tensor is read from the weights; nothing is compiled or written.

KV cache figures (bytes, for ``context_window_size x max_batch_size`` tokens rounded up to whole
pages of :data:`~pipeline.kernels.PAGE_SIZE`, in the model's activation dtype; TVM's own
bookkeeping buffers excluded):

- **allocated**: what our paged cache holds, the model's ``kv_cache_shape()``: every layer gets a
  slot padded to the largest layer's KV-head count and head dimension (see
  :mod:`pipeline.models.gemma4.model`);
- **unpadded**: the same slots at each layer's own KV-head count and head dimension;
- **minimum**: unpadded, with KV-shared layers storing nothing (they read their producer's K/V)
  and sliding-window layers keeping only ``sliding_window`` tokens.

Each layer's KV facts come from its family's registry row (``kv_layers``,
:mod:`pipeline.models.registry`): a ``gemma4_assistant`` drafter has no cache of its own (it reads
the base model's K/V); a ``gemma3_mtp`` drafter has a one-layer cache.  A drafter is checked against
its base model by its row's ``fit_check``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..compile.targets import load_target
from ..config import PipelineConfig
from ..errors import PipelineError
from ..kernels import PAGE_SIZE
from ..models.importer import config_from_gguf
from ..models.kv_layout import KVLayer
from ..models.registry import get_family
from ..presets import require_kernel_target
from ..quantization import QuantScheme, get_scheme, quantize_model, scheme_for_targets
from ..sources.gguf_file import GGUFSource


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One parameter of the model definition: ``name`` and ``shape`` as the unquantized model
    has them, ``stored`` the tensors it is kept as after quantization, ``(name, shape, dtype)``."""

    name: str
    shape: tuple[int, ...]
    stored: tuple[tuple[str, tuple[int, ...], str], ...]

    @property
    def count(self) -> int:
        """Number of values (elements of the unquantized parameter)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensors."""
        return sum(math.prod(shape) * np.dtype(dtype).itemsize for _, shape, dtype in self.stored)


@dataclasses.dataclass(frozen=True)
class KVCache:
    """A paged KV cache: per-layer facts, the padded slot shape, tokens and dtype (module docstring)."""

    layers: tuple[KVLayer, ...]
    slot_heads: int
    slot_head_dim: int
    tokens: int
    dtype: str

    def _bytes(self, heads: int, head_dim: int, tokens: int) -> int:
        return 2 * heads * head_dim * tokens * np.dtype(self.dtype).itemsize  # K and V

    def allocated(self, layers=None) -> int:
        """Bytes our cache allocates for ``layers`` (default all)."""
        return sum(self._bytes(self.slot_heads, self.slot_head_dim, self.tokens) for _ in layers or self.layers)

    def unpadded(self, layers=None) -> int:
        """Bytes at each layer's own KV heads and head dimension."""
        return sum(self._bytes(layer.kv_heads, layer.head_dim, self.tokens) for layer in layers or self.layers)

    def minimum(self, layers=None) -> int:
        """Unpadded bytes without KV-shared copies and beyond-window tokens."""
        return sum(self._bytes(layer.kv_heads, layer.head_dim, min(layer.window or self.tokens, self.tokens))
                   for layer in layers or self.layers if layer.stores)


@dataclasses.dataclass
class ModelPlan:
    """The base model or the drafter as a build would make it."""

    role: str
    family: str
    origin: Path
    config: Any
    parameters: list[Parameter]
    kv_cache: KVCache | None

    @property
    def count(self) -> int:
        """Parameters (values of the unquantized model)."""
        return sum(p.count for p in self.parameters)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored weights."""
        return sum(p.nbytes for p in self.parameters)


@dataclasses.dataclass
class DryRun:
    """Everything :func:`dry_run` found, for :func:`format_dry_run`."""

    config: PipelineConfig
    scheme: QuantScheme
    targets: list[str]
    output: Path
    base: ModelPlan
    drafter: ModelPlan | None


# --- model definitions ------------------------------------------------------------------------
def stored_parameters(model, scheme: QuantScheme, source_types: dict[str, str] | None = None) -> list[Parameter]:
    """The parameters of ``model`` (an unquantized model definition in ``scheme``'s dtype) and
    the tensors each is stored as once :func:`pipeline.quantization.quantize_model` rewrote it
    (``source_types``: weight name -> the type its source stores, as the build's import finds)."""
    logical = [(name, tuple(int(x) for x in p.shape)) for name, p in model.named_parameters()]
    quantized_model, quantized = quantize_model(model, scheme, source_types)
    stored = [(name, tuple(int(x) for x in p.shape), str(p.dtype)) for name, p in quantized_model.named_parameters()]
    by_name = {tensor[0]: tensor for tensor in stored}
    by_owner: dict[str, list[tuple[str, tuple[int, ...], str]]] = {}
    for tensor in stored:  # a quantized ``<owner>.weight`` becomes tensors ``<owner>.<part>``
        by_owner.setdefault(tensor[0].rsplit(".", 1)[0], []).append(tensor)
    return [Parameter(name, shape, tuple(by_owner[name.rsplit(".", 1)[0]]) if name in quantized else (by_name[name],))
            for name, shape in logical]


def _from_gguf(family: str, path: Path, overrides: dict[str, Any]):
    """``family``'s config from the metadata of the GGUF file ``path`` and the type each
    parameter is stored in there (``{our name: GGML type name}``; no tensor is read); model
    errors become one-line PipelineErrors."""
    source = GGUFSource(path)
    try:
        config = config_from_gguf(get_family(family), source, overrides)
    except (ValueError, TypeError) as err:
        raise PipelineError(f"{path}: {err}") from None
    names = get_family(family).gguf_name_map(config.num_hidden_layers)
    return config, {names[src]: source.tensor_info(src)[1] for src in source.tensor_names() if src in names}


def _from_hf(family: str, content: dict[str, Any], origin: Path, overrides: dict[str, Any]):
    """``family``'s config from a ``config.json`` dict; model errors become one-line PipelineErrors."""
    try:
        return get_family(family).config_from_hf(content, **overrides)
    except KeyError as err:
        raise PipelineError(f"{origin}: {err.args[0]}: missing, expected it in the architecture") from None
    except (ValueError, TypeError) as err:
        raise PipelineError(f"{origin}: {err}") from None


def kv_cache(family: str, model) -> KVCache | None:
    """The KV cache that ``model`` (a ``family`` model definition) allocates: its slots as its
    ``kv_cache_shape()`` says, each layer's own sizes from its family's ``kv_layers``; None for a
    model without a cache of its own (a ``gemma4_assistant`` drafter reads the base model's)."""
    if not hasattr(model, "kv_cache_shape"):
        return None
    _, _, heads, head_dim, _ = model.kv_cache_shape()
    config = model.config
    tokens = -(-config.context_window_size * config.max_batch_size // PAGE_SIZE) * PAGE_SIZE
    return KVCache(tuple(get_family(family).kv_layers_of(config)), heads, head_dim, tokens, model.dtype)


# --- the dry run --------------------------------------------------------------------------------
def dry_run(config: PipelineConfig, quantization: str | None = None, targets: list[str] | None = None,
            output: Path | None = None) -> DryRun:
    """Check ``config`` and plan its build without weights; nothing is written or compiled.

    Args:
        config: a loaded pipeline config.
        quantization, targets, output: the build's command-line overrides (None: the config's).

    Returns:
        The base model's (and drafter's) parameters, stored forms and KV cache.

    Raises:
        PipelineError: an unknown scheme or target; no architecture (neither an architecture file
            nor the weights' config.json); an architecture the model definition refuses; an
            architecture file that disagrees with the weights' config.json; a drafter that does
            not fit the base model.  Each names the file or key, the value and the expectation.
    """
    target_names = list(targets or config.targets)
    presets = [load_target(name) for name in target_names]
    for preset in presets:
        preset.check_buildable()
        require_kernel_target(preset.target["kind"], f"{preset.path}: target {preset.name}")
    scheme = scheme_for_targets(get_scheme(quantization or config.quantization), presets, explicit=bool(quantization),
                                where=f"{config.path}: quantization", say=lambda _: None)  # the plan names it
    if config.source_format == "gguf" and config.architecture is None:  # the GGUF's header is the architecture
        origin = config.source_path()
        base_config, source_types = _from_gguf(config.family, origin, config.overrides)
    else:
        content, origin = config.hf_config("model")
        base_config, source_types = _from_hf(config.family, content, origin, config.overrides), {}
    base = _plan("base model", config.family, origin, base_config, get_family(config.family).model_cls, scheme,
                 source_types)
    drafter = None
    if config.mtp:
        family = get_family(config.mtp["family"])
        content, origin = config.hf_config("mtp")
        if family.config_from_base:  # the drafter's config is the base model's plus its own fields
            overrides = {"base": base_config}
            if "draft_vocab" in config.mtp:  # the base's rows of that many tokens (the build reads which)
                overrides["draft_vocab_size"] = config.mtp["draft_vocab"]["size"]
        else:
            overrides = {k: v for k, v in config.overrides.items() if k in ("context_window_size", "max_batch_size")}
        drafter_config = _from_hf(family.name, content, origin, overrides)
        family.check_fits(base_config, drafter_config, origin)
        drafter = _plan("drafter", family.name, origin, drafter_config, family.model_cls, scheme)
    return DryRun(config, scheme, target_names, Path(output or config.output), base, drafter)


def _plan(role: str, family: str, origin: Path, model_config, model_cls, scheme: QuantScheme,
          source_types: dict[str, str] | None = None) -> ModelPlan:
    try:
        model = model_cls(model_config, scheme.model_dtype)
    except (ValueError, TypeError) as err:
        raise PipelineError(f"{origin}: {err}") from None
    cache = kv_cache(family, model)
    return ModelPlan(role, family, origin, model_config, stored_parameters(model, scheme, source_types), cache)
