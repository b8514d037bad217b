"""What a package directory holds, as ``mlc-mtp inspect DIR`` reports it: the model, the weights
and their formats, the libraries, the drafter, the tokenizer, the recorded defaults and sizes.

Read from the package's own files only (``mlc-chat-config.json``, ``mlc-mtp-config.json``,
``tensor-cache.json``); nothing is loaded, so it works for a package built for another machine.
"""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import PipelineError
from .chat_config import RUNTIME_CONFIG

CHAT_CONFIG = "mlc-chat-config.json"
TENSOR_CACHE = "tensor-cache.json"


def package_of(path: str | Path) -> Path | None:
    """The package directory ``path`` is (a directory with ``mlc-chat-config.json``) or lies in
    (a file of it, or of its ``lib/`` or drafter folder); None otherwise."""
    path = Path(path)
    for candidate in [path, *path.parents][:3]:
        if candidate.is_dir() and (candidate / CHAT_CONFIG).is_file():
            return candidate
    return None


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{int(nbytes)} B" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""  # pragma: no cover


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path}: unreadable ({type(err).__name__}: {err})") from None


def _metadata_value(value: Any) -> Any:
    """A tensor-cache metadata value: tvmjs writes dicts as their Python repr."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _weights_lines(directory: Path, indent: str) -> list[str]:
    cache_path = directory / TENSOR_CACHE
    if not cache_path.is_file():
        return [f"{indent}no {TENSOR_CACHE}"]
    cache = _json(cache_path)
    meta = {key: _metadata_value(value) for key, value in cache.get("metadata", {}).items()}
    shards = cache.get("records", [])
    on_disk = sum((directory / s["dataPath"]).stat().st_size for s in shards if (directory / s["dataPath"]).is_file())
    missing = [s["dataPath"] for s in shards if not (directory / s["dataPath"]).is_file()]
    params = sum(len(s.get("records", [])) for s in shards)
    plural = "s" if len(shards) != 1 else ""
    lines = [f"{indent}{params} stored tensors in {len(shards)} shard{plural}, {_size(on_disk)}"
             + (f"; {meta['BitsPerParam']} bits per parameter" if "BitsPerParam" in meta else "")
             + (f"; MISSING {', '.join(missing)}" if missing else "")]
    formats = meta.get("QuantizedWeights")
    if isinstance(formats, dict) and formats:
        counts = Counter(formats.values())
        lines.append(f"{indent}quantized weights: " + ", ".join(f"{n} as {f}" for f, n in sorted(counts.items()))
                     + " (formats: pipeline/quantization/formats.py)")
    return lines


def package_report(directory: str | Path, focus: str | Path | None = None) -> str:
    """A multi-line report of the package at ``directory``; ``focus``: the file the user named,
    when it was one of the package's files (said first).

    Raises:
        PipelineError: ``mlc-chat-config.json`` or another config file cannot be read.
    """
    directory = Path(directory)
    chat = _json(directory / CHAT_CONFIG)
    runtime = _json(directory / RUNTIME_CONFIG) if (directory / RUNTIME_CONFIG).is_file() else {}
    files = [p for p in directory.rglob("*") if p.is_file()]
    lines = []
    if focus is not None and Path(focus).resolve() != directory.resolve():
        lines.append(f"{focus} is part of the package {directory}")
    lines.append(f"package {directory} ({len(files)} files, {_size(sum(p.stat().st_size for p in files))})")
    model = chat.get("model_config", {})
    lines.append(f"model: {chat.get('model_type', '?')}, quantization {chat.get('quantization', '?')}, "
                 f"vocabulary {chat.get('vocab_size', '?')}, hidden size {model.get('hidden_size', '?')}, "
                 f"{model.get('num_hidden_layers', '?')} layers; context window {chat.get('context_window_size', '?')} "
                 f"tokens, prefill chunk {chat.get('prefill_chunk_size', '?')}")
    source = runtime.get("source")
    if source:
        lines.append(f"source: {source.get('format')} {source.get('path')}")
    lines.append("weights:")
    lines += _weights_lines(directory, "  ")
    lines.append("libraries:")
    entries = runtime.get("libraries", [])
    if not entries:
        lines += [f"  {p.relative_to(directory)}  {_size(p.stat().st_size)}"
                  for p in sorted((directory / "lib").glob("*"))]
    for entry in entries:
        path = directory / entry["path"]
        size = _size(path.stat().st_size) if path.is_file() else "MISSING"
        kind = entry.get("tvm_target", {}).get("kind", "?")
        extra = (f", system library prefix {entry['system_lib_prefix']}" if entry.get("system_lib_prefix") else "") + (
            f"; link it with: {_command(entry['link_command'])}" if entry.get("link_command") else "")
        lines.append(f"  {entry['path']}  {entry.get('role', 'model')} for target {entry.get('target')} "
                     f"(TVM {kind}), {entry.get('format')}, {size}{extra}")
    speculative = runtime.get("speculative", {})
    if speculative.get("drafter_weights"):
        lines.append(f"drafter: {speculative.get('drafter_family')}, weights in {speculative['drafter_weights']}/, "
                     f"libraries {speculative.get('drafter_lib')}")
        lines += _weights_lines(directory / speculative["drafter_weights"], "  ")
    else:
        lines.append("drafter: none (speculative decoding: off only)")
    if speculative:
        lines.append(f"speculative defaults: mode {speculative.get('mode')}, draft length "
                     f"{speculative.get('draft_length')}{' adaptive' if speculative.get('adaptive') else ''} "
                     f"({speculative.get('min_draft_length')}..{speculative.get('max_draft_length')})")
    template = chat.get("conv_template", {})
    tokenizer = [p.name for p in sorted(directory.glob("tokenizer*"))]
    lines.append(f"tokenizer: {', '.join(tokenizer) or 'MISSING'}; chat template {template.get('name', '?')}")
    generation = runtime.get("generation", {})
    lines.append("generation defaults: " + (", ".join(f"{k} {v!r}" for k, v in generation.items()) or "none")
                 + f"; temperature {chat.get('temperature', '?')}, top_p {chat.get('top_p', '?')}")
    return "\n".join(lines) + "\n"


def _command(command: str | list[str]) -> str:
    """A link command as the package records it (a shell line; older packages: a list of words)."""
    return command if isinstance(command, str) else " ".join(command)
