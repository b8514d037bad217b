"""Bounds checks for flatbuffers read with the Python ``flatbuffers`` runtime.

That runtime has no verifier: on corrupt input it silently reads from the wrong place (negative
offsets wrap around).  :func:`check_flatbuffer` walks the tables, vectors and strings a reader uses,
described by :class:`FbTable` specs, and checks that each lies inside the buffer before the
generated accessors touch it.  Used by the TFLite (:mod:`pipeline.sources.tflite`) and LiteRT-LM
(:mod:`pipeline.sources.litertlm`) readers.

Layout facts (the flatbuffers binary format, google/flatbuffers' "FlatBuffer Internals" page): a uoffset
is a uint32 counted forward from where it is stored; a table starts with an int32 soffset back to
its vtable; a vtable is uint16 ``[vtable size, table size, field offsets...]`` with field ``slot``
at entry ``4 + 2*slot`` (0 = absent); vectors and strings are a uint32 length followed by the
elements (strings also by a NUL byte).  All little-endian.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


class FlatbufferLayoutError(Exception):
    """Internal: a table, vector or string that lies (partly) outside the buffer, or a missing
    required field.  Callers turn it into a PipelineError naming the file."""


@dataclass(frozen=True, eq=False)
class FbTable:
    """The fields of one flatbuffer table that a reader uses.

    ``fields`` maps the field's slot (its index in the schema, vtable entry ``4 + 2*slot``) to
    ``(name, kind, arg)`` with kind ``scalar`` (arg: byte size), ``string``, ``vector`` (arg:
    element byte size), ``table`` (arg: FbTable), ``tables`` (vector of tables; arg: FbTable) or
    ``union`` (arg: ``(slot of the type field, {type value: FbTable})``).
    """

    name: str
    fields: Mapping[int, tuple[str, str, Any]]
    required: frozenset[int] = frozenset()


class _Checker:
    def __init__(self, buf: Any):
        self.buf = buf
        self.size = len(buf)
        self.seen: set[tuple[int, int]] = set()

    def need(self, pos: int, nbytes: int, path: str) -> None:
        if pos < 0 or nbytes < 0 or pos + nbytes > self.size:
            raise FlatbufferLayoutError(
                f"{path}: {nbytes} bytes at offset {pos} lie outside the {self.size}-byte flatbuffer"
            )

    def get(self, fmt: struct.Struct, pos: int, path: str) -> int:
        self.need(pos, fmt.size, path)
        return fmt.unpack_from(self.buf, pos)[0]

    def deref(self, pos: int, path: str) -> int:
        return pos + self.get(_U32, pos, path)

    def table(self, pos: int, spec: FbTable, path: str) -> None:
        key = (pos, id(spec))
        if key in self.seen:
            return
        self.seen.add(key)
        self.need(pos, 4, path)
        vtable = pos - self.get(_I32, pos, path)
        vt_size = self.get(_U16, vtable, f"{path} (vtable)")
        obj_size = self.get(_U16, vtable + 2, f"{path} (vtable)")
        if vt_size < 4 or vt_size % 2:
            raise FlatbufferLayoutError(f"{path}: vtable size {vt_size} is not an even number >= 4")
        self.need(vtable, vt_size, f"{path} (vtable)")
        if obj_size < 4:
            raise FlatbufferLayoutError(f"{path}: table size {obj_size} is below 4")
        self.need(pos, obj_size, path)

        def field_offset(slot: int) -> int:
            entry = 4 + 2 * slot
            return _U16.unpack_from(self.buf, vtable + entry)[0] if entry < vt_size else 0

        for slot, (name, kind, arg) in spec.fields.items():
            where = f"{path}.{name}"
            offset = field_offset(slot)
            if offset == 0:
                if slot in spec.required:
                    raise FlatbufferLayoutError(f"{where}: required field is missing")
                continue
            fpos = pos + offset
            if kind == "scalar":
                self.need(fpos, arg, where)
            elif kind == "string":
                target = self.deref(fpos, where)
                length = self.get(_U32, target, where)
                self.need(target + 4, length + 1, where)  # bytes plus the NUL terminator
            elif kind == "vector":
                target = self.deref(fpos, where)
                length = self.get(_U32, target, where)
                self.need(target + 4, length * arg, where)
            elif kind == "table":
                self.table(self.deref(fpos, where), arg, where)
            elif kind == "tables":
                target = self.deref(fpos, where)
                length = self.get(_U32, target, where)
                self.need(target + 4, 4 * length, where)
                for i in range(length):
                    element = target + 4 + 4 * i
                    self.table(self.deref(element, f"{where}[{i}]"), arg, f"{where}[{i}]")
            elif kind == "union":
                type_slot, members = arg
                type_offset = field_offset(type_slot)
                utype = self.get(_U8, pos + type_offset, f"{where} (type)") if type_offset else 0
                member = members.get(utype, FbTable(f"{spec.name}.{name}#{utype}", {}))
                self.table(self.deref(fpos, where), member, where)
            else:  # pragma: no cover - programming error in a spec
                raise AssertionError(kind)


def check_flatbuffer(buf: Any, root: FbTable) -> None:
    """Check that the fields of ``root`` (and the tables they reach) lie inside ``buf``.

    Raises:
        FlatbufferLayoutError: the first field found out of bounds or missing (message names it).
    """
    checker = _Checker(buf)
    checker.table(checker.deref(0, f"{root.name} (root offset)"), root, f"{root.name} (root table)")
