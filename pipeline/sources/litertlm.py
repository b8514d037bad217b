"""Read LiteRT-LM ``.litertlm`` containers (google-ai-edge/LiteRT-LM).

Layout (``schema/core/litertlm_header_schema.fbs``, ``schema/core/litertlm_read.cc`` and the
writer ``litert_lm_builder.LitertLmFileBuilder``; all integers little-endian)::

    bytes 0-7    magic b"LITERTLM"
    bytes 8-19   uint32 major, minor, patch version (only major 1 exists)
    bytes 20-23  padding
    bytes 24-31  uint64 header end: the flatbuffer header spans [32, header end)
    bytes 32-    flatbuffer LiteRTLMMetaData{system_metadata: SystemMetadata{entries},
                 section_metadata: SectionMetadata{objects: [SectionObject]}}
    sections     SectionObject{items: [KeyValuePair], begin_offset, end_offset, data_type}
                 covers bytes [begin_offset, end_offset); each begins on a 16 KiB boundary
                 (BLOCK_SIZE = 16384) after the header and after the previous section.

A section's ``model_type`` item names its role (``tf_lite_prefill_decode``, ``tf_lite_embedder``,
``tf_lite_per_layer_embedder``, ``tf_lite_mtp_drafter``, ``tf_lite_mtp_aux``, ...).
``HF_Tokenizer_Zlib`` sections hold an 8-byte little-endian uncompressed size followed by a zlib
stream of the Hugging Face ``tokenizer.json``.

The header is decoded with the generated module shipped by ``litert-lm-builder``
(``litert_lm_builder.litertlm_header_schema_py_generated``) after a bounds check of every table,
vector and string it reads (:func:`pipeline.sources.flatbuffer_bounds.check_flatbuffer`); every offset is
checked against the file size before anything is read (a loader that trusts the header reads out
of bounds on crafted files, LiteRT-LM PR #1888).
"""

from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from litert_lm_builder import litertlm_header_schema_py_generated as lm

from ..errors import PipelineError
from .flatbuffer_bounds import FbTable, FlatbufferLayoutError, check_flatbuffer
from .tflite import TFLiteModel

MAGIC = b"LITERTLM"
SUPPORTED_MAJOR_VERSION = 1
HEADER_BEGIN = 32
HEADER_END_LOCATION = 24
BLOCK_SIZE = 16 * 1024

SECTION_TYPE_NAMES: dict[int, str] = {
    value: name for name, value in vars(lm.AnySectionDataType).items() if not name.startswith("_")
}
_VDATA_NAMES: dict[int, str] = {value: name for name, value in vars(lm.VData).items() if not name.startswith("_")}

# The header schema's fields (slots match the generated module's vtable offsets 4 + 2*slot).
_SCALAR_SIZES = {"UInt8": 1, "Int8": 1, "UInt16": 2, "Int16": 2, "UInt32": 4, "Int32": 4, "Float32": 4,
                 "Bool": 1, "UInt64": 8, "Int64": 8, "Double": 8}
_VALUE_TABLES = {
    code: FbTable(name, {0: ("value", "string", None)} if name == "StringValue"
                  else {0: ("value", "scalar", _SCALAR_SIZES[name])})
    for code, name in _VDATA_NAMES.items() if name != "NONE"
}
_KEY_VALUE = FbTable("KeyValuePair", {
    0: ("key", "string", None),
    1: ("value_type", "scalar", 1),
    2: ("value", "union", (1, _VALUE_TABLES)),
}, required=frozenset({0, 2}))
_SECTION_OBJECT = FbTable("SectionObject", {
    0: ("items", "tables", _KEY_VALUE),
    1: ("begin_offset", "scalar", 8),
    2: ("end_offset", "scalar", 8),
    3: ("data_type", "scalar", 1),
})
_HEADER = FbTable("LiteRTLMMetaData", {
    0: ("system_metadata", "table", FbTable("SystemMetadata", {0: ("entries", "tables", _KEY_VALUE)},
                                             required=frozenset({0}))),
    1: ("section_metadata", "table", FbTable("SectionMetadata", {0: ("objects", "tables", _SECTION_OBJECT)},
                                              required=frozenset({0}))),
})


@dataclass(frozen=True)
class Section:
    """One section of a ``.litertlm`` file.

    ``begin``/``end``: byte offsets in the file, the data is ``[begin, end)``; ``data_type``:
    the ``AnySectionDataType`` name (``TFLiteModel``, ``HF_Tokenizer_Zlib``, ``SP_Tokenizer``,
    ``LlmMetadataProto``, ``TFLiteWeights``, ...; ``Unknown(N)`` for codes newer than this
    reader); ``items``: the key/value items (str, int, float or bool values); ``role``: the
    ``model_type`` item or None.
    """

    index: int
    data_type: str
    begin: int
    end: int
    items: dict[str, Any] = field(default_factory=dict)

    @property
    def role(self) -> str | None:
        """The section's ``model_type`` item (e.g. ``tf_lite_mtp_drafter``), if any."""
        value = self.items.get("model_type")
        return value if isinstance(value, str) else None

    @property
    def size(self) -> int:
        """Size of the section's data in bytes."""
        return self.end - self.begin


def _decode_text(raw: bytes | None, what: str, path: str) -> str:
    if raw is None:
        raise PipelineError(f"{path}: header {what} is missing")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: header {what} is not UTF-8 text ({raw[:40]!r})") from None


def _item_value(pair: Any, path: str, where: str) -> Any:
    """The Python value of a KeyValuePair's VData union (None for an unknown member)."""
    name = _VDATA_NAMES.get(int(pair.ValueType()))
    table = pair.Value()
    if name is None or name == "NONE" or table is None:
        return None
    holder = getattr(lm, name)()
    holder.Init(table.Bytes, table.Pos)
    value = holder.Value()
    if name == "StringValue":
        return _decode_text(value, f"{where} value", path) if value is not None else ""
    if name == "Bool":
        return bool(value)
    return value


class LiteRTLMFile:
    """An opened ``.litertlm`` file: ``version``, ``system_metadata`` and ``sections``.

    Section data is read lazily through a read-only memory map.  Use as a context manager or
    call :meth:`close` to release the map.

    Raises (from the constructor): PipelineError (one line naming the file, the field, the value
    and what was expected) for a missing file, a file shorter than the fixed 32-byte preamble,
    wrong magic, a major version other than 1, a header end before byte 32 or past the end of
    the file, a header that is not a valid flatbuffer (or lacks ``section_metadata``), and a
    section that begins before the header end or off a 16 KiB boundary, ends before it begins or
    past the end of the file, or overlaps another section.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise PipelineError(f"{self.path}: LiteRT-LM file not found")
        self.file_size = self.path.stat().st_size
        self._mmap: mmap.mmap | None = None
        with open(self.path, "rb") as handle:
            head = handle.read(HEADER_BEGIN)
            if head[:len(MAGIC)] != MAGIC[:len(head)]:
                raise PipelineError(f"{self.path}: not a LiteRT-LM file (magic {head[:8]!r}, expected {MAGIC!r})")
            if len(head) < HEADER_BEGIN:
                raise PipelineError(
                    f"{self.path}: truncated LiteRT-LM file: {self.file_size} bytes, shorter than the "
                    f"{HEADER_BEGIN}-byte preamble"
                )
            self._mmap = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        self._view = memoryview(self._mmap)
        try:
            self._parse(head)
        except BaseException:
            self.close()
            raise

    # -- parsing -------------------------------------------------------------------------------

    def _parse(self, head: bytes) -> None:
        major, minor, patch = struct.unpack_from("<III", head, 8)
        self.version = (major, minor, patch)
        if major != SUPPORTED_MAJOR_VERSION:
            raise PipelineError(
                f"{self.path}: LiteRT-LM major version {major} (file version {major}.{minor}.{patch}) "
                f"is not supported, expected {SUPPORTED_MAJOR_VERSION}"
            )
        (header_end,) = struct.unpack_from("<Q", head, HEADER_END_LOCATION)
        self.header_end = header_end
        if header_end < HEADER_BEGIN + 4:
            raise PipelineError(
                f"{self.path}: header end offset {header_end} (bytes 24-31) is below {HEADER_BEGIN + 4}; "
                f"the flatbuffer header starts at byte {HEADER_BEGIN}"
            )
        if header_end > self.file_size:
            raise PipelineError(
                f"{self.path}: truncated LiteRT-LM file: header end offset {header_end} is past the end "
                f"of the file ({self.file_size} bytes)"
            )
        header = self._view[HEADER_BEGIN:header_end]  # no copy: the header may be large
        try:
            check_flatbuffer(header, _HEADER)
        except FlatbufferLayoutError as err:
            raise PipelineError(f"{self.path}: header is not a valid LiteRTLMMetaData flatbuffer: {err}") from None
        try:
            self._read_header(header)
        except PipelineError:
            raise
        except Exception as err:  # the flatbuffers runtime raises many kinds
            raise PipelineError(
                f"{self.path}: header is not a valid LiteRTLMMetaData flatbuffer ({type(err).__name__}: {err})"
            ) from None
        self._check_sections()

    def _read_header(self, header: memoryview) -> None:
        meta = lm.LiteRTLMMetaData.GetRootAs(header, 0)
        self.system_metadata: dict[str, Any] = {}
        system = meta.SystemMetadata()
        if system is not None:
            for i in range(system.EntriesLength()):
                pair = system.Entries(i)
                key = _decode_text(pair.Key(), f"system_metadata entry {i} key", str(self.path))
                self.system_metadata[key] = _item_value(pair, str(self.path), f"system_metadata {key!r}")
        section_metadata = meta.SectionMetadata()
        if section_metadata is None:
            raise PipelineError(f"{self.path}: header has no section_metadata (the table listing the sections)")
        self.sections: list[Section] = []
        for i in range(section_metadata.ObjectsLength()):
            obj = section_metadata.Objects(i)
            items: dict[str, Any] = {}
            for j in range(obj.ItemsLength()):
                pair = obj.Items(j)
                key = _decode_text(pair.Key(), f"section {i} item {j} key", str(self.path))
                items.setdefault(key, _item_value(pair, str(self.path), f"section {i} item {key!r}"))
            code = int(obj.DataType())
            data_type = SECTION_TYPE_NAMES.get(code, f"Unknown({code})")
            self.sections.append(Section(i, data_type, int(obj.BeginOffset()), int(obj.EndOffset()), items))

    def _check_sections(self) -> None:
        first_free = (self.header_end + BLOCK_SIZE - 1) // BLOCK_SIZE * BLOCK_SIZE
        for section in self.sections:
            where = f"{self.path}: section {section.index} ({section.data_type})"
            if section.begin < first_free:
                raise PipelineError(
                    f"{where}: begin_offset {section.begin} is inside the header, expected >= {first_free} "
                    f"(header end {self.header_end} rounded up to {BLOCK_SIZE} bytes)"
                )
            if section.begin % BLOCK_SIZE:
                raise PipelineError(
                    f"{where}: begin_offset {section.begin} is not a multiple of the {BLOCK_SIZE}-byte block size"
                )
            if section.end < section.begin:
                raise PipelineError(f"{where}: end_offset {section.end} is before begin_offset {section.begin}")
            if section.end > self.file_size:
                raise PipelineError(
                    f"{where}: end_offset {section.end} is past the end of the file ({self.file_size} bytes; "
                    f"truncated file?)"
                )
        ordered = sorted(self.sections, key=lambda s: (s.begin, s.end))
        for prev, cur in pairwise(ordered):
            if cur.begin < prev.end:
                raise PipelineError(
                    f"{self.path}: section {cur.index} ({cur.data_type}) begins at {cur.begin}, inside section "
                    f"{prev.index} ({prev.data_type}, bytes {prev.begin}-{prev.end}): sections overlap"
                )

    # -- access --------------------------------------------------------------------------------

    def roles(self) -> list[str]:
        """The distinct ``model_type`` roles of the sections, in file order."""
        out: list[str] = []
        for section in self.sections:
            if section.role and section.role not in out:
                out.append(section.role)
        return out

    def find(self, role: str, data_type: str | None = None) -> Section:
        """The section whose ``model_type`` is ``role``.

        With ``data_type`` (e.g. ``TFLiteModel``) only sections of that type qualify; without it a
        ``TFLiteModel`` section is preferred when the role also has others (weights, tokenizer).

        Raises:
            PipelineError: no section has that role (the message lists the roles present), the
                role's sections have other types, or several sections qualify.
        """
        candidates = [s for s in self.sections if s.role == role]
        if not candidates:
            present = ", ".join(self.roles()) or "none"
            raise PipelineError(f"{self.path}: no section with model_type {role!r} (roles present: {present})")
        if data_type is not None:
            typed = [s for s in candidates if s.data_type == data_type]
            if not typed:
                found = ", ".join(f"{s.index}:{s.data_type}" for s in candidates)
                raise PipelineError(
                    f"{self.path}: section with model_type {role!r} has data_type {found}, expected {data_type}"
                )
            candidates = typed
        elif len(candidates) > 1:
            models = [s for s in candidates if s.data_type == "TFLiteModel"]
            candidates = models or candidates
        if len(candidates) > 1:
            found = ", ".join(f"{s.index}:{s.data_type}" for s in candidates)
            raise PipelineError(f"{self.path}: {len(candidates)} sections with model_type {role!r} ({found})")
        return candidates[0]

    def sections_of_type(self, data_type: str) -> list[Section]:
        """All sections whose ``data_type`` is ``data_type``."""
        return [s for s in self.sections if s.data_type == data_type]

    def section_bytes(self, section: Section | int, expected_type: str | None = None) -> memoryview:
        """The data of ``section`` (a :class:`Section` or its index) as a zero-copy memoryview.

        Raises:
            PipelineError: unknown index, the file was closed, or the section's type is not
                ``expected_type``.
        """
        if isinstance(section, int):
            if not 0 <= section < len(self.sections):
                raise PipelineError(f"{self.path}: section index {section} is out of range "
                                    f"(0-{len(self.sections) - 1})")
            section = self.sections[section]
        if expected_type is not None and section.data_type != expected_type:
            raise PipelineError(
                f"{self.path}: section {section.index} has data_type {section.data_type}, expected {expected_type}"
            )
        if self._mmap is None:
            raise PipelineError(f"{self.path}: file is closed")
        return self._view[section.begin:section.end]

    def tokenizer_json(self, section: Section | int | None = None) -> str:
        """The Hugging Face ``tokenizer.json`` text of an ``HF_Tokenizer_Zlib`` section (the only
        one when ``section`` is None).

        Raises:
            PipelineError: no or several such sections, a section of another type, data shorter
                than the 8-byte size, a corrupt zlib stream, a size that differs from the declared
                one, or text that is not UTF-8.
        """
        if section is None:
            found = self.sections_of_type("HF_Tokenizer_Zlib")
            if len(found) != 1:
                raise PipelineError(f"{self.path}: {len(found)} HF_Tokenizer_Zlib sections, expected exactly 1")
            section = found[0]
        data = self.section_bytes(section, expected_type="HF_Tokenizer_Zlib")
        index = section if isinstance(section, int) else section.index
        where = f"{self.path}: section {index} (HF_Tokenizer_Zlib)"
        if len(data) < 8:
            raise PipelineError(f"{where}: {len(data)} bytes, too short for the 8-byte uncompressed size")
        (declared,) = struct.unpack_from("<Q", data, 0)
        decompressor = zlib.decompressobj()
        try:
            text = decompressor.decompress(data[8:], min(declared + 1, 2**62))
        except zlib.error as err:
            raise PipelineError(f"{where}: corrupt zlib data ({err})") from None
        if len(text) > declared:
            raise PipelineError(f"{where}: zlib data holds more than the {declared} bytes the section declares")
        if not decompressor.eof:
            raise PipelineError(
                f"{where}: zlib stream ends after {len(text)} of the {declared} declared bytes (truncated data)"
            )
        if len(text) != declared:
            raise PipelineError(f"{where}: decompressed to {len(text)} bytes, the section declares {declared}")
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PipelineError(f"{where}: tokenizer JSON is not UTF-8 ({err})") from None

    def tflite_model(self, section: Section | int | str) -> TFLiteModel:
        """The TFLite model of a ``TFLiteModel`` section (a Section, its index or its role).

        A model whose tensors refer to external buffers gets the role's ``TFLiteWeights`` section
        as their bytes when there is exactly one such section.

        Raises:
            PipelineError: see :meth:`find`, :meth:`section_bytes` and :class:`TFLiteModel`.
        """
        if isinstance(section, str):
            section = self.find(section, "TFLiteModel")
        elif isinstance(section, int):
            if not 0 <= section < len(self.sections):
                raise PipelineError(f"{self.path}: section index {section} is out of range "
                                    f"(0-{len(self.sections) - 1})")
            section = self.sections[section]
        data = self.section_bytes(section, expected_type="TFLiteModel")
        external = None
        if section.role:
            weights = [s for s in self.sections if s.role == section.role and s.data_type == "TFLiteWeights"]
            if len(weights) == 1:
                external = self.section_bytes(weights[0])
        label = f"{self.path}: section {section.index} ({section.role or section.data_type})"
        return TFLiteModel(data, name=label, external=external)

    def close(self) -> None:
        """Release the memory map (views already handed out keep it alive until collected)."""
        if self._mmap is not None:
            try:
                self._view.release()
                self._mmap.close()
            except BufferError:
                pass
            self._mmap = None

    def __enter__(self) -> LiteRTLMFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
