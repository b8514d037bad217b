"""Drafters for speculative decoding, behind one seam: the package's speculative settings (the
``speculative`` section of ``mlc-mtp-config.json``), overridden from the command line, and
:func:`load_drafter`, which turns them into a :class:`~pipeline.runtime.drafters.base.Drafter`.

``mode`` ``off`` means plain decoding; ``mtp`` loads the package's drafter, whose class the
package's ``speculative.drafter_family`` names: the model-family registry's row for it gives the
class (``runtime_drafter``, imported on first use; :data:`DRAFTER_FAMILIES`).  One module per drafter
(:mod:`.assistant`, :mod:`.mtp_head`), each with the capture hook that has the engine keep what it
reads of the base model (:mod:`.base`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...config.loader import speculative_settings
from ...config.schema import RUNTIME_SPECULATIVE
from ...errors import PipelineError
from ...models.registry import canonical_name, drafter_families, runtime_drafter
from ...package.chat_config import RUNTIME_CONFIG
from ..draft_length import DraftLength
from ..engine import Engine
from .base import Drafter

# Drafter family (speculative.drafter_family, the name the build records; an alias the registry
# knows, such as a family's name before a rename, is accepted) -> the Drafter class constructed
# ``(engine, library, weights)``; None: the registry row's ``runtime_drafter``, imported on first use.
DRAFTER_FAMILIES: dict[str, Callable[[Engine, Path, Path], Drafter] | None] = dict.fromkeys(drafter_families())


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


def load_drafter(engine: Engine, settings: dict[str, Any]) -> Drafter | None:
    """The drafter ``settings`` (from :func:`package_speculative`) ask for, over ``engine``'s
    package and target: the class :data:`DRAFTER_FAMILIES` gives for ``drafter_family``,
    constructed on the package's drafter library and weights; None when speculation is off.

    Raises:
        PipelineError: the package lacks the drafter files, names no drafter family or one this
            runtime cannot drive (the file, the key, the value and the known families), or the
            drafter's constructor refuses its files.
    """
    files = drafter_files(engine.package, settings, engine.target)
    if files is None:
        return None
    family = settings.get("drafter_family")
    name = canonical_name(family) if isinstance(family, str) else family
    if name not in DRAFTER_FAMILIES:
        raise PipelineError(f"{engine.package / RUNTIME_CONFIG}: speculative.drafter_family: "
                            f"{'null' if family is None else repr(family)}, expected one of {sorted(DRAFTER_FAMILIES)}")
    return (DRAFTER_FAMILIES[name] or runtime_drafter(name))(engine, *files)
