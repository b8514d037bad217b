"""Import weights from a source file into a family's parameter names, checking every shape.

Output: the family config and an ordered ``{our name: float32 array}`` covering exactly the
parameters of the (unquantized) model definition.  A missing parameter, a shape that disagrees
with the config, or (through a name map) a source tensor nothing maps to is reported by name and
shape.  Name maps (:mod:`pipeline.models.name_map`) translate a file's tensor names into
transformers' names, which the family's ``hf_name`` / ``hf_transform`` then take as for a
Hugging Face checkpoint.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import PipelineError
from ..sources.gguf_file import GGUFSource
from ..sources.hf_dir import HFSource
from ..sources.tensor_files import SafetensorsFile, TFLiteTensors
from .name_map import NameMap
from .registry import Family

log = logging.getLogger(__name__)

# Formats whose tensor names a name map translates (a registry row's ``formats`` says which
# formats a family reads and whether the name map is required there).
NAME_MAPPED_FORMATS = ("safetensors", "litertlm")
# The section of a ``.litertlm`` file a drafter is read from (its ``model_type``; LiteRT-LM
# ``schema/py/litertlm_builder.py`` TfLiteModelType.MTP_DRAFTER).
LITERTLM_ROLE = "tf_lite_mtp_drafter"


def expected_shapes(family: Family, config: Any) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the float32 model definition for ``config``."""
    model = family.model_cls(config, "float32")
    return {name: tuple(int(x) for x in param.shape) for name, param in model.named_parameters()}


def _as_stored(_name: str, array: np.ndarray) -> np.ndarray:
    """GGUF tensors are already in our convention."""
    return array


def config_from_gguf(family: Family, source: GGUFSource, overrides: dict[str, Any]) -> Any:
    """``family``'s config from the metadata of the GGUF file ``source`` (its header only; no
    tensor is read), with ``overrides`` applied.

    Raises:
        PipelineError: the file's ``general.architecture`` is not the family's, or a key the
            family's ``config_from_gguf`` needs is missing.
    """
    if source.architecture != family.gguf_architecture:
        raise PipelineError(
            f"{source.path}: general.architecture is {source.architecture!r}, expected {family.gguf_architecture!r}"
        )
    return family.config_from_gguf(source, **overrides)


def import_weights(family: Family, source_format: str, path: Path,
                   overrides: dict[str, Any], progress: bool = True, *,
                   architecture: tuple[dict[str, Any], Path] | None = None,
                   name_map: NameMap | None = None,
                   source_info: dict[str, dict[str, Any]] | None = None) -> tuple[Any, dict[str, np.ndarray]]:
    """Read ``path`` into ``(config, {name: float32 array})``.

    ``source_info`` (optional, filled in): ``"types"``: our name -> the type the source stored
    the tensor in (GGML type name such as ``Q4_K``, or a dtype name such as ``BF16``) and, for
    GGUF block types with per-group scales, ``"groups"``: our name -> ``(scale, minimum)``
    (:meth:`pipeline.sources.gguf_file.GGUFSource.group_scales`), from which the build's
    ``qsrcf32`` quantization keeps the source's codes exactly.

    Formats: ``gguf``; ``hf-safetensors`` (a Hugging Face directory, its ``config.json``);
    ``safetensors`` (one file) and ``litertlm`` (the TFLite model of the file's
    :data:`LITERTLM_ROLE` section), whose tensors ``name_map`` names and whose config is
    ``architecture``: ``(config.json content, the file it came from)``.  Through a name map every
    source tensor must be matched by an entry, and ``constant:`` entries fill parameters the
    source does not store.

    Raises:
        PipelineError: unreadable source, wrong architecture, a missing tensor (named with its
            shape and, through a name map, the source name it was expected under), a source tensor
            no name-map entry matches (named with its shape), two tensors for one parameter, or a
            tensor whose shape disagrees with the config (names the tensor, its shape and the
            expected one).
    """
    source: GGUFSource | HFSource | SafetensorsFile | TFLiteTensors
    name_of: Callable[[str], str | None]
    transform: Callable[[str, Any], Any]
    if source_format == "gguf":
        source = GGUFSource(path)
        config = config_from_gguf(family, source, overrides)
        name_of, transform = family.gguf_name_map(config.num_hidden_layers).get, _as_stored
    elif source_format == "hf-safetensors":
        source = HFSource(path)
        config = _config_from_hf(family, source.config, path / "config.json", overrides)
        name_of, transform = family.hf_name, family.hf_transform
    elif source_format in NAME_MAPPED_FORMATS and architecture is not None and name_map is not None:
        source = (SafetensorsFile(path) if source_format == "safetensors"
                  else TFLiteTensors.from_litertlm(path, LITERTLM_ROLE))
        config = _config_from_hf(family, architecture[0], architecture[1], overrides)
        name_of, transform = family.hf_name, family.hf_transform
    else:
        raise PipelineError(f"{path}: source format {source_format!r} with{'' if name_map else 'out'} a name map, "
                            f"expected gguf, hf-safetensors, or {' or '.join(NAME_MAPPED_FORMATS)} with a name map "
                            f"and an architecture")

    shapes = expected_shapes(family, config)
    constants = name_map.constants(list(shapes)) if name_map else {}
    skipped = []

    def found():  # (source name, shape, our name) of each source tensor that fills a parameter
        for src in source.tensor_names():
            shape = tuple(source.tensor_info(src)[0])
            targets = _mapped(src, shape, name_map, path) if name_map else [src]
            ours = [dst for dst in map(name_of, targets) if dst in shapes]
            if name_map and len(ours) < len(targets):
                wrong = next(t for t in targets if name_of(t) not in shapes)
                raise PipelineError(f"{name_map.origin}: tensor {src!r} maps to {wrong!r}, which is not a parameter "
                                    f"of this {family.name} model; expected a name such as {next(iter(shapes))!r}")
            if not ours:
                skipped.append(src)
            for dst in ours:
                yield src, shape, dst

    def missing_message(missing: list[str]) -> str:
        hint = name_map.expected_source(missing[0]) if name_map else None
        where = f", expected under the source name {hint!r} (name map {name_map.origin})" if name_map and hint else ""
        return f"{len(missing)} parameter(s) missing, first {missing[0]} (shape {list(shapes[missing[0]])})" + where

    mapping = match_tensors(path, found(), shapes, constants, missing_message)
    if skipped:
        groups = Counter(".".join(name.split(".")[:2]) for name in skipped)
        log.warning("%s: skipped %d source tensor(s) the model does not use: %s", path, len(skipped),
                    ", ".join(f"{group}.* ({count})" for group, count in sorted(groups.items())))
    weights = {}
    for dst in tqdm(shapes, desc="import", unit="tensor", disable=not progress):
        weights[dst] = (np.full(shapes[dst], constants[dst], np.float32) if dst in constants
                        else transform(dst, source.load(mapping[dst])))
    if source_info is not None:
        types, block_scales = source_info.setdefault("types", {}), source_info.setdefault("groups", {})
        for dst, src in mapping.items():
            types[dst] = source.tensor_info(src)[1]
            found_groups = source.group_scales(src) if isinstance(source, GGUFSource) else None
            if found_groups is not None:  # GGUF tensors are stored as read (_as_stored)
                block_scales[dst] = found_groups[1:]
    return config, weights


def match_tensors(path: Path, found: Iterable[tuple[str, tuple[int, ...], str]], shapes: dict[str, tuple[int, ...]],
                  constants: Collection[str] = (), missing_message: Callable[[list[str]], str] | None = None,
                  ) -> dict[str, str]:
    """Check source tensors against a model's parameters: one source per parameter, shapes equal,
    none missing.  The importers of every family use it (:func:`import_weights`,
    :func:`pipeline.models.gemma3_mtp.loader.load_mtp_weights`).

    Args:
        path: the source (named in errors).
        found: ``(source tensor name, its shape, our parameter name)`` per source tensor that
            fills a parameter (in ``shapes``).
        shapes: our parameter name -> expected shape, in parameter order.
        constants: parameters filled otherwise (a name map's ``constant:`` entries).
        missing_message: ``(missing parameter names, in order) -> message`` after ``"{path}: "``;
            default: their count and the first with its shape.

    Returns:
        ``{our name: source tensor name}``.

    Raises:
        PipelineError: two sources for one parameter (names both), a shape that disagrees with
            ``shapes`` (names the tensor, its shape and the expected one), or missing parameters.
    """
    mapping: dict[str, str] = {}
    for src, shape, dst in found:
        if dst in mapping or dst in constants:
            first = f"tensor {mapping[dst]!r}" if dst in mapping else "a 'constant:' entry"
            raise PipelineError(f"{path}: {first} and tensor {src!r} both map to {dst!r}; expected one source each")
        mapping[dst] = src
        if shape != shapes[dst]:
            raise PipelineError(f"{path}: tensor {src} has shape {list(shape)}, expected {list(shapes[dst])} "
                                f"for {dst} from the config")
    missing = [name for name in shapes if name not in mapping and name not in constants]
    if missing:
        message = missing_message(missing) if missing_message else (
            f"{len(missing)} parameter(s) missing, first {missing[0]} (shape {list(shapes[missing[0]])})")
        raise PipelineError(f"{path}: {message}")
    return mapping


def _config_from_hf(family: Family, content: dict[str, Any], origin: Path, overrides: dict[str, Any]) -> Any:
    """``family``'s config from ``config.json`` content; errors name ``origin``."""
    try:
        return family.config_from_hf(content, **overrides)
    except (KeyError, ValueError) as err:
        raise PipelineError(f"{origin}: {err}") from None


def _mapped(src: str, shape: tuple[int, ...], name_map: NameMap, path: Path) -> tuple[str, ...]:
    """The transformers names ``name_map`` gives source tensor ``src`` (empty: unused).

    Raises:
        PipelineError: no entry matches ``src`` (names it and its shape).
    """
    targets = name_map.lookup(src)
    if targets is None:
        raise PipelineError(f"{path}: tensor {src!r} (shape {list(shape)}) matches no entry of the name map "
                            f"{name_map.origin}; expected it mapped to a parameter or marked 'unused: <why>'")
    return targets
