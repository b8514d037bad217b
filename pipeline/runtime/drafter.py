"""The drafter a generation runs with: the package's speculative settings (the ``speculative``
section of ``mlc-mtp-config.json``), overridden from the command line, and the seam that turns
them into a :class:`~pipeline.runtime.speculative.Drafter`.

``mode`` names the drafter kind; :data:`DRAFTER_LOADERS` maps each kind to the function that
loads it from the package's drafter files.  ``off`` means plain decoding and needs no loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..config.loader import speculative_settings
from ..config.schema import RUNTIME_SPECULATIVE
from ..errors import PipelineError
from ..models.registry import canonical_name
from ..package.chat_config import RUNTIME_CONFIG
from .assistant_drafter import AssistantDrafter
from .draft_length import DraftLength
from .engine import Engine
from .mtp_drafter import MTPDrafter
from .speculative import Drafter


def package_speculative(package: Path, runtime_config: dict[str, Any],
                        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The package's speculative settings, each key of ``overrides`` that is not None replacing
    the package's (``mode``, ``draft_length``, ``adaptive``, ...), defaults filled in.

    Raises:
        PipelineError: a setting the schema refuses, or a draft-length override while the mode is
            off; the message names the runtime config file, the overrides given, the key, the
            value and what was expected.
    """
    chosen = {key: value for key, value in (overrides or {}).items() if value is not None}
    where = str(Path(package) / RUNTIME_CONFIG)
    if chosen:
        where += " with " + ", ".join(f"{key}={value}" for key, value in chosen.items())
    settings = speculative_settings({**runtime_config.get("speculative", {}), **chosen}, where, RUNTIME_SPECULATIVE)
    tuning = sorted(set(chosen) - {"mode"})
    if settings["mode"] == "off" and tuning:
        raise PipelineError(f"{where}: speculative.mode: 'off', expected 'mtp' for {tuning[0]} to apply")
    return settings


def draft_length_policy(settings: dict[str, Any]) -> DraftLength:
    """The :class:`DraftLength` that ``settings`` (from :func:`package_speculative`) describe."""
    return DraftLength(settings["draft_length"], settings["adaptive"], settings["min_draft_length"],
                       settings["max_draft_length"])


def drafter_files(package: Path, settings: dict[str, Any], target: str = "cpu") -> tuple[Path, Path] | None:
    """The drafter library for ``target`` and the drafter weights directory; None when ``mode`` is off.

    Raises:
        PipelineError: the mode asks for a drafter that the package lacks (the key that is null
            or missing, or the file that is absent).
    """
    if settings["mode"] == "off":
        return None
    package = Path(package)
    libraries = settings.get("drafter_lib") or {}
    if target not in libraries:
        raise PipelineError(f"{package}: speculative mode {settings['mode']!r} needs a drafter, but {RUNTIME_CONFIG} "
                            f"has no speculative.drafter_lib for target {target!r} (the package holds no drafter)")
    if not settings.get("drafter_weights"):
        raise PipelineError(f"{package}: speculative mode {settings['mode']!r} needs drafter weights, but "
                            f"{RUNTIME_CONFIG} has speculative.drafter_weights null (the package holds no drafter)")
    library, weights = package / libraries[target], package / settings["drafter_weights"]
    for path, what in ((library, "drafter library"), (weights, "drafter weights")):
        if not path.exists():
            raise PipelineError(f"{path}: {what} named in {package / RUNTIME_CONFIG} not found")
    return library, weights


# Drafter family (speculative.drafter_family) -> Drafter class, constructed (engine, library, weights).
DRAFTER_FAMILIES: dict[str, Callable[[Engine, Path, Path], Drafter]] = {
    "gemma4_assistant": AssistantDrafter, "gemma3_mtp": MTPDrafter}


def load_mtp_drafter(engine: Engine, library: Path, weights: Path) -> Drafter:
    """Load the package's MTP drafter over ``engine`` by its ``drafter_family``
    (:data:`DRAFTER_FAMILIES`; ``gemma4_assistant`` when the package names none).

    Raises:
        PipelineError: a drafter family this runtime cannot drive, or mismatched files.
    """
    family = canonical_name(engine.runtime_config.get("speculative", {}).get("drafter_family") or "gemma4_assistant")
    if family not in DRAFTER_FAMILIES:
        raise PipelineError(f"{engine.package / RUNTIME_CONFIG}: speculative.drafter_family: {family!r}, "
                            f"expected one of {sorted(DRAFTER_FAMILIES)}")
    return DRAFTER_FAMILIES[family](engine, library, weights)


# Drafter kind (speculative.mode) -> loader(engine, library, weights) -> Drafter.
DRAFTER_LOADERS: dict[str, Callable[[Engine, Path, Path], Drafter]] = {"mtp": load_mtp_drafter}


def load_drafter(engine: Engine, settings: dict[str, Any]) -> Drafter | None:
    """The drafter ``settings`` (from :func:`package_speculative`) ask for, over ``engine``'s
    package and target; None when speculation is off.

    Raises:
        PipelineError: the package lacks the drafter, or its loader fails.
    """
    files = drafter_files(engine.package, settings, engine.target)
    if files is None:
        return None
    return DRAFTER_LOADERS[settings["mode"]](engine, *files)
