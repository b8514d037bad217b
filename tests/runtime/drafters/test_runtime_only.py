"""The runtime with TVM's runtime library only (``TVM_USE_RUNTIME_LIB=1``: TVM 0.26 then loads no
``libtvm_compiler`` and imports none of its compiler packages, as on a deployment): plain and
speculative greedy generation with a drafter of each family, in a subprocess, and the modules
the runtime imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.packages import build_assistant_package

ROOT = Path(__file__).resolve().parents[3]
COMPILE_SIDE = ("tvm.relax", "pipeline.compile", "pipeline.models", "pipeline.kernels")
# Runtime-safe: the model-family registry (lazy references; tests/test_registry.py), in which the runtime
# looks drafter families up, the layer-type names (two strings, no imports; the config schema's enum), and the
# kernels package itself (only PAGE_SIZE, the cache page the runtime passes), and the reduced drafting
# vocabulary's names and file readers (numpy and safetensors only).
RUNTIME_SAFE = ("pipeline.models", "pipeline.models.registry", "pipeline.models.layer_types", "pipeline.kernels",
                "pipeline.models.draft_vocab")

IMPORTS = """
import json, sys
import tvm.base
import pipeline.runtime
from pipeline.runtime import bench, chat, drafters, engine, generate, sampling, speculative
from pipeline.runtime.drafters import assistant, base, context, mtp_head
print(json.dumps({"runtime_only": tvm.base._RUNTIME_ONLY and "tvm_compiler" not in tvm.base._LOADED_LIBS,
                  "loaded": sorted(m for m in sys.modules if m.startswith(COMPILE_SIDE) and m not in RUNTIME_SAFE)}))
"""

GENERATE = """
import json, sys
import numpy as np
import tvm.base
from pipeline.runtime.drafters import load_drafter, package_speculative
from pipeline.runtime.engine import Engine
from pipeline.runtime.generate import generate
from pipeline.runtime.sampling import Sampler
from pipeline.runtime.speculative import SpeculativeStats, speculative_generate

out = {"runtime_only": tvm.base._RUNTIME_ONLY and "tvm_compiler" not in tvm.base._LOADED_LIBS, "packages": []}
for package in sys.argv[1:]:
    engine = Engine(package)
    drafter = load_drafter(engine, package_speculative(engine.package, engine.runtime_config, {"mode": "mtp"}))
    runs = []
    for seed in range(3):
        prompt = np.random.default_rng(20 + seed).integers(4, 96, size=8 + 5 * seed).tolist()
        with engine.plain_forward():  # the library's plain functions, as without a drafter
            plain = list(generate(engine, prompt, 20, Sampler()))
        stats = SpeculativeStats()
        speculative = list(speculative_generate(engine, prompt, 20, Sampler(), drafter, 3, stats=stats))
        runs.append({"plain": plain, "speculative": speculative, "drafted": stats.drafted})
    out["packages"].append({"drafter": type(drafter).__name__, "runs": runs})
out["loaded"] = sorted(m for m in sys.modules if m.startswith(COMPILE_SIDE) and m not in RUNTIME_SAFE)
print(json.dumps(out))
"""


def run_runtime_only(script: str, *args: str) -> dict:
    """Run ``script`` with TVM's runtime only; its last stdout line, parsed."""
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1", "PYTHONPATH": str(ROOT)}
    code = f"COMPILE_SIDE = {COMPILE_SIDE!r}\nRUNTIME_SAFE = {RUNTIME_SAFE!r}\n{script}"
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_runtime_imports_nothing_of_the_compile_side():
    result = run_runtime_only(IMPORTS)
    assert result == {"runtime_only": True, "loaded": []}


@pytest.fixture(scope="module")
def assistant_package(tmp_path_factory):
    """A tiny Gemma 4 (E2B-like) package with a ``gemma4_assistant`` drafter."""
    return build_assistant_package(tmp_path_factory.mktemp("runtime-only-assistant"), "e2b")[0]


def test_speculative_greedy_output_equals_plain_decoding_with_the_runtime_only(
        assistant_package, mtp_package):
    """Both drafter families load and draft with TVM's runtime only, and greedy speculative
    decoding emits plain decoding's tokens."""
    result = run_runtime_only(GENERATE, str(assistant_package), str(mtp_package))
    assert result["runtime_only"] and result["loaded"] == []
    assert [p["drafter"] for p in result["packages"]] == ["AssistantDrafter", "MTPHeadDrafter"]
    for package in result["packages"]:
        for run in package["runs"]:
            assert run["speculative"] == run["plain"], package["drafter"]
        assert sum(run["drafted"] for run in package["runs"]) > 0, package["drafter"]  # speculation ran
