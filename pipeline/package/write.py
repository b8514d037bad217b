"""Write a package directory from a build's stage outputs, all at once (:func:`atomic_directory`).

Layout: MLC's (the base model's tensor cache, ``mlc-chat-config.json``, tokenizer files, ``lib/``),
plus ``mlc-mtp-config.json`` (:data:`~pipeline.package.chat_config.RUNTIME_CONFIG`, our runtime's
config: ``model_lib``, the library loaded per target; ``libraries``, every file in ``lib/`` with its
target, :func:`~pipeline.package.libraries.package_libraries`; ``source``; ``generation``;
``speculative``) and, with a drafter, its tensor cache in ``drafter/`` and its libraries in ``lib/``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import atomic_directory
from .chat_config import RUNTIME_CONFIG, chat_config
from .libraries import package_libraries, read_outputs

DRAFTER_DIR = "drafter"


@dataclasses.dataclass
class PackagedModel:
    """What the build made for one model: its converted weights (a tensor cache directory) and,
    per target preset name, its compile stage's directory (files + ``outputs.json``)."""

    weights: Path
    libraries: dict[str, Path]


def loaded_libraries(libraries: dict[str, Path]) -> dict[str, str]:
    """Preset name -> the package path of the library MLC loads for it (a compile stage's first file)."""
    return {name: f"lib/{read_outputs(stage)[0]['file']}" for name, stage in libraries.items()}


def write_package(output: Path, *, model_config: Any, family: str, quantization: str, base: PackagedModel,
                  tokenizer: Path, tvm_targets: dict[str, dict[str, Any]], source: dict[str, str],
                  generation: dict[str, Any], speculative: dict[str, Any],
                  drafter: PackagedModel | None = None, drafter_family: str | None = None,
                  ) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Write the package to ``output`` (replacing it as a whole, or leaving it as it was on error).

    Args:
        output: the package directory.
        model_config: the base model's config (``to_dict()``), ``family`` its family name and
            ``quantization`` the scheme's name (for ``mlc-chat-config.json``).
        base, drafter: the base model's and the drafter's weights and compiled libraries.
        tokenizer: a directory of tokenizer files, copied into the package.
        tvm_targets: preset name -> its resolved TVM target dict (listed per library).
        source: ``{"format", "path"}`` of the base weights, recorded.
        generation: generation defaults (``temperature``, ``top_p``, ``max_tokens``, ``stop``, and
            ``prompt``: ``generate``'s when none is given).
        speculative: the config's speculative settings; the drafter's files are added to them.
        drafter_family: the drafter's family name (recorded as ``speculative.drafter_family``).

    Returns:
        ``(model_lib, libraries)``: preset name -> the base library MLC loads, and the
        ``libraries`` entries of ``mlc-mtp-config.json``.
    """
    with atomic_directory(output) as tmp:
        for file in base.weights.iterdir():
            shutil.copy(file, tmp / file.name)
        tokenizer_files = []
        for file in sorted(tokenizer.iterdir()):
            shutil.copy(file, tmp / file.name)
            tokenizer_files.append(file.name)
        (tmp / "lib").mkdir()
        entries = [entry for role, model in (("model", base), ("drafter", drafter)) if model is not None
                   for name, stage in model.libraries.items()
                   for entry in package_libraries(stage, tmp / "lib", name, tvm_targets[name], role)]
        speculative = {**speculative, "drafter_lib": None, "drafter_weights": None, "drafter_family": None}
        if drafter is not None:
            shutil.copytree(drafter.weights, tmp / DRAFTER_DIR)
            speculative.update(drafter_lib=loaded_libraries(drafter.libraries), drafter_weights=DRAFTER_DIR,
                               drafter_family=drafter_family)
        chat = chat_config(model_config, family, quantization, generation, tokenizer_files)
        (tmp / "mlc-chat-config.json").write_text(json.dumps(chat, indent=2))
        model_lib = loaded_libraries(base.libraries)
        runtime = {  # our runtime's own config, beside MLC's
            "model_lib": model_lib,
            "libraries": entries,
            "source": source,
            "generation": {k: generation[k] for k in ("max_tokens", "stop", "prompt") if k in generation},
            "speculative": speculative,
        }
        (tmp / RUNTIME_CONFIG).write_text(json.dumps(runtime, indent=2))
    return model_lib, entries


def report_unlinked(entries: list[dict[str, Any]], programs: dict[str, str], output: Path,
                    say: Callable[[str], None]) -> None:
    """Tell, through ``say``, of each library left for the user to link, with the command to run in
    ``output`` (also in ``mlc-mtp-config.json``); ``programs``: preset name -> its linker program."""
    for entry in entries:
        if entry["link_command"]:
            say(f"package: {entry['target']}: {entry['path']} is not linked (no {programs[entry['target']]} here); "
                f"in {output} run: {entry['link_command']}")
