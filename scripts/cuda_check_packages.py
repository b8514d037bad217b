"""Build the two packages that ``tests/models/test_gpu_cuda.py`` reads from ``$MLC_MTP_GPU_PACKAGES``.

Usage: ``python scripts/cuda_check_packages.py DIR [--skip-270m]``.  Writes ``DIR/tiny`` (the tiny
Gemma 3 of ``tests/helpers/gemma3.py``, q0f32, as the test's own fixture builds it) and
``DIR/gemma3-270m-q4f16_1`` (``configs/gemma3-270m.yaml``, q4f16_1), each with a ``cpu`` and a
``cuda`` library.  Runs on a machine without a GPU: TVM keeps the CUDA kernels as CUDA C, compiled
by NVRTC when the GPU machine loads the library (``scripts/run_cuda_check.sh`` drives the rest).

Raises:
    PipelineError: a build stage fails (the pipeline's one-line error).
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--skip-270m", action="store_true", help="build the tiny package only")
    args = parser.parse_args()
    print("built", build_tiny(args.directory / "tiny"))
    if not args.skip_270m:
        print("built", build_270m(args.directory / "gemma3-270m-q4f16_1"))


if __name__ == "__main__":
    main()
