"""Linking a build's objects into the shared library MLC loads, with the command a target preset
gives (``link.command``: its program, then arguments, ``{output}`` and ``{objects}`` filled in),
where that program is found; else the same command for the user to run."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..errors import PipelineError
from .targets import TargetPreset


def find_program(name: str) -> str | None:
    """Path of program ``name`` on ``PATH``, else of the highest ``name-<version>`` there
    (Debian installs ``ld.lld`` as ``ld.lld-14``); ``None`` when neither exists."""
    found = shutil.which(name)
    if found:
        return found
    pattern = re.compile(re.escape(name) + r"-(\d+)$")
    versions = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        try:
            entries = list(Path(directory).iterdir()) if directory else []
        except OSError:
            continue
        for entry in entries:
            match = pattern.match(entry.name)
            if match and os.access(entry, os.X_OK):
                versions.append((int(match.group(1)), str(entry)))
    return max(versions)[1] if versions else None


def linker(preset: TargetPreset, program: str):
    """``export_library``'s ``fcompile`` running the preset's ``link.command`` with ``program``.

    Raises:
        ValueError: the preset has no ``link`` section.
    """
    if preset.link is None:
        raise ValueError(f"{preset.path}: target {preset.name} has no link section")
    spec = preset.link

    def link(output, objects, **_kwargs):
        command = render(spec["command"], str(output), [str(o) for o in objects])
        proc = subprocess.run([program, *command[1:]], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise PipelineError(f"{preset.path}: link.command ({Path(program).name}) failed "
                                f"(exit {proc.returncode}): {last[0]}")

    return link


def render(command: Sequence[str], output: str, objects: Sequence[str]) -> list[str]:
    """A link command with ``{output}`` and ``{objects}`` filled in."""
    argv: list[str] = []
    for arg in command:
        argv.extend(objects if arg == "{objects}" else [arg.replace("{output}", output)])
    return argv


def user_link_command(preset: TargetPreset, tar_name: str) -> str:
    """The shell command, run in the package directory, that links ``lib/<tar_name>`` into the
    preset's ``link.format`` library where the build could not (no linker found)."""
    if not preset.link:
        raise PipelineError(f"{preset.path}: no link command to give (library {preset.library!r} without link)")
    stem = tar_name[: -len(".tar")]
    objects = f"lib/{stem}-objects"
    link = render(preset.link["command"], f"lib/{stem}.{preset.link['format']}", ["{objects}"])
    return " && ".join([
        shlex.join(["mkdir", "-p", objects]), shlex.join(["tar", "-xf", f"lib/{tar_name}", "-C", objects]),
        shlex.join(link).replace(shlex.quote("{objects}"), f"{shlex.quote(objects)}/*.o"),
    ])
