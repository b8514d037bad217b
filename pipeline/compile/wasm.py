"""WebGPU libraries as MLC ships them: a ``.wasm`` holding the model's host code, its WGSL shaders
and TVM's wasm runtime, linked with emscripten; and the JavaScript runtime (tvmjs) that loads it.

Everything is built from what the pinned packages ship, with Debian's emscripten (``emcc``):

- TVM's wasm runtime (``tvm/web/emcc/*.cc`` and the ``src/runtime`` files they include) from the
  ``apache-tvm`` wheel, compiled against the tvm-ffi C++ sources of the ``apache-tvm-ffi`` sdist of
  the same version (the wheel ships only its headers), plus the few headers neither ships
  (``wasm_headers/``, ours).  The units are emitted as wasm object files, not LLVM bitcode:
  emscripten 3.1.6's ``wasm-ld`` (LLVM 14) cannot read the opaque-pointer bitcode of TVM's LLVM.
  TVM's link helper (``tvm.support.emcc.create_tvmjs_wasm``) looks the units up by their bitcode
  names under ``$TVM_HOME/web/dist/wasm``; they are stored under those names.
- tvmjs from the TypeScript the wheel ships (``tvm/web/src``, package ``tvmjs`` of the same
  version), with emscripten's JavaScript glue for the runtime linked as TVM's ``web/Makefile``
  does it, bundled by esbuild (``node_modules`` of the npm folder :data:`WEB_DIR`, from
  ``scripts/setup_webgpu.sh``, or ``esbuild`` on ``PATH``).

The results live in :func:`toolchain_dir`, keyed by the TVM and tvm-ffi versions, the emcc
version and our headers; ``python -m pipeline.compile.wasm`` builds them (minutes, once).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import tvm
import tvm_ffi

from ..errors import PipelineError
from ..web import SETUP_HINT, WEB_DIR
from .webgpu_access import restore_read_only

HEADERS = Path(__file__).with_name("wasm_headers")  # package data: in the wheel too
RUNTIME_UNITS = ("wasm_runtime", "tvmjs_support", "webgpu_runtime")
# TVM's web/Makefile: compile and glue-link flags of the runtime.
CFLAGS = ["-O3", "-std=c++17", "-Wno-ignored-attributes"]
GLUE_FLAGS = ["--no-entry", "-s", "WASM_BIGINT=1", "-s", "ALLOW_MEMORY_GROWTH=1", "-s", "STANDALONE_WASM=1",
              "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0", "-s", "ASYNCIFY=1"]


def find_emcc() -> str:
    """Path of ``emcc``.  Raises PipelineError naming the package when it is absent."""
    emcc = shutil.which("emcc")
    if emcc is None:
        raise PipelineError(f"emcc not found: WebGPU libraries are linked with emscripten; {SETUP_HINT} "
                            f"(apt-get install emscripten)")
    return emcc


def _emcc_env() -> dict[str, str]:
    """Debian's emcc runs its JavaScript optimizer with Node, which must find Debian's acorn."""
    env = dict(os.environ)
    paths = [p for p in (env.get("NODE_PATH", ""), "/usr/share/nodejs") if p]
    env["NODE_PATH"] = os.pathsep.join(paths)
    return env


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=_emcc_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise PipelineError(f"{what} failed (exit {proc.returncode}): {last[0]}")


def toolchain_dir() -> Path:
    """Where the runtime objects and tvmjs live: ``$MLC_MTP_WEBGPU_HOME`` or
    ``~/.cache/mlc-mtp-webgpu``, then a folder per TVM / tvm-ffi / emcc version and header set."""
    root = Path(os.environ.get("MLC_MTP_WEBGPU_HOME", Path.home() / ".cache" / "mlc-mtp-webgpu"))
    digest = hashlib.blake2b(digest_size=6)
    for header in sorted(HEADERS.rglob("*.h")):
        digest.update(str(header.relative_to(HEADERS)).encode() + header.read_bytes())
    emcc = shutil.which("emcc")
    version = subprocess.run([emcc, "--version"], capture_output=True, text=True, env=_emcc_env(),
                             check=False).stdout.split("\n", 1)[0] if emcc else "no-emcc"
    digest.update(version.encode())
    return root / f"tvm{tvm.__version__}-ffi{tvm_ffi.__version__}-{digest.hexdigest()}"


def _ffi_sources(dest: Path) -> Path:
    """The tvm-ffi source tree of the installed version (pip downloads its sdist once)."""
    version = tvm_ffi.__version__
    tree = dest / f"apache_tvm_ffi-{version}"
    if (tree / "src" / "ffi").is_dir():
        return tree
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                               "apache-tvm-ffi", f"apache-tvm-ffi=={version}", "-d", tmp],
                              capture_output=True, text=True, check=False)
        sdists = list(Path(tmp).glob("apache_tvm_ffi-*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            raise PipelineError(f"apache-tvm-ffi=={version} sdist: pip download failed; the wasm runtime needs "
                                f"tvm-ffi's C++ sources ({SETUP_HINT} where PyPI is reachable)")
        with tarfile.open(sdists[0]) as archive:
            archive.extractall(dest, filter="data")
    return tree


def _stage_sources(root: Path, ffi: Path) -> None:
    """Lay out TVM's source tree as ``web/Makefile`` expects it: the wheel's ``include``, ``src``
    and ``web``, ``3rdparty/tvm-ffi`` (the sdist tree ``ffi``), and our headers on top."""
    wheel = Path(tvm.__file__).parent
    for part in ("include", "src", "web"):
        if not (wheel / part).is_dir():
            raise PipelineError(f"{wheel / part}: missing from the apache-tvm wheel; the wasm runtime is built "
                                f"from it (apache-tvm=={tvm.__version__})")
        shutil.copytree(wheel / part, root / part, dirs_exist_ok=True)
    (root / "3rdparty").mkdir(exist_ok=True)
    (root / "3rdparty" / "tvm-ffi").symlink_to(ffi, target_is_directory=True)
    shutil.copytree(HEADERS, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))


def _compile_units(root: Path, out: Path) -> None:
    includes = [f"-I{root}", f"-I{root / 'include'}", f"-I{root / '3rdparty/tvm-ffi/include'}",
                f"-I{root / '3rdparty/tvm-ffi/3rdparty/dlpack/include'}", f"-I{root / '3rdparty/compiler-rt'}"]
    emcc = find_emcc()
    procs = {
        unit: subprocess.Popen([emcc, *includes, *CFLAGS, "-c", "-o", str(out / f"{unit}.bc"),
                                str(root / "web" / "emcc" / f"{unit}.cc")],
                               env=_emcc_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for unit in RUNTIME_UNITS
    }
    outputs = {unit: proc.communicate()[0] for unit, proc in procs.items()}  # all finish, even after a failure
    for unit, proc in procs.items():
        if proc.returncode != 0:
            errors = [line for line in outputs[unit].splitlines() if "error" in line] or ["(no output)"]
            raise PipelineError(f"compiling TVM's wasm runtime unit {unit}.cc failed: {errors[0]}")


def runtime_home() -> Path:
    """A ``TVM_HOME`` for :func:`tvm.support.emcc.create_tvmjs_wasm`: ``web/dist/wasm`` holds the
    runtime units (wasm objects under their bitcode names).  Builds them when absent."""
    home = toolchain_dir()
    wasm_dir = home / "web" / "dist" / "wasm"
    if all((wasm_dir / f"{unit}.bc").is_file() for unit in RUNTIME_UNITS):
        return home
    find_emcc()
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        root, out = Path(tmp) / "tvm", Path(tmp) / "wasm"
        root.mkdir()
        out.mkdir()
        _stage_sources(root, _ffi_sources(home))
        _compile_units(root, out)
        try:
            shutil.rmtree(home / "source", ignore_errors=True)
            (home / "web" / "dist").mkdir(parents=True, exist_ok=True)
            root.rename(home / "source")
            out.rename(wasm_dir)
        except OSError:  # another process built them at the same time and moved its copy in first
            if not all((wasm_dir / f"{unit}.bc").is_file() for unit in RUNTIME_UNITS):
                raise
    return home


@contextlib.contextmanager
def _environ(**values: str):
    """Set environment variables for the duration of a block (TVM's helpers read them there)."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def link_wasm(output: str | Path, objects: list[str], options: list[str] | None = None) -> None:
    """Link wasm object files of a model (``export_library``'s host code and packed device code)
    with TVM's wasm runtime into ``output`` through TVM's ``create_tvmjs_wasm``; written to a
    temporary name, then renamed.  Usable as ``export_library(..., fcompile=link_wasm)``.

    The packed WebGPU module is linked from a copy whose never-written buffers are declared
    read-only (:mod:`pipeline.compile.webgpu_access`: TVM 0.26 declares them all read-write, and
    WebGPU then rejects kernels with barriers under data-dependent control flow)."""
    from tvm.support.emcc import create_tvmjs_wasm

    home, output = runtime_home(), Path(output)
    partial = output.with_name(f".partial-{output.name}")  # emcc picks its output kind by suffix
    with tempfile.TemporaryDirectory() as tmp, _environ(TVM_HOME=str(home), NODE_PATH=_emcc_env()["NODE_PATH"]):
        repaired = []
        for i, obj in enumerate(objects):
            data = bytearray(Path(obj).read_bytes())
            restore_read_only(data)
            repaired.append(Path(tmp) / f"{i}-{Path(obj).name}")
            repaired[-1].write_bytes(data)
        try:
            create_tvmjs_wasm(str(partial), [str(o) for o in repaired], options=options, cc=find_emcc())
        except RuntimeError as err:
            partial.unlink(missing_ok=True)
            last = str(err).strip().splitlines()[-1]
            raise PipelineError(f"{output}: linking the WebGPU library failed: {last}") from None
    partial.rename(output)


# export_library writes object files, not bitcode (see module doc): TVM reads fcompile.object_format.
setattr(link_wasm, "object_format", "o")  # noqa: B010  # mypy knows no attributes on a function


def link_library_tar(library: str | Path, output: str | Path) -> Path:
    """The ``.wasm`` for a webgpu build exported as a ``.tar`` of wasm32 objects."""
    library, output = Path(library), Path(output)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with tarfile.open(library) as archive:
                archive.extractall(tmp, filter="data")
        except (OSError, tarfile.TarError) as err:
            raise PipelineError(f"{library}: not a readable .tar of objects ({err})") from None
        objects = sorted(str(p) for p in Path(tmp).rglob("*.o"))
        if not objects:
            raise PipelineError(f"{library}: holds no .o objects, expected a webgpu build's wasm32 objects")
        link_wasm(output, objects)
    return output


def _esbuild() -> Path:
    """esbuild from :data:`WEB_DIR`'s ``node_modules``, else from ``PATH``.  Raises PipelineError
    saying how to install it when neither has it."""
    esbuild = WEB_DIR / "node_modules" / ".bin" / "esbuild"
    if esbuild.exists():
        return esbuild
    on_path = shutil.which("esbuild")
    if on_path:
        return Path(on_path)
    raise PipelineError(f"{esbuild}: not installed and no esbuild on PATH; tvmjs is bundled with esbuild "
                        f"({SETUP_HINT}, or npm ci --prefix {WEB_DIR})")


def tvmjs_bundles() -> dict[str, Path]:
    """tvmjs built from the wheel's TypeScript: ``{"node": tvmjs.cjs, "browser": tvmjs.js}``
    (the browser one defines the global ``tvmjs``).  Builds them when absent."""
    home = runtime_home()
    bundles = {"node": home / "tvmjs" / "tvmjs.cjs", "browser": home / "tvmjs" / "tvmjs.js"}
    if all(p.is_file() for p in bundles.values()):
        return bundles
    esbuild, source = _esbuild(), home / "source"
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        tmp_dir = Path(tmp)
        units = [str(home / "web" / "dist" / "wasm" / f"{unit}.bc") for unit in RUNTIME_UNITS]
        _run([find_emcc(), *CFLAGS, "-o", str(tmp_dir / "tvmjs_runtime.js"), *units, *GLUE_FLAGS,
              "--pre-js", str(source / "web" / "emcc" / "preload.js")], "linking tvmjs's emscripten glue")
        src = tmp_dir / "src"
        shutil.copytree(source / "web" / "src", src)
        _run([sys.executable, str(source / "web" / "emcc" / "decorate_as_wasi.py"), str(tmp_dir / "tvmjs_runtime.js"),
              str(src / "tvmjs_runtime_wasi.js"), "es"], "decorating the glue as WASI (decorate_as_wasi.py)")
        out = tmp_dir / "tvmjs"
        common = [str(esbuild), str(src / "index.ts"), "--bundle", "--log-level=error"]
        ignored = ["--external:ws", "--external:perf_hooks", "--external:fs", "--external:path", "--external:crypto"]
        _run([*common, "--platform=node", "--format=cjs", "--external:ws", f"--outfile={out / 'tvmjs.cjs'}"],
             "bundling tvmjs for Node")
        _run([*common, "--platform=browser", "--format=iife", "--global-name=tvmjs", *ignored,
              f"--outfile={out / 'tvmjs.js'}"], "bundling tvmjs for browsers")
        shutil.rmtree(home / "tvmjs", ignore_errors=True)
        out.rename(home / "tvmjs")
    return bundles


def main() -> int:
    """``python -m pipeline.compile.wasm``: build the wasm runtime and tvmjs, print where."""
    try:
        home = runtime_home()
        bundles = tvmjs_bundles()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wasm runtime: {home / 'web' / 'dist' / 'wasm'}")
    for kind, path in bundles.items():
        print(f"tvmjs ({kind}): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
