"""Read-only buffer repair of TVM 0.26's WebGPU modules (``pipeline.compile.webgpu_access``): on a
kernel compiled by the installed TVM (a barrier inside a loop bounded by a value read from a buffer,
the shape WebGPU rejects when that buffer is read-write) and on hand-made module bytes."""

from __future__ import annotations

import re
import struct
import tarfile

import pytest
import tvm
from tvm.script import tirx as T

from pipeline.compile.webgpu_access import restore_read_only, stored_to


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _module(functions: dict[str, tuple[str, str]]) -> bytes:
    """Packed webgpu module bytes: {name: (paramWriteAccess tag, wgsl)}."""
    fmap = struct.pack("<Q", len(functions))
    for name, (tag, _) in functions.items():
        fmap += _string(name) + _string(name) + struct.pack("<Q", 1) + struct.pack("<BBH", 3, 0, 1)
        fmap += struct.pack("<Q", 2) + _string("threadIdx.x") + _string(tag) + struct.pack("<Q", 0)
    smap = struct.pack("<Q", len(functions)) + b"".join(_string(n) + _string(c) for n, (_, c) in functions.items())
    payload = fmap + smap
    return _string("webgpu") + struct.pack("<Q", len(payload)) + payload


WGSL = """@group(0) @binding(0) var<storage, read_write> idx_ptr : array<i32>;
@group(0) @binding(1) var<storage, read_write> out_ptr : array<f32>;
@group(0) @binding(2) var<storage, read_write> src_ptr : array<f32>;
fn k() {
  for (var i : i32 = 0i; i < idx_ptr[1i]; i++) {
    workgroupBarrier();
    out_ptr[idx_ptr[i]] = (src_ptr[i] + out_ptr[idx_ptr[i]]);
  }
}
"""


def test_never_written_buffers_become_read_only_with_lengths_kept():
    blob = bytearray(b"prefix" + _module({"k": ("paramWriteAccess:[1,1,1]", WGSL)}) + b"suffix")
    before = len(blob)
    assert restore_read_only(blob) == 2
    assert len(blob) == before and blob.startswith(b"prefix") and blob.endswith(b"suffix")
    text = blob.decode("latin-1")
    assert re.search(r"var<storage, read> idx_ptr +:", text)
    assert re.search(r"var<storage, read> src_ptr +:", text)
    assert "var<storage, read_write> out_ptr :" in text
    assert "paramWriteAccess:[0,1,0]" in text
    assert restore_read_only(blob) == 0  # idempotent


def test_unknown_layouts_are_left_alone():
    mismatched = bytearray(_module({"k": ("paramWriteAccess:[1,1]", WGSL)}))  # 2 flags, 3 buffers
    untouched = bytes(mismatched)
    assert restore_read_only(mismatched) == 0 and bytes(mismatched) == untouched
    truncated = bytearray(_module({"k": ("paramWriteAccess:[1,1,1]", WGSL)})[:-5])
    assert restore_read_only(truncated) == 0


def test_stores_and_pointer_uses_count_as_writes():
    assert stored_to("a[b[i]] = 1.0;", "a") and not stored_to("a[b[i]] = 1.0;", "b")
    assert not stored_to("x = a[i] == 2;", "a")
    assert stored_to("atomicAdd(&a[i], 1);", "a") and stored_to("let p = &a;", "a")
    assert not stored_to("x = aa[i] + a_b[i];", "a")


@T.prim_func
def gather_rows(indptr: T.Buffer((3,), "int32"), src: T.Buffer((64,), "float32"), out: T.Buffer((2, 32), "float32")):
    """One work-group per row; the loop bound comes from ``indptr`` and the loop holds a barrier."""
    for row in T.thread_binding(2, thread="blockIdx.x"):
        shared = T.alloc_buffer((32,), "float32", scope="shared")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            out[row, tx] = T.float32(0)
            for j in range(indptr[row + 1] - indptr[row]):
                shared[tx] = src[(indptr[row] + j) % 64]
                T.tvm_storage_sync("shared")
                out[row, tx] = out[row, tx] + shared[(tx + 1) % 32]
                T.tvm_storage_sync("shared")


@pytest.mark.compile
def test_repairs_a_kernel_compiled_by_tvm(tmp_path):
    target = tvm.target.Target({"kind": "webgpu", "host": {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}})
    tvm.compile(tvm.IRModule({"gather_rows": gather_rows}), target=target).export_library(str(tmp_path / "k.tar"))
    with tarfile.open(tmp_path / "k.tar") as archive:
        archive.extractall(tmp_path, filter="data")
    blob = bytearray((tmp_path / "devc.o").read_bytes())
    assert re.search(rb"var<storage, read_write> indptr_ptr", blob)  # TVM 0.26 declares it writable
    assert restore_read_only(blob) == 2
    assert re.search(rb"var<storage, read> indptr_ptr +:", blob) and re.search(rb"var<storage, read> src_ptr +:", blob)
    assert re.search(rb"var<storage, read_write> out_ptr :", blob)
    assert re.search(rb"paramWriteAccess:\[0,1,0\]", blob)
