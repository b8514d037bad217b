"""A readable text report of what a model file holds (the ``mlc-mtp inspect`` command), like
``litert-lm-peek`` for LiteRT files.

Kinds, detected by their leading bytes (the extension only picks the reader whose error message
explains a mismatch):

* LiteRT-LM ``.litertlm``: magic ``LITERTLM`` at byte 0 (:mod:`pipeline.sources.litertlm`);
* TFLite ``.tflite``: file identifier ``TFL3`` at bytes 4-7 (:mod:`pipeline.sources.tflite`);
* GGUF: magic ``GGUF`` at byte 0 (:class:`pipeline.sources.gguf_file.GGUFSource`);
* safetensors: a little-endian uint64 header length N (2 <= N <= file size - 8) followed by a JSON
  object starting with ``{`` (huggingface/safetensors format), or a directory holding
  ``*.safetensors`` files.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PipelineError
from ..extras import require_extra

if TYPE_CHECKING:  # the LiteRT readers need the litert extra; imported where used
    from .litertlm import LiteRTLMFile, Section
    from .tflite import TFLiteModel

_EXTENSIONS = {".litertlm": "litertlm", ".tflite": "tflite", ".gguf": "gguf", ".safetensors": "safetensors"}
_MAX_METADATA_LINES = 60


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{nbytes} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{nbytes} B"  # pragma: no cover


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of a metadata value, lists summarized by their length."""
    if isinstance(value, (list, tuple)):
        head = ", ".join(_short(v, 20) for v in value[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"[{len(value)} items: {head}{more}]"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def detect_kind(path: str | Path) -> str:
    """``litertlm``, ``tflite``, ``gguf``, ``safetensors`` or ``safetensors-dir`` for ``path``.

    Raises:
        PipelineError: missing path, a directory without ``*.safetensors`` files, or a file whose
            leading bytes match no known kind and whose extension names none.
    """
    path = Path(path)
    if path.is_dir():
        if any(path.glob("*.safetensors")):
            return "safetensors-dir"
        raise PipelineError(f"{path}: directory holds no *.safetensors files")
    if not path.is_file():
        raise PipelineError(f"{path}: file not found")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"LITERTLM"):
        return "litertlm"
    if head.startswith(b"GGUF"):
        return "gguf"
    if head[4:8] == b"TFL3":
        return "tflite"
    if len(head) >= 9:
        (header_len,) = struct.unpack_from("<Q", head, 0)
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    by_extension = _EXTENSIONS.get(path.suffix.lower())
    if by_extension:
        return by_extension  # its reader reports what is wrong with the file
    raise PipelineError(
        f"{path}: unknown model file kind (first bytes {head[:8]!r}); expected a LiteRT-LM (.litertlm), "
        f"TFLite (.tflite), GGUF or safetensors file"
    )


def inspect_file(path: str | Path, *, section_tensors: bool = False, all_tensors: bool = False) -> str:
    """A multi-line report of the file (or safetensors directory) at ``path``.

    Args:
        section_tensors: for ``.litertlm`` files, also list the tensors of each TFLite section
            (by default only their counts).
        all_tensors: for TFLite models, also list tensors without data (activations, inputs); for
            GGUF and safetensors files, list every tensor (by default their count per type).

    A package directory, or a file inside one, gets the package's report
    (:func:`pipeline.package.describe.package_report`).

    Raises:
        PipelineError: unknown kind, a LiteRT-LM or TFLite file without the ``litert`` extra, or a
            file its reader rejects (see :func:`detect_kind` and the readers).  Problems inside one
            section of a ``.litertlm`` file are reported in its lines instead.
    """
    from ..package.describe import package_of, package_report

    package = package_of(path)
    if package is not None:
        return package_report(package, focus=path)
    kind = detect_kind(path)
    if kind in ("litertlm", "tflite"):
        require_extra("litert", f"{path}: reading a {'LiteRT-LM' if kind == 'litertlm' else 'TFLite'} file")
    if kind == "litertlm":
        return _litertlm_report(Path(path), section_tensors)
    if kind == "tflite":
        from .tflite import TFLiteModel  # the litert extra

        with TFLiteModel(path) as model:
            size = Path(path).stat().st_size
            return "\n".join([f"TFLite model {path} ({_size(size)})", *_tflite_lines(model, "", all_tensors)]) + "\n"
    if kind == "gguf":
        return _gguf_report(Path(path), all_tensors)
    return _safetensors_report(Path(path), all_tensors)


# ----------------------------------------------------------------------------------------------


def _tflite_lines(model: TFLiteModel, indent: str, all_tensors: bool) -> list[str]:
    lines = []
    constants = model.constant_tensors()
    subgraphs = ", ".join(f"{i}:{name or '-'} ({ops} ops)"
                          for i, (name, ops) in enumerate(zip(model.subgraph_names, model.operator_counts)))
    lines.append(f"{indent}schema version {model.version}, {len(model.subgraph_names)} subgraph(s): "
                 f"{subgraphs or 'none'}")
    if model.signatures:
        lines.append(f"{indent}signatures: " + ", ".join(f"{k} -> subgraph {v}" for k, v in model.signatures.items()))
    if model.description:
        lines.append(f"{indent}description: {_short(model.description)}")
    lines.append(f"{indent}tensors: {len(model.tensors)} in all, {len(constants)} with data (weights)")
    listed = model.tensors if all_tensors else constants
    for info in listed:
        quant = "-"
        if info.quantization is not None:
            quant = info.quantization.describe()
            if not info.is_quantized:
                quant = f"ignored on {info.dtype} tensor: {quant}"
        where = f"{_size(info.nbytes)} {info.storage}" if info.has_data else "no data"
        prefix = f"[{info.subgraph}:{info.index}] " if all_tensors else ""
        lines.append(f"{indent}  {prefix}{info.name}  shape {list(info.shape)}  {info.dtype}  quant {quant}  {where}")
    return lines


def _section_lines(lmfile: LiteRTLMFile, section: Section, section_tensors: bool) -> list[str]:
    indent = "      "
    if section.data_type == "TFLiteModel":
        try:
            model = lmfile.tflite_model(section)
        except PipelineError as err:
            return [f"{indent}TFLite model unreadable: {err}"]
        if section_tensors:
            return _tflite_lines(model, indent, False)
        constants = model.constant_tensors()
        quantized = sum(1 for t in constants if t.is_quantized)
        signatures = f"; signatures {', '.join(model.signatures)}" if model.signatures else ""
        return [f"{indent}TFLite: {len(model.tensors)} tensors ({len(constants)} with data, {quantized} quantized) "
                f"in {len(model.subgraph_names)} subgraph(s){signatures}"]
    if section.data_type == "HF_Tokenizer_Zlib":
        try:
            text = lmfile.tokenizer_json(section)
        except PipelineError as err:
            return [f"{indent}tokenizer unreadable: {err}"]
        try:
            vocab = len(json.loads(text).get("model", {}).get("vocab", {}))
            return [f"{indent}tokenizer.json: {_size(len(text.encode()))}, {vocab} vocabulary entries"]
        except (ValueError, AttributeError):
            return [f"{indent}tokenizer.json: {_size(len(text.encode()))} (not valid JSON)"]
    if section.data_type in ("LlmMetadataProto", "ExecutorMetadataProto", "EmbeddingMetadataProto"):
        return _proto_lines(lmfile, section, indent)
    return []


def _proto_lines(lmfile: LiteRTLMFile, section: Section, indent: str) -> list[str]:
    try:
        from google.protobuf import text_format
        from litert_lm_builder.runtime.proto import (
            embedding_metadata_pb2,
            executor_metadata_pb2,
            llm_metadata_pb2,
        )
    except ImportError:
        return []
    message = {
        "LlmMetadataProto": llm_metadata_pb2.LlmMetadata,
        "ExecutorMetadataProto": executor_metadata_pb2.ExecutorMetadata,
        "EmbeddingMetadataProto": embedding_metadata_pb2.EmbeddingMetadata,
    }[section.data_type]()
    try:
        message.ParseFromString(bytes(lmfile.section_bytes(section)))
    except Exception as err:  # protobuf's DecodeError and friends
        return [f"{indent}{section.data_type} unreadable: {type(err).__name__}: {err}"]
    text = text_format.MessageToString(message).splitlines()
    lines = [f"{indent}{line}" for line in text[:_MAX_METADATA_LINES]]
    if len(text) > _MAX_METADATA_LINES:
        lines.append(f"{indent}... ({len(text) - _MAX_METADATA_LINES} more lines)")
    return lines


def _litertlm_report(path: Path, section_tensors: bool) -> str:
    from .litertlm import LiteRTLMFile  # the litert extra

    with LiteRTLMFile(path) as lmfile:
        major, minor, patch = lmfile.version
        lines = [
            f"LiteRT-LM file {path} ({_size(lmfile.file_size)}), version {major}.{minor}.{patch}, "
            f"header bytes 32-{lmfile.header_end}",
            f"system metadata ({len(lmfile.system_metadata)}):",
        ]
        lines += [f"  {key} = {_short(value)}" for key, value in lmfile.system_metadata.items()]
        lines.append(f"sections ({len(lmfile.sections)}):")
        for section in lmfile.sections:
            role = f"  role {section.role}" if section.role else ""
            lines.append(f"  [{section.index}] {section.data_type}{role}  bytes {section.begin}-{section.end} "
                         f"({_size(section.size)})")
            if section.items:
                lines.append("      items: " + ", ".join(f"{k}={_short(v, 40)}" for k, v in section.items.items()))
            lines += _section_lines(lmfile, section, section_tensors)
        if lmfile.roles():
            lines.append("roles: " + ", ".join(lmfile.roles()))
    return "\n".join(lines) + "\n"


def _gguf_report(path: Path, tensors: bool) -> str:
    from .gguf_file import GGUFSource

    source = GGUFSource(path)
    names = source.tensor_names()
    lines = [f"GGUF file {path} ({_size(path.stat().st_size)}), architecture {source.architecture or '?'}",
             f"metadata ({len(source.metadata)} keys):"]
    lines += [f"  {key} = {_short(value)}" for key, value in source.metadata.items()]
    types = Counter(source.tensor_info(name)[1] for name in names)
    lines.append(f"tensors ({len(names)}, {_size(sum(source.tensor_nbytes(n) for n in names))}): "
                 + ", ".join(f"{n} {t}" for t, n in types.most_common())
                 + ("" if tensors else "; --tensors lists them"))
    for name in names if tensors else ():
        shape, ggml_type = source.tensor_info(name)
        lines.append(f"  {name}  shape {list(shape)}  {ggml_type}")
    return "\n".join(lines) + "\n"


def _safetensors_tensors(file: Path) -> list[tuple[str, list[int], str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="numpy") as handle:
            out = []
            for key in handle.keys():
                piece = handle.get_slice(key)
                out.append((key, list(piece.get_shape()), str(piece.get_dtype())))
            return out
    except Exception as err:  # SafetensorError, OSError, ...
        raise PipelineError(f"{file}: unreadable safetensors file ({type(err).__name__}: {err})") from None


def _safetensors_report(path: Path, tensors: bool) -> str:
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    lines = []
    if path.is_dir():
        lines.append(f"safetensors directory {path}: {len(files)} file(s)")
        config = path / "config.json"
        if config.is_file():
            try:
                data = json.loads(config.read_text())
                lines.append(f"config.json: model_type {data.get('model_type', '?')}, "
                             f"architectures {data.get('architectures', '?')}")
            except (ValueError, OSError) as err:
                lines.append(f"config.json: unreadable ({err})")
    for file in files:
        found = _safetensors_tensors(file)
        dtypes = Counter(dtype for _, _, dtype in found)
        lines.append(f"safetensors file {file} ({_size(file.stat().st_size)}): {len(found)} tensors ("
                     + ", ".join(f"{n} {t}" for t, n in dtypes.most_common()) + ")"
                     + ("" if tensors else "; --tensors lists them"))
        lines += [f"  {name}  shape {shape}  {dtype}" for name, shape, dtype in (found if tensors else ())]
    return "\n".join(lines) + "\n"
