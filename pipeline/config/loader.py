"""Load and validate a pipeline YAML file against :data:`pipeline.config.schema.SCHEMA`."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import PipelineError
from .schema import SCHEMA, SPECULATIVE, SPECULATIVE_DEFAULTS

GENERATION_DEFAULTS = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "stop": [],
                       "prompt": "The capital of France is"}


@dataclasses.dataclass
class PipelineConfig:
    """A validated pipeline configuration (see :mod:`pipeline.config.schema` for the keys)."""

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

    def source_path(self) -> Path:
        """Resolve the base-weights location: a path (relative to the YAML file) or the file an
        installed package provides through its ``entry`` function (default ``assemble``).

        Raises:
            PipelineError: the file is missing, or the package is not installed.
        """
        if "path" in self.source:
            path = (self.path.parent / self.source["path"]).resolve()
            if not path.exists():
                raise PipelineError(f"{self.path}: source.path: {path} does not exist")
            return path
        package = self.source["package"]
        module_name = package.replace("-", "_")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise PipelineError(
                f"{self.path}: source.package: {package!r} is not installed (pip install {package})"
            ) from None
        entry = self.source.get("entry", "assemble")
        if not hasattr(module, entry):
            raise PipelineError(f"{self.path}: source.entry: {package} has no function {entry!r}")
        return Path(getattr(module, entry)())


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
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
    errors = sorted(jsonschema.Draft202012Validator({"properties": {"speculative": schema}}).iter_errors(
        {"speculative": section if section is not None else {}}), key=lambda e: list(e.absolute_path))
    if errors:
        raise PipelineError(f"{where}: {_describe(errors[0])}")
    settings = {**SPECULATIVE_DEFAULTS, **(section or {})}
    low, high, initial = settings["min_draft_length"], settings["max_draft_length"], settings["draft_length"]
    if low > high:
        raise PipelineError(f"{where}: speculative.min_draft_length: {low}, expected <= max_draft_length {high}")
    if settings["adaptive"] and not low <= initial <= high:
        raise PipelineError(f"{where}: speculative.draft_length: {initial}, expected within "
                            f"[min_draft_length {low}, max_draft_length {high}] when adaptive")
    return settings


def load_config(path: str | Path) -> PipelineConfig:
    """Read ``path`` (YAML), validate it and fill defaults.

    Raises:
        PipelineError: the file is missing, is not valid YAML, or breaks the schema; the
            message names the key path, the bad value and what is allowed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: cannot read config: {err}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise PipelineError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    speculative = raw.get("speculative")
    if isinstance(speculative, dict) and speculative.get("mode") is False:
        speculative["mode"] = "off"  # YAML 1.1 (PyYAML) reads an unquoted `mode: off` as false
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        raise PipelineError(f"{path}: {_describe(errors[0])}")
    generation = {**GENERATION_DEFAULTS, **raw.get("generation", {})}
    output = Path(raw.get("output", f"dist/{raw['name']}"))  # relative to the working directory
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
        mtp=raw.get("mtp"),
    )
