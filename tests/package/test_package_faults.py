"""Damaged packages end in one ``error:`` line and exit status 2: a library cut short (TVM's
loader would die of a bus error, exit 135, nothing on stderr), a weight shard missing or cut short
(a traceback) -- the model's and the drafter's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.package.chat_config import RUNTIME_CONFIG
from pipeline.package.check import check_library, check_tensor_cache

ROOT = Path(__file__).resolve().parents[2]


def copy_package(tiny_package, tmp_path) -> Path:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_package[0], package)
    return package


def model_lib(package: Path) -> Path:
    return package / json.loads((package / RUNTIME_CONFIG).read_text())["model_lib"]["cpu"]


def truncate(path: Path, keep: int) -> int:
    """Cut ``path`` to ``keep`` bytes; returns its former size."""
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return len(data)


def copy_weights(package: Path, directory: Path) -> None:
    """Copy the package's weights (``tensor-cache.json`` and its shards) into ``directory``."""
    directory.mkdir()
    for file in package.iterdir():
        if file.name.startswith(("params_shard_", "tensor-cache")):
            shutil.copy(file, directory / file.name)


def with_drafter(package: Path, library: str, weights: str = "drafter") -> None:
    """Name ``library`` and ``weights`` as the package's ``mtp`` drafter (the tiny Gemma 3 library
    has the hidden-state functions the ``mtp`` family reads)."""
    runtime = json.loads((package / RUNTIME_CONFIG).read_text())
    runtime["speculative"].update(drafter_lib={"cpu": library}, drafter_weights=weights, drafter_family="mtp")
    (package / RUNTIME_CONFIG).write_text(json.dumps(runtime))


def run_cli(package: Path, *flags) -> subprocess.CompletedProcess:
    """``mlc-mtp generate`` in a child process (a bus error would kill the test's own process)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "generate", str(package), "--prompt", "w4 w5",
                           "--max-tokens", "2", *flags], capture_output=True, text=True, check=False, env=env,
                          cwd=ROOT, timeout=600)


def assert_one_line(proc_or_status, err: str | None = None, *needles: str) -> str:
    if isinstance(proc_or_status, subprocess.CompletedProcess):
        status, err = proc_or_status.returncode, proc_or_status.stderr
    else:
        status = proc_or_status
    lines = err.strip().splitlines()
    assert status == 2, (status, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_truncated_model_library_is_refused_before_tvm_maps_it(tiny_package, tmp_path):
    package = copy_package(tiny_package, tmp_path)
    library = model_lib(package)
    size = truncate(library, library.stat().st_size // 2)
    line = assert_one_line(run_cli(package), None, str(library), f"the file has {size // 2} bytes", "ELF",
                           "expected all of it within the file")
    assert "ends at byte" in line


def test_a_truncated_drafter_library_is_refused_before_tvm_maps_it(tiny_package, tmp_path):
    package = copy_package(tiny_package, tmp_path)
    library = model_lib(package)
    drafter = library.with_name("drafter-cpu.so")
    shutil.copy(library, drafter)
    copy_weights(package, package / "drafter")
    with_drafter(package, f"lib/{drafter.name}")
    truncate(drafter, drafter.stat().st_size - 100)  # only the section header table's end is missing
    assert_one_line(run_cli(package, "--speculative", "mtp"), None, str(drafter), "ELF section header table")


def test_a_missing_weight_shard_is_refused(tiny_package, tmp_path, capsys):
    package = copy_package(tiny_package, tmp_path)
    shard = package / json.loads((package / "tensor-cache.json").read_text())["records"][-1]["dataPath"]
    shard.unlink()
    status = main(["generate", str(package), "--prompt", "w4 w5", "--max-tokens", "2"])
    assert_one_line(status, capsys.readouterr().err, str(shard), "not found", "tensor-cache.json", "bytes")


def test_a_short_weight_shard_is_refused(tiny_package, tmp_path, capsys):
    package = copy_package(tiny_package, tmp_path)
    records = json.loads((package / "tensor-cache.json").read_text())["records"]
    shard = package / records[0]["dataPath"]
    needed = max(t["byteOffset"] + t["nbytes"] for t in records[0]["records"])
    truncate(shard, needed - 1)
    status = main(["generate", str(package), "--prompt", "w4 w5", "--max-tokens", "2"])
    assert_one_line(status, capsys.readouterr().err, str(shard), f"has {needed - 1} bytes",
                    f"expected at least {needed}")


def test_a_missing_drafter_weight_shard_is_refused(tiny_package, tmp_path, capsys):
    package = copy_package(tiny_package, tmp_path)
    library = model_lib(package)
    copy_weights(package, package / "drafter")
    shard = package / "drafter" / json.loads((package / "tensor-cache.json").read_text())["records"][-1]["dataPath"]
    shard.unlink()
    with_drafter(package, str(library.relative_to(package)))
    status = main(["generate", str(package), "--prompt", "w4 w5", "--max-tokens", "2", "--speculative", "mtp"])
    assert_one_line(status, capsys.readouterr().err, str(shard), "not found")


def test_the_checks_pass_the_built_package(tiny_package):
    package = tiny_package[0]
    check_library(model_lib(package))
    assert check_tensor_cache(package)["records"]


@pytest.mark.parametrize("keep, needle", [(0, "starts with b''"), (10, "the ELF identification"),
                                          (40, "the ELF header"), (1000, "ELF loadable segment 0")])
def test_every_cut_of_a_library_is_named(tiny_package, tmp_path, keep, needle):
    library = tmp_path / "lib.so"
    shutil.copy(model_lib(tiny_package[0]), library)
    truncate(library, keep)
    with pytest.raises(PipelineError, match=needle):
        check_library(library)


def test_a_cut_tar_is_refused(tmp_path):
    import tarfile

    member = tmp_path / "lib0.o"
    member.write_bytes(b"\0" * 5000)
    archive = tmp_path / "model.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(member, arcname=member.name)
    check_library(archive)
    truncate(archive, 3000)
    with pytest.raises(PipelineError, match=r"model\.tar: .*(lib0\.o|tarfile cannot read it)"):
        check_library(archive)


@pytest.mark.parametrize("triple", ["arm64-apple-macos", "x86_64-apple-macos"])
def test_a_cut_mach_o_is_refused(tmp_path, triple):
    """A Mach-O object that TVM's LLVM writes for macOS (the format of a Metal package's ``.dylib``)."""
    import tvm
    from tvm import te

    a = te.placeholder((16,), name="a")
    func = te.create_prim_func([a, te.compute((16,), lambda i: a[i] + 1.0, name="b")])
    obj = tmp_path / "model.o"  # TVM names the format by the suffix
    tvm.compile(func, target=tvm.target.Target({"kind": "llvm", "mtriple": triple})).mod.write_to_file(str(obj))
    library = obj.rename(tmp_path / "model.dylib")
    check_library(library)
    size = library.stat().st_size
    for keep, needle in ((size - 1, "the Mach-O string table"), (size // 2, "Mach-O segment of load command 0"),
                         (200, "the Mach-O load command area"), (20, "the Mach-O header")):
        truncate(library, keep)
        with pytest.raises(PipelineError, match=needle):
            check_library(library)
