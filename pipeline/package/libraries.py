"""The package's model libraries: the files under ``lib/`` and their list in ``mlc-mtp-config.json``.

A compile stage leaves its files and ``outputs.json`` (what :func:`pipeline.compile.compiler.compile_module`
returned: one record per file) in its directory; packaging copies the files into ``lib/`` and lists
each under ``libraries`` with the target preset it was built for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

OUTPUTS = "outputs.json"


def write_outputs(directory: Path, outputs: list[dict[str, Any]]) -> None:
    """Record a compile stage's files (``compile_module``'s list) in ``directory``."""
    (directory / OUTPUTS).write_text(json.dumps(outputs, indent=2))


def read_outputs(directory: Path) -> list[dict[str, Any]]:
    """A compile stage's records, the library MLC loads first."""
    return json.loads((directory / OUTPUTS).read_text())


def package_libraries(stage: Path, lib_dir: Path, target: str, tvm_target: dict[str, Any],
                      role: str = "model") -> list[dict[str, Any]]:
    """Copy a compile stage's files into ``lib_dir``; return their ``libraries`` entries:
    ``path`` (inside the package), ``target`` (preset name), ``tvm_target`` (its dict), ``role``
    (``model`` or ``drafter``), ``format`` (``so``, ``dylib``, ``tar``, ``wasm``),
    ``system_lib_prefix`` (a system library's symbol prefix, else ``None``) and ``link_command``
    (the shell command, run in the package directory, that links a ``.tar`` into the library
    MLC loads where the build had no linker for it; else ``None``)."""
    entries = []
    for record in read_outputs(stage):
        shutil.copy(stage / record["file"], lib_dir / record["file"])
        entries.append({"path": f"{lib_dir.name}/{record['file']}", "target": target, "tvm_target": tvm_target,
                        "role": role, "format": record["format"], "system_lib_prefix": record["system_lib_prefix"],
                        "link_command": record["link_command"]})
    return entries
