"""Compile time, peak memory and library size of a model for each target preset.

Runs ``mlc-mtp build CONFIG --target T --quantization Q`` once per (target, quantization) in a
child process, all children sharing one fresh stage cache: the first child imports and converts
the weights (reported on its own line), every child compiles its target from scratch.  The compile
stage covers the Relax export, TVM's compile, the library export and the target's link step (the
``.wasm`` through emscripten for webgpu, the aarch64 ``.so`` through ld.lld for android where it
is found).  Peak memory is the child's maximum resident set (``wait4``'s ``ru_maxrss``)::

    python benchmarks/compile_times.py [configs/gemma3-270m.yaml] [--target T ...] [--quantization Q ...]

Defaults: every preset in ``targets/``, quantizations q4f32_1 and q4f16_1 (q4f16_1 only where the
preset supports float16).  A target the installed TVM cannot build gets a row with the reason.
There is no peer to time beside it: mlc-llm's own compiler cannot be installed here
(``shared/reference/environment.md``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.compile.targets import available_targets, load_target  # noqa: E402
from pipeline.quantization import get_scheme  # noqa: E402

STAGE = re.compile(r"^(\S+): done in ([0-9.]+) s", re.M)


def run_build(config: Path, target: str, quantization: str, cache: Path, output: Path) -> dict:
    """One ``mlc-mtp build`` in a child process; returns its stage seconds, peak RSS (MiB), wall
    time (s), exit status and last output line."""
    command = [sys.executable, "-m", "pipeline.cli", "build", str(config), "--target", target,
               "--quantization", quantization, "--output", str(output), "--quiet"]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                 env={**os.environ, "MLC_MTP_CACHE": str(cache)})
        _, status, usage = os.wait4(child.pid, 0)
        log.seek(0)
        text = log.read()
    return {"stages": {name: float(s) for name, s in STAGE.findall(text)}, "rss_mib": usage.ru_maxrss / 1024,
            "wall": time.perf_counter() - start, "status": os.waitstatus_to_exitcode(status),
            "last": (text.strip().splitlines() or [""])[-1]}


def library_bytes(package: Path, target: str) -> str:
    """Sizes of the package's library files for ``target`` (``lib/*-<target>.*``)."""
    files = sorted((package / "lib").glob(f"*-{target}.*")) if (package / "lib").is_dir() else []
    return ", ".join(f"{p.suffix} {p.stat().st_size / 2**20:.1f} MB" for p in files) or "-"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("config", type=Path, nargs="?", default=ROOT / "configs/gemma3-270m.yaml")
    parser.add_argument("--target", action="append", help="preset (repeatable; default: all)")
    parser.add_argument("--quantization", action="append", help="repeatable; default: q4f32_1 and q4f16_1")
    args = parser.parse_args(argv)
    targets = args.target or available_targets()
    quantizations = args.quantization or ["q4f32_1", "q4f16_1"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="compile-times-") as tmp:
        cache = Path(tmp) / "cache"
        for target in targets:
            preset = load_target(target)
            for quantization in quantizations:
                if get_scheme(quantization).model_dtype == "float16" and not preset.supports_fp16:
                    continue
                output = Path(tmp) / f"pkg-{target}-{quantization}"
                result = run_build(args.config.resolve(), target, quantization, cache, output)
                for stage in ("import", "convert"):
                    if stage in result["stages"]:
                        print(f"{stage} ({quantization}): {result['stages'][stage]:.1f} s")
                seconds = result["stages"].get(f"compile[{target}]")
                if result["status"] != 0 or seconds is None:
                    rows.append((target, quantization, "-", "-", f"not built: {result['last'][:120]}"))
                else:
                    rows.append((target, quantization, f"{seconds:.1f}", f"{result['rss_mib']:,.0f}",
                                 library_bytes(output, target)))
                print(f"  {target} {quantization}: {rows[-1][2]} s", file=sys.stderr, flush=True)
    print(f"\n{args.config.name}, {os.cpu_count()} CPUs\n")
    print("| target | quantization | compile s (export, compile, link) | peak RSS MiB | library |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nThe first row's peak RSS includes the import and convert stages (the other rows reuse them).")


if __name__ == "__main__":
    main()
