"""Build the two packages that ``tests/models/test_gpu_cuda.py`` reads from ``$MLC_MTP_GPU_PACKAGES``.

Usage: ``python scripts/cuda_check_packages.py DIR [--skip-270m] [--speculative]``.  Writes
``DIR/tiny`` (the tiny Gemma 3 of ``tests/helpers/gemma3.py``, q0f32, as the test's own fixture
builds it) and ``DIR/gemma3-270m-q4f16_1`` (``configs/gemma3-270m.yaml``, q4f16_1), each with a
``cpu`` and a ``cuda`` library; with ``--speculative`` also the two drafter families' packages that
``scripts/gpu_speed.py`` runs: ``DIR/gemma3-270m-mtp-q4f16_1`` (``configs/gemma3-270m-mtp.yaml``
in q4f16_1, its trained head with it; ``cuda`` only) and ``DIR/tiny-e2b`` (a tiny random Gemma 4
of E2B's layout with a tiny random assistant, q0f32, ``cpu`` and ``cuda``).  Runs on a machine
without a GPU: TVM keeps the CUDA kernels as CUDA C, compiled by NVRTC when the GPU machine loads
the library (``scripts/run_cuda_check.sh`` drives the rest).

Raises:
    PipelineError: a build stage fails (the pipeline's one-line error).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.build import build  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from tests.helpers.gemma3 import make_tiny_gemma3  # noqa: E402
from tests.helpers.packages import write_config  # noqa: E402

TARGETS = ["cpu", "cuda"]


def build_tiny(output: Path) -> Path:
    """The tiny Gemma 3 package (cpu + cuda libraries) in ``output``, as the test's fixture makes it."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        make_tiny_gemma3(root / "hf")
        config = load_config(write_config(root / "tiny.yaml", root / "hf", targets=TARGETS))
        return build(config, output=output, progress=False, say=print).output


def build_270m(output: Path) -> Path:
    """Gemma 3 270M in q4f16_1 (cpu + cuda libraries) in ``output``."""
    config = load_config(ROOT / "configs" / "gemma3-270m.yaml")
    return build(config, targets=TARGETS, quantization="q4f16_1", output=output, progress=False, say=print).output


CUDA_GRAPH_SUFFIX = "-cudagraph"
BEFORE_SUFFIX = "-before"


@contextlib.contextmanager
def cuda_graphs():
    """TVM's ``RewriteCUDAGraph`` on (:data:`pipeline.compile.compiler.CUDA_GRAPH_CONFIG`)."""
    import tvm

    from pipeline.compile.compiler import CUDA_GRAPH_CONFIG

    with tvm.transform.PassContext(config={CUDA_GRAPH_CONFIG: True}):
        yield


@contextlib.contextmanager
def kernels_before():
    """The GPU kernels of the H100 run of 2026-12-07 12:15 UTC (docs/cuda.md), for a same-run
    comparison: no ``LowBatchDispatch`` (few-row products get the preset's later rules) and one
    decode-attention block per (token, head) (no key split)."""
    from pipeline.compile import compiler
    from pipeline.kernels import kv_cache

    rules, splits = compiler.schedule_rules, kv_cache.SPLIT_DECODE_KINDS
    compiler.schedule_rules = lambda names=compiler.GPU_RULES: rules([n for n in names if n != "LowBatchDispatch"])
    kv_cache.SPLIT_DECODE_KINDS = ()
    try:
        yield
    finally:
        compiler.schedule_rules, kv_cache.SPLIT_DECODE_KINDS = rules, splits


# library variants built beside the package's own: suffix -> the context it is built in
VARIANTS = {CUDA_GRAPH_SUFFIX: cuda_graphs, BEFORE_SUFFIX: kernels_before}


def build_270m_mtp(output: Path) -> Path:
    """Gemma 3 270M with its trained MTP head (``configs/gemma3-270m-mtp.yaml``) in q4f16_1, ``cuda``
    only; beside the package's libraries, the :data:`VARIANTS` (the same built with CUDA graphs,
    and with the kernels of the previous H100 run), named ``<library stem><suffix>.so`` and loaded by
    ``scripts/gpu_speed.py`` as further variants."""
    import shutil

    config = load_config(ROOT / "configs" / "gemma3-270m-mtp.yaml")
    package = build(config, targets=["cuda"], quantization="q4f16_1", output=output, progress=False, say=print).output
    for suffix, context in VARIANTS.items():
        # a stage cache of its own: the cache's keys include neither the pass context nor the patches
        with tempfile.TemporaryDirectory() as scratch, context():
            cache, os.environ["MLC_MTP_CACHE"] = os.environ.get("MLC_MTP_CACHE"), str(Path(scratch) / "cache")
            try:
                variant = build(config, targets=["cuda"], quantization="q4f16_1", output=Path(scratch) / "pkg",
                                progress=False, say=print).output
            finally:
                if cache is None:
                    del os.environ["MLC_MTP_CACHE"]
                else:
                    os.environ["MLC_MTP_CACHE"] = cache
            for library in (variant / "lib").glob("*.so"):
                shutil.copy(library, package / "lib" / f"{library.stem}{suffix}.so")
    return package


def build_tiny_assistant(output: Path) -> Path:
    """A tiny random Gemma 4 (E2B's layout) with a tiny random assistant (cpu + cuda libraries)."""
    from tests.helpers.gemma4 import make_tiny_assistant, make_tiny_gemma4
    from tests.helpers.packages import GEMMA4_MODEL

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        base = make_tiny_gemma4(root / "hf", "e2b")
        make_tiny_assistant(root / "assistant", base.config)
        config = load_config(write_config(
            root / "tiny-e2b.yaml", root / "hf", targets=TARGETS, name="tiny-e2b", model=GEMMA4_MODEL,
            mtp={"family": "gemma4_assistant", "format": "hf-safetensors", "path": str(root / "assistant")}))
        return build(config, output=output, progress=False, say=print).output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--skip-270m", action="store_true", help="build the tiny package only")
    parser.add_argument("--speculative", action="store_true", help="also the drafter packages of scripts/gpu_speed.py")
    args = parser.parse_args()
    print("built", build_tiny(args.directory / "tiny"))
    if not args.skip_270m:
        print("built", build_270m(args.directory / "gemma3-270m-q4f16_1"))
    if args.speculative:
        print("built", build_270m_mtp(args.directory / "gemma3-270m-mtp-q4f16_1"))
        print("built", build_tiny_assistant(args.directory / "tiny-e2b"))


if __name__ == "__main__":
    main()
