"""Checks of a package's files before the runtime maps them: a damaged file ends in one
:class:`~pipeline.errors.PipelineError` line instead of a crash inside TVM.

A shared library cut short (an interrupted copy or download) passes ``dlopen``'s first checks,
and the process then dies with ``SIGBUS`` ("Bus error", exit status 135) when the dynamic loader
touches a mapped page past the end of the file.  :func:`check_library` refuses such files from
their own header tables; :func:`check_tensor_cache` refuses a ``tensor-cache.json`` whose shards
are missing or shorter than its records need.

Formats (facts of the published layouts, read with :mod:`struct`):

- ELF (System V gABI, ``elf.h``): ``e_ident`` (16 bytes: ``\\x7fELF``, class 1 = 32-bit /
  2 = 64-bit, data 1 = little / 2 = big endian), then ``e_type``, ``e_machine``, ``e_version``,
  ``e_entry``, ``e_phoff``, ``e_shoff``, ``e_flags``, ``e_ehsize``, ``e_phentsize``,
  ``e_phnum``, ``e_shentsize``, ``e_shnum``, ``e_shstrndx``; program headers ``p_type`` /
  ``p_offset`` / ``p_filesz`` (``PT_LOAD`` = 1); section headers ``sh_type`` / ``sh_offset`` /
  ``sh_size`` (``SHT_NOBITS`` = 8 has no bytes in the file).
- Mach-O (``mach-o/loader.h``, ``mach-o/fat.h``): ``mach_header(_64)`` (magic ``0xfeedface`` /
  ``0xfeedfacf``, ``ncmds``, ``sizeofcmds``), load commands ``cmd`` / ``cmdsize``, segments
  ``LC_SEGMENT`` = 0x1 / ``LC_SEGMENT_64`` = 0x19 with ``fileoff`` / ``filesize``, ``LC_SYMTAB`` = 0x2
  with ``symoff`` / ``nsyms`` / ``stroff`` / ``strsize``; universal
  files (``0xcafebabe`` / ``0xcafebabf``, big-endian) list each slice's ``offset`` / ``size``.
- tar (POSIX ustar, through :mod:`tarfile`): each member's data within the file.
"""

from __future__ import annotations

import json
import struct
import tarfile
from pathlib import Path

from ..errors import PipelineError

ELF_MAGIC = b"\x7fELF"
ET_DYN = 3  # a shared object
PT_LOAD = 1
SHT_NOBITS = 8
# EI_CLASS -> (header size, e_ident-relative layout after e_ident: struct format of e_type..e_shstrndx)
ELF_CLASSES = {1: (52, "HHIIIIIHHHHHH"), 2: (64, "HHIQQQIHHHHHH")}
# EI_CLASS -> struct formats of a program header's (p_type, p_offset, p_filesz) and a section
# header's (sh_type, sh_offset, sh_size), with the fields skipped in between as pad bytes.
ELF_PHDR = {1: "I I 4x 4x I", 2: "I 4x Q 8x 8x Q"}  # struct ignores the spaces
ELF_SHDR = {1: "4x I 4x 4x I I", 2: "4x I 8x 8x Q Q"}

MACHO_MAGICS = {0xFEEDFACE: 28, 0xFEEDFACF: 32}  # magic (as read in the file's byte order) -> header size
FAT_MAGICS = {0xCAFEBABE: (">IIIII", 20), 0xCAFEBABF: (">IIQQII", 32)}  # universal header -> slice record
LC_SEGMENT, LC_SEGMENT_64, LC_SYMTAB = 0x1, 0x19, 0x2


def _damaged(path: Path, what: str, expected: str) -> PipelineError:
    return PipelineError(f"{path}: {what}, expected {expected} (the file is damaged or cut short: "
                         f"rebuild the package or copy it again)")


def _within(path: Path, size: int, what: str, start: int, length: int) -> None:
    if start + length > size:
        raise _damaged(path, f"{what} ends at byte {start + length} but the file has {size} bytes",
                       "all of it within the file")


def check_elf(path: Path, data: bytes) -> None:
    """Check an ELF shared object's header, program headers, loadable segments and section
    header table (with each section's bytes) lie within ``data`` (the whole file).

    Raises:
        PipelineError: not ELF, not a shared object (``ET_DYN``), or a table or segment past the end.
    """
    size = len(data)
    if data[:4] != ELF_MAGIC:
        raise _damaged(path, f"starts with {data[:4]!r} ({size} bytes)", "an ELF shared library (b'\\x7fELF')")
    _within(path, size, "the ELF identification (e_ident)", 0, 16)
    elf_class, elf_data = data[4], data[5]
    if elf_class not in ELF_CLASSES or elf_data not in (1, 2):
        raise _damaged(path, f"ELF class {elf_class}, data encoding {elf_data}",
                       "class 1 or 2 (32/64-bit) and encoding 1 or 2 (little/big endian)")
    order = "<" if elf_data == 1 else ">"
    header_size, layout = ELF_CLASSES[elf_class]
    _within(path, size, "the ELF header", 0, header_size)
    (e_type, _machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum, shentsize, shnum,
     _shstrndx) = struct.unpack_from(order + layout, data, 16)
    if e_type != ET_DYN:
        raise _damaged(path, f"ELF type {e_type}", f"{ET_DYN} (a shared object)")
    phdr, shdr = order + ELF_PHDR[elf_class], order + ELF_SHDR[elf_class]
    if phnum:
        _within(path, size, f"the ELF program header table ({phnum} x {phentsize} bytes at {phoff})", phoff,
                phnum * phentsize)
        for i in range(phnum):
            p_type, p_offset, p_filesz = struct.unpack_from(phdr, data, phoff + i * phentsize)
            if p_type == PT_LOAD:
                _within(path, size, f"ELF loadable segment {i} ({p_filesz} bytes at {p_offset})", p_offset, p_filesz)
    if shoff:
        _within(path, size, "the ELF section header table's first entry", shoff, shentsize)
        if shnum == 0:  # more sections than e_shnum holds: the count is section 0's sh_size
            shnum = struct.unpack_from(shdr, data, shoff)[2]
        _within(path, size, f"the ELF section header table ({shnum} x {shentsize} bytes at {shoff})", shoff,
                shnum * shentsize)
        for i in range(shnum):
            sh_type, sh_offset, sh_size = struct.unpack_from(shdr, data, shoff + i * shentsize)
            if sh_type != SHT_NOBITS:
                _within(path, size, f"ELF section {i} ({sh_size} bytes at {sh_offset})", sh_offset, sh_size)


def check_macho(path: Path, data: bytes, start: int = 0, end: int | None = None) -> None:
    """Check a Mach-O file (or the slice ``data[start:end]`` of a universal one): its load
    commands, every segment's file bytes and the symbol and string tables lie within it.

    Raises:
        PipelineError: not Mach-O, or load commands, a segment or a slice past the end.
    """
    end = len(data) if end is None else end
    size = end - start
    magic = int.from_bytes(data[start:start + 4], "big") if size >= 4 else None
    if start == 0 and magic in FAT_MAGICS:
        record, record_size = FAT_MAGICS[magic]
        _within(path, size, "the Mach-O universal header", 0, 8)
        count = struct.unpack_from(">I", data, 4)[0]
        _within(path, size, f"the Mach-O universal slice table ({count} slices)", 8, count * record_size)
        for i in range(count):
            offset, length = struct.unpack_from(record, data, 8 + i * record_size)[2:4]
            _within(path, size, f"Mach-O universal slice {i} ({length} bytes at {offset})", offset, length)
            check_macho(path, data, offset, offset + length)
        return
    order = next((o for o in "<>" if size >= 4 and struct.unpack_from(o + "I", data, start)[0] in MACHO_MAGICS), None)
    if order is None:
        raise _damaged(path, f"starts with {data[start:start + 4]!r} ({size} bytes)",
                       "a Mach-O library (magic 0xfeedface / 0xfeedfacf, or a universal 0xcafebabe)")
    magic = struct.unpack_from(order + "I", data, start)[0]
    header_size = MACHO_MAGICS[magic]
    _within(path, size, "the Mach-O header", 0, header_size)
    ncmds, sizeofcmds = struct.unpack_from(order + "II", data, start + 16)
    _within(path, size, f"the Mach-O load command area ({sizeofcmds} bytes)", header_size, sizeofcmds)
    at = header_size
    for i in range(ncmds):
        cmd, cmdsize = struct.unpack_from(order + "II", data, start + at)
        if cmdsize < 8 or at + cmdsize > header_size + sizeofcmds:
            raise _damaged(path, f"Mach-O load command {i} has size {cmdsize} at {at}",
                           f"at least 8 bytes within the {sizeofcmds} bytes of load commands")
        if cmd in (LC_SEGMENT, LC_SEGMENT_64):
            fmt = order + ("II" if cmd == LC_SEGMENT else "QQ")
            fileoff, filesize = struct.unpack_from(fmt, data, start + at + (32 if cmd == LC_SEGMENT else 40))
            _within(path, size, f"Mach-O segment of load command {i} ({filesize} bytes at {fileoff})", fileoff,
                    filesize)
        if cmd == LC_SYMTAB:  # symtab_command: symoff, nsyms (nlist 12 / nlist_64 16 bytes), stroff, strsize
            symoff, nsyms, stroff, strsize = struct.unpack_from(order + "IIII", data, start + at + 8)
            _within(path, size, f"the Mach-O symbol table ({nsyms} symbols at {symoff})", symoff,
                    nsyms * (16 if header_size == 32 else 12))
            _within(path, size, f"the Mach-O string table ({strsize} bytes at {stroff})", stroff, strsize)
        at += cmdsize


def check_tar(path: Path) -> None:
    """Check a ``.tar`` (objects TVM links when it loads one) reads through, every member's data
    within the file.

    Raises:
        PipelineError: not a tar archive, or a member cut short.
    """
    size = path.stat().st_size
    try:
        with tarfile.open(path) as archive:
            members = archive.getmembers()
    except (tarfile.TarError, OSError) as err:
        raise _damaged(path, f"tarfile cannot read it ({err})", "a tar archive of object files") from None
    for member in members:
        _within(path, size, f"tar member {member.name} ({member.size} bytes at {member.offset_data})",
                member.offset_data, member.size)


def check_library(path: Path) -> None:
    """Check a model library before TVM loads it, by its kind: ``.so`` / ``.dylib`` by their
    header tables (ELF or Mach-O, whichever the file's magic says), ``.tar`` by its members.
    A ``.wasm`` is not checked (TVM's native runtime does not load it; the caller refuses it).

    Raises:
        PipelineError: one line naming ``path``, what is wrong and what was expected.
    """
    path = Path(path)
    if path.suffix == ".wasm":
        return
    if path.suffix == ".tar":
        check_tar(path)
        return
    data = path.read_bytes()
    if data[:4] == ELF_MAGIC:
        check_elf(path, data)
    elif len(data) >= 4 and (int.from_bytes(data[:4], "big") in FAT_MAGICS
                             or int.from_bytes(data[:4], "big") in MACHO_MAGICS
                             or int.from_bytes(data[:4], "little") in MACHO_MAGICS):
        check_macho(path, data)
    else:
        raise _damaged(path, f"starts with {data[:4]!r} ({len(data)} bytes)",
                       "a shared library (ELF b'\\x7fELF' or Mach-O)")


def check_tensor_cache(directory: Path) -> dict:
    """Check ``directory``'s ``tensor-cache.json`` against its shard files: each shard it lists is
    present and at least as long as its records need (the shard's ``nbytes`` and every tensor's
    ``byteOffset + nbytes``).  Returns the parsed JSON.

    Raises:
        PipelineError: no or unreadable ``tensor-cache.json``, a shard missing or too short.
    """
    directory = Path(directory)
    index = directory / "tensor-cache.json"
    if not index.is_file():
        raise PipelineError(f"{index}: not found, expected the weights' index (tensor-cache.json) in {directory}")
    try:
        cache = json.loads(index.read_text())
        shards = [(r["dataPath"], max([int(r.get("nbytes", 0))]
                                       + [int(t["byteOffset"]) + int(t["nbytes"]) for t in r.get("records", [])]))
                  for r in cache["records"]]
    except (ValueError, KeyError, TypeError) as err:
        raise PipelineError(f"{index}: unreadable ({type(err).__name__}: {err}), expected TVM's tensor cache "
                            f"index (records with dataPath, nbytes and tensor records)") from None
    for name, needed in shards:
        shard = directory / name
        if not shard.is_file():
            raise PipelineError(f"{shard}: weight shard listed in {index} not found, expected {needed} bytes")
        size = shard.stat().st_size
        if size < needed:
            raise PipelineError(f"{shard}: weight shard has {size} bytes, expected at least {needed} "
                                f"(the records in {index}; the file is cut short)")
    return cache
