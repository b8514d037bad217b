"""Read-only storage buffers for TVM 0.26's WebGPU kernels.

TVM 0.26's WGSL code generator declares every buffer argument ``var<storage, read_write>`` (after
its typed-buffer lowering each parameter is seen as written: apache/tvm#20113, fixed after 0.26).
WGSL's uniformity analysis treats any value read from a ``read_write`` buffer as non-uniform, so
a kernel whose ``workgroupBarrier()`` sits in a loop or branch bounded by such a value (an
attention kernel reading ``q_indptr`` or positions) is rejected by real WebGPU implementations
(Dawn, Chromium): "'workgroupBarrier' must only be called from uniform control flow".

:func:`restore_read_only` repairs a compiled library's packed WebGPU module in place: a buffer the
kernel never stores to is declared ``var<storage, read>`` and marked read-only in the kernel's
``paramWriteAccess`` launch tag (tvmjs then binds it as ``read-only-storage``).  Both edits keep
every byte length, so the object file holding the module stays valid.  With a TVM that declares
access modes correctly it changes nothing.

The packed module (``ffi.Module.load_from_bytes.webgpu``): the kind ``"webgpu"`` as a string,
then its bytes as a string holding ``fmap`` (a map from function name to FunctionInfo: name,
argument dtypes, launch tags, extra tags) and ``smap`` (function name -> WGSL).  Strings and
sequences are a little-endian uint64 count followed by the items.
"""

from __future__ import annotations

import re
import struct

KIND = struct.pack("<Q", 6) + b"webgpu"
TAG = "paramWriteAccess:"
_DECL = re.compile(r"var<storage, read_write> (\w+) ")


class _Reader:
    def __init__(self, data: bytearray, pos: int, end: int):
        self.data, self.pos, self.end = data, pos, end

    def count(self) -> int:
        if self.pos + 8 > self.end:
            raise ValueError("truncated")
        (value,) = struct.unpack_from("<Q", self.data, self.pos)
        self.pos += 8
        return value

    def string(self) -> tuple[int, str]:
        """(offset of the text, text)."""
        size = self.count()
        start = self.pos
        self.pos += size
        if self.pos > self.end:
            raise ValueError("truncated")
        return start, self.data[start:self.pos].decode("utf-8")

    def skip(self, nbytes: int) -> None:
        self.pos += nbytes


def _read_module(reader: _Reader) -> tuple[dict, dict]:
    """fmap as {name: [(offset, tag)]} (launch tags only) and smap as {name: (offset, wgsl)}."""
    tags = {}
    for _ in range(reader.count()):
        _, name = reader.string()
        reader.string()                        # FunctionInfo.name
        reader.skip(4 * reader.count())        # arg_types: DLDataType, 4 bytes each
        tags[name] = [reader.string() for _ in range(reader.count())]
        reader.skip(4 * reader.count())        # arg_extra_tags: int32 each
    sources = {}
    for _ in range(reader.count()):
        _, name = reader.string()
        sources[name] = reader.string()
    return tags, sources


def _closing_bracket(code: str, start: int) -> int:
    depth = 0
    for i in range(start, len(code)):
        depth += {"[": 1, "]": -1}.get(code[i], 0)
        if depth == 0:
            return i
    return len(code)


def stored_to(code: str, name: str) -> bool:
    """Whether WGSL ``code`` may write buffer ``name``: an assignment ``name[...] = ...``, a
    pointer taken to it or an element (``&name[i]``, as atomics do), or any use other than indexing."""
    for match in re.finditer(rf"(?<![\w.]){re.escape(name)}\b", code):
        end = match.end()
        if "var<storage" in code[code.rfind("\n", 0, match.start()) + 1:match.start()]:
            continue  # the declaration itself
        if end >= len(code) or code[end] != "[" or code[:match.start()].rstrip().endswith("&"):
            return True
        after = code[_closing_bracket(code, end) + 1:].lstrip(" ")
        if after.startswith("=") and not after.startswith("=="):
            return True
    return False


def _patch_function(data: bytearray, tags: list[tuple[int, str]], source: tuple[int, str]) -> int:
    offset, code = source
    declared = [(m.start(), m.group(1)) for m in _DECL.finditer(code)]
    bindings = re.findall(r"@binding\((\d+)\) var<storage, (?:read_write|read)> (\w+) ", code)
    access = [(pos, tag) for pos, tag in tags if tag.startswith(TAG)]
    if not declared or len(access) != 1:
        return 0
    tag_offset, tag = access[0]
    flags = tag[len(TAG):].strip("[]").split(",")
    if len(flags) != len(bindings) or sorted(int(b) for b, _ in bindings) != list(range(len(bindings))):
        return 0  # not the layout this repair understands; leave the kernel as compiled
    binding_of = {name: int(b) for b, name in bindings}
    changed = 0
    for pos, name in declared:
        if stored_to(code, name) or flags[binding_of[name]] != "1":
            continue
        old = f"var<storage, read_write> {name} "
        new = f"var<storage, read> {name} " + " " * (len(old) - len(f"var<storage, read> {name} "))
        data[offset + pos:offset + pos + len(old)] = new.encode()
        flags[binding_of[name]] = "0"
        changed += 1
    if changed:
        new_tag = f"{TAG}[{','.join(flags)}]"
        data[tag_offset:tag_offset + len(new_tag)] = new_tag.encode()
    return changed


def restore_read_only(data: bytearray) -> int:
    """Repair every packed WebGPU module found in ``data`` (an object file or library) in place;
    returns how many buffer declarations became read-only."""
    changed, start = 0, 0
    while (found := data.find(KIND, start)) >= 0:
        start = found + len(KIND)
        try:
            size = _Reader(data, start, len(data)).count()
            if start + 8 + size > len(data):
                continue
            reader = _Reader(data, start + 8, start + 8 + size)
            tags, sources = _read_module(reader)
        except (ValueError, UnicodeDecodeError):
            continue
        if reader.pos != reader.end:
            continue  # the bytes after "webgpu" are not a whole module
        for name, source in sources.items():
            changed += _patch_function(data, tags.get(name, []), source)
    return changed
