"""Load and validate a pipeline YAML file against :data:`pipeline.config.schema.SCHEMA`, with the
files it names: architecture files (JSON, :func:`~pipeline.config.schema.architecture_schema`) and
the drafter's tensor-name map (YAML).  Families are looked up in :mod:`pipeline.models.registry`."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml

from ..errors import PipelineError
from ..extras import FORMAT_EXTRAS, extra_of_module, install_hint, require_extra
from ..models.registry import canonical_name, get_family
from .schema import MTP_FAMILIES, MTP_FORMATS, SCHEMA, SPECULATIVE, SPECULATIVE_DEFAULTS, architecture_schema

GENERATION_DEFAULTS = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "stop": [],
                       "prompt": "The capital of France is"}


@dataclasses.dataclass(frozen=True)
class ArchitectureFile:
    """An architecture file: its resolved path and its content (a ``config.json`` dict)."""

    path: Path
    content: dict[str, Any]


@dataclasses.dataclass
class PipelineConfig:
    """A validated pipeline configuration (see :mod:`pipeline.config.schema` for the keys).

    ``architecture`` / ``mtp_architecture``: the files ``model.architecture`` /
    ``mtp.architecture`` name (checked against the family's schema), None when not given.
    ``mtp_name_map``: ``mtp.name_map`` read as ``{source tensor name: our name}``, None when not given.
    """

    path: Path
    name: str
    family: str
    overrides: dict[str, Any]
    source_format: str
    source: dict[str, Any]
    quantization: str
    targets: list[str]
    output: Path
    generation: dict[str, Any]
    speculative: dict[str, Any]
    mtp: dict[str, Any] | None
    architecture: ArchitectureFile | None = None
    mtp_architecture: ArchitectureFile | None = None
    mtp_name_map: dict[str, str] | None = None

    def source_path(self) -> Path:
        """Resolve the base-weights location: a path (relative to the YAML file) or the file an
        installed package provides through its ``entry`` function (default ``assemble``).

        Raises:
            PipelineError: the file is missing, or the package is not installed.
        """
        return _location(self.path, "source", self.source)

    def mtp_path(self) -> Path:
        """Resolve the drafter weights' location (``mtp.path`` or ``mtp.package``) as
        :meth:`source_path` does.

        Raises:
            PipelineError: there is no ``mtp`` section, the file is missing, or the package is not
                installed.
        """
        if not self.mtp:
            raise PipelineError(f"{self.path}: mtp: not given, so there is no drafter")
        return _location(self.path, "mtp", self.mtp)

    def hf_config(self, section: str) -> tuple[dict[str, Any], Path]:
        """The ``config.json`` content of the base model (``section="model"``) or of the drafter
        (``"mtp"``), and the file it was read from.

        When the weights are present as a Hugging Face directory given by ``path`` (format
        ``hf-safetensors``), their own ``config.json`` is the answer, checked against the
        architecture file if one is given; otherwise the architecture file is.  Packages are not
        resolved here (that may assemble files), nor are GGUF, LiteRT-LM or single-file sources
        read: for those the architecture file is needed.

        Raises:
            PipelineError: neither is available (names the key to give); or both are and a field of
                the architecture file has another value in ``config.json`` (names both files, the
                key and both values).
        """
        weights = self.source if section == "model" else (self.mtp or {})
        architecture = self.architecture if section == "model" else self.mtp_architecture
        own = self.path.parent / weights["path"] / "config.json" if "path" in weights else None
        if own is not None and weights.get("format") == "hf-safetensors" and own.is_file():
            content = _read_json(own.resolve())
            if architecture is not None:
                _check_same(architecture.content, content, architecture.path, own.resolve())
            return content, own.resolve()
        if architecture is None:
            raise PipelineError(f"{self.path}: {section}.architecture: not given, and the weights' config.json is "
                                f"not present; expected a JSON file with the model's config.json content")
        return architecture.content, architecture.path


def _location(config_path: Path, key: str, section: dict[str, Any]) -> Path:
    """The file or directory that ``section`` (``source`` or ``mtp``) names by ``path`` or ``package``."""
    if "path" in section:
        path = (config_path.parent / section["path"]).resolve()
        if not path.exists():
            raise PipelineError(f"{config_path}: {key}.path: {path} does not exist")
        return path
    package = section["package"]
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        extra = extra_of_module(module_name)
        hint = install_hint(extra) if extra else f"pip install {package}"
        raise PipelineError(f"{config_path}: {key}.package: {package!r} is not installed ({hint})") from None
    entry = section.get("entry", "assemble")
    if not hasattr(module, entry):
        raise PipelineError(f"{config_path}: {key}.entry: {package} has no function {entry!r}")
    return Path(getattr(module, entry)())


def _same(a: Any, b: Any) -> bool:
    """JSON equality that tells booleans from numbers (``true != 1``, ``1e6 == 1000000``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _check_same(architecture: dict[str, Any], actual: dict[str, Any], arch_path: Path, actual_path: Path,
                prefix: str = "") -> None:
    """Every field of ``architecture`` that ``actual`` has too must have the same value there
    (fields absent from ``actual`` are not compared: transformers writes every field it knows).

    Raises:
        PipelineError: the first field that differs, with both values.
    """
    for key, value in architecture.items():
        if key.startswith("_") or key not in actual:
            continue
        there = actual[key]
        if isinstance(value, dict) and isinstance(there, dict):
            _check_same(value, there, arch_path, actual_path, f"{prefix}{key}.")
        elif not _same(value, there):
            raise PipelineError(f"{arch_path}: {prefix}{key}: {value!r}, but {actual_path} says {there!r}; "
                                f"expected the architecture file to agree with the weights' config.json")


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        schema = cast(Mapping[str, Any], error.schema)  # set on every error a validator yields
        allowed = ", ".join(sorted(schema.get("properties", {})))
        return f"{key}: {error.message}; allowed keys: {allowed}"
    if error.validator == "enum":
        return f"{key}: {error.instance!r} is not one of {error.validator_value}"
    if error.validator == "oneOf":
        return f"{key}: give exactly one of 'path' or 'package'"
    return f"{key}: {error.message}"


def speculative_settings(section: dict[str, Any] | None, where: str, schema: dict = SPECULATIVE) -> dict[str, Any]:
    """A ``speculative`` section (YAML or runtime config) checked against ``schema`` and completed
    with :data:`~pipeline.config.schema.SPECULATIVE_DEFAULTS`.

    Raises:
        PipelineError: ``<where>: speculative.<key>: <value> ...`` for a key, type or range the
            schema refuses, or an adaptive ``draft_length`` outside its bounds.
    """
    error = _first_error({"properties": {"speculative": schema}},
                         {"speculative": section if section is not None else {}})
    if error is not None:
        raise PipelineError(f"{where}: {_describe(error)}")
    settings = {**SPECULATIVE_DEFAULTS, **(section or {})}
    low, high, initial = settings["min_draft_length"], settings["max_draft_length"], settings["draft_length"]
    if low > high:
        raise PipelineError(f"{where}: speculative.min_draft_length: {low}, expected <= max_draft_length {high}")
    if settings["adaptive"] and not low <= initial <= high:
        raise PipelineError(f"{where}: speculative.draft_length: {initial}, expected within "
                            f"[min_draft_length {low}, max_draft_length {high}] when adaptive")
    return settings


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: cannot read {what}: {err}") from None


def _read_yaml(path: Path, what: str) -> Any:
    """Parse the YAML file ``path`` (``what`` names it in messages)."""
    try:
        return yaml.safe_load(_read_text(path, what))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise PipelineError(f"{path}: malformed YAML{where}: {problem}") from None


def _read_json(path: Path) -> dict[str, Any]:
    """Parse the JSON object in ``path``."""
    try:
        content = json.loads(_read_text(path, "JSON file"))
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(content, dict):
        raise PipelineError(f"{path}: expected a JSON object at the top level, got {type(content).__name__}")
    return content


def _first_error(schema: dict, instance: Any) -> jsonschema.ValidationError | None:
    errors = jsonschema.Draft202012Validator(schema).iter_errors(instance)
    return min(errors, key=lambda e: [str(p) for p in e.absolute_path], default=None)


def _architecture(config_path: Path, key: str, name: str | None, family: str) -> ArchitectureFile | None:
    """Read and check the architecture file ``name`` (relative to the config) of ``family``.

    Raises:
        PipelineError: the file is missing or not a JSON object; or a field breaks the family's
            schema (names the file, the field, its value and what is allowed).
    """
    if name is None:
        return None
    path = (config_path.parent / name).resolve()
    if not path.is_file():
        raise PipelineError(f"{config_path}: {key}: {path} does not exist")
    content = _read_json(path)
    error = _first_error(architecture_schema(family), content)
    if error is not None:
        raise PipelineError(f"{path}: {_describe(error)}")
    return ArchitectureFile(path, content)


def _name_map(config_path: Path, name: str | None) -> dict[str, str] | None:
    """Read ``mtp.name_map``: a YAML mapping of strings (source tensor names or patterns to our
    names; the entries' grammar is :mod:`pipeline.models.name_map`'s, checked where it is used).

    Raises:
        PipelineError: the file is missing or malformed, or an entry is not ``string: string``.
    """
    if name is None:
        return None
    path = (config_path.parent / name).resolve()
    if not path.is_file():
        raise PipelineError(f"{config_path}: mtp.name_map: {path} does not exist")
    mapping = _read_yaml(path, "name map")
    if not isinstance(mapping, dict) or not mapping:
        raise PipelineError(f"{path}: expected a mapping of source tensor names to ours, got {mapping!r}")
    for source, ours in mapping.items():
        if not isinstance(source, str) or not isinstance(ours, str) or not ours:
            raise PipelineError(f"{path}: {source!r}: {ours!r}, expected 'source tensor name: our tensor name'")
    return mapping


def _check_mtp(path: Path, family: str, mtp: dict[str, Any]) -> None:
    """The drafter section's family must draft for ``family``; its format and name map must suit it."""
    bases = MTP_FAMILIES[mtp["family"]]
    if family not in bases:
        base = " or ".join(bases)
        raise PipelineError(f"{path}: mtp.family: {mtp['family']!r} drafts for a {base} base model, "
                            f"but model.family is {family!r}")
    formats = MTP_FORMATS[mtp["family"]]
    if mtp["format"] not in formats:
        raise PipelineError(f"{path}: mtp.format: {mtp['format']!r}, expected one of {sorted(formats)} "
                            f"for family {mtp['family']!r}")
    policy = formats[mtp["format"]]
    if policy == "required" and "name_map" not in mtp:
        raise PipelineError(f"{path}: mtp.name_map: missing, expected a name map for format {mtp['format']!r} "
                            f"(its tensor names are not the Hugging Face ones)")
    if policy == "refused" and "name_map" in mtp:
        raise PipelineError(f"{path}: mtp.name_map: {mtp['name_map']!r}, expected none for format "
                            f"{mtp['format']!r} (Hugging Face names are read as they are)")
    if "draft_vocab" in mtp:
        if not get_family(mtp["family"]).draft_vocab:
            raise PipelineError(f"{path}: mtp.draft_vocab: given, but family {mtp['family']!r} drafts with a head "
                                f"of its own (only drafters sharing the base's head take a reduced vocabulary)")
        counts = (path.parent / mtp["draft_vocab"]["counts"]).resolve()
        if not counts.is_file():
            raise PipelineError(f"{path}: mtp.draft_vocab.counts: {counts} does not exist")


def load_config(path: str | Path) -> PipelineConfig:
    """Read ``path`` (YAML), validate it and the files it names, and fill defaults.

    Raises:
        PipelineError: the file is missing, is not valid YAML, or breaks the schema; an
            architecture file or the name map is missing or malformed; the drafter does not suit
            the base model.  The message names the file, the key path, the bad value and what is
            allowed.
    """
    path = Path(path)
    raw = _read_yaml(path, "config file")
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    speculative = raw.get("speculative")
    if isinstance(speculative, dict) and speculative.get("mode") is False:
        speculative["mode"] = "off"  # YAML 1.1 (PyYAML) reads an unquoted `mode: off` as false
    mtp = raw.get("mtp")
    if isinstance(mtp, dict) and isinstance(mtp.get("family"), str):
        mtp["family"] = canonical_name(mtp["family"])  # an older name of the family (registry alias)
    error = _first_error(SCHEMA, raw)
    if error is not None:
        raise PipelineError(f"{path}: {_describe(error)}")
    if mtp is not None:
        _check_mtp(path, raw["model"]["family"], mtp)
    for key, section in (("source", raw["source"]), ("mtp", mtp or {})):
        if section.get("format") in FORMAT_EXTRAS:
            require_extra(FORMAT_EXTRAS[section["format"]], f"{path}: {key}.format: {section['format']!r}")
    generation = {**GENERATION_DEFAULTS, **raw.get("generation", {})}
    # output: like every path in the file, relative to it; left out, dist/<name> in the working
    # directory (as --output, a command-line path, is)
    output = (Path(os.path.normpath(path.parent / raw["output"])) if "output" in raw
              else Path("dist") / raw["name"])
    return PipelineConfig(
        path=path,
        name=raw["name"],
        family=raw["model"]["family"],
        overrides=dict(raw["model"].get("overrides", {})),
        source_format=raw["source"]["format"],
        source=dict(raw["source"]),
        quantization=raw.get("quantization", "q4f16_1"),
        targets=list(raw.get("targets", ["cpu"])),
        output=output,
        generation=generation,
        speculative=speculative_settings(raw.get("speculative"), str(path)),
        mtp=mtp,
        architecture=_architecture(path, "model.architecture", raw["model"].get("architecture"),
                                   raw["model"]["family"]),
        mtp_architecture=_architecture(path, "mtp.architecture", (mtp or {}).get("architecture"),
                                       (mtp or {}).get("family", "")),
        mtp_name_map=_name_map(path, (mtp or {}).get("name_map")),
    )
