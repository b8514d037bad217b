"""The headers we write for TVM's wasm runtime (``pipeline/compile/wasm_headers``), compiled with the
host's g++ against tvm-ffi's headers (``tests/helpers/headers_check.cc``): the byte layout of every
serialized type, round trips, base64 against Python's, the RPC byte queue against a model, and
float16 widening of all 65536 bit patterns against numpy.  Runs without emscripten."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm_ffi.libinfo

from pipeline.compile.wasm import HEADERS

CHECK = Path(__file__).parents[1] / "helpers" / "headers_check.cc"


def _string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> dict[str, list[str]]:
    if shutil.which("g++") is None:
        pytest.skip("g++ not found (apt-get install g++)")
    exe = tmp_path_factory.mktemp("headers") / "check"
    lib = Path(tvm_ffi.libinfo.find_libtvm_ffi()).parent
    subprocess.run(["g++", "-std=c++17", "-O1", f"-I{tvm_ffi.libinfo.find_include_path()}",
                    f"-I{tvm_ffi.libinfo.find_dlpack_include_path()}", f"-I{HEADERS}", f"-I{HEADERS / 'include'}",
                    f"-I{HEADERS / '3rdparty' / 'compiler-rt'}", str(CHECK), "-o", str(exe), f"-L{lib}", "-ltvm_ffi",
                    f"-Wl,-rpath,{lib}"], check=True)
    out: dict[str, list[str]] = {}
    for line in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines():
        key, _, rest = line.partition(" ")
        out.setdefault(key, []).append(rest)
    return out


def test_serialized_layout_is_tvms(lines):
    """Little-endian scalars; strings, vectors, arrays as a uint64 count and the elements; maps as a
    count and key/value pairs; DLDataType as code, bits, lanes; DLDevice as two int32."""
    expected = b"".join([
        struct.pack("<B", 7), struct.pack("<i", -2), struct.pack("<Q", 1 << 40), struct.pack("<d", 1.5),
        struct.pack("<h", 5),                                                       # enum over int16
        _string(b"abc"),
        struct.pack("<Qqq", 2, 1, -2),                                              # vector<int64>
        struct.pack("<Q", 2) + _string(b"x") + _string(b""),                        # vector<string>
        struct.pack("<i", 9) + _string(b"p"),                                       # pair
        struct.pack("<Q", 1) + _string(b"k") + _string(b"v"),                       # unordered_map
        _string("héllo".encode()),                                                  # ffi::String
        struct.pack("<Q", 2) + _string(b"a") + _string(b"bc"),                      # ffi::Array
        struct.pack("<Q", 1) + _string(b"key") + _string(b"val"),                   # ffi::Map
        struct.pack("<BBH", 2, 32, 1),                                              # DLDataType
        struct.pack("<ii", 15, 3),                                                  # DLDevice (webgpu, 3)
    ])
    assert bytes.fromhex(lines["serial"][0]) == expected
    assert lines["roundtrip"] == ["ok"]
    assert lines["truncated"] == ["ok"]  # a read past the end reports failure


def test_base64_matches_python(lines):
    pairs = [entry.split(" ") for entry in lines["b64"]]
    assert len(pairs) == 7
    for hex_input, *encoded in pairs:
        assert "".join(encoded) == base64.b64encode(bytes.fromhex(hex_input)).decode()
    assert bytes.fromhex(lines["unb64"][0]) == bytes(range(256))  # decoded across inserted whitespace


def test_ring_buffer_arena_and_prefix(lines):
    assert lines["ring"] == ["ok"]
    assert lines["arena"] == ["ok"]
    assert lines["starts"] == ["1 0 1"]


def test_float16_widening_is_exact(lines):
    got = np.array([int(h, 16) for h in lines["f16"]], dtype=np.uint32)
    want = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32).view(np.uint32)
    assert got.shape == want.shape
    mismatched = np.flatnonzero(got != want)
    assert mismatched.size == 0, f"float16 patterns {mismatched[:5]} widen wrongly"
