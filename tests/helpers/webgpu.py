"""Run WebGPU libraries for tests: which runtimes this machine has (Node with Dawn on a Vulkan
driver, headless Chromium with SwiftShader), the toolchain (built once per machine, minutes), and a
plan run (``web/plan.mjs``) whose outputs come back as numpy arrays."""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.compile import wasm
from pipeline.errors import PipelineError

RUNTIMES = ("node", "chromium")
SETUP = "bash scripts/setup_webgpu.sh"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DAWN_PROBE = ("import {create, globals} from 'webgpu'; Object.assign(globalThis, globals);"
              "const a = await create([]).requestAdapter();"
              "console.log(a ? a.info.description || a.info.vendor || 'adapter' : ''); process.exit(0);")


@functools.cache
def missing(runtime: str) -> str | None:
    """Why ``runtime`` cannot run WebGPU libraries here, or None."""
    if shutil.which("emcc") is None:
        return f"emcc (emscripten) not found: {SETUP}"
    if shutil.which("node") is None:
        return "node not found: install Node.js 20+"
    modules = wasm.WEB_DIR / "node_modules"
    needs = {"node": ["webgpu", "esbuild"], "chromium": ["playwright-core", "esbuild"]}[runtime]
    absent = [m for m in needs if not (modules / m).is_dir()]
    if absent:
        return f"npm packages {', '.join(absent)} not installed in web/: {SETUP}"
    if runtime == "chromium":
        return None if Path(CHROMIUM).exists() else f"{CHROMIUM} not found: {SETUP} (Debian's chromium)"
    probe = subprocess.run(["node", "--input-type=module", "-e", DAWN_PROBE], cwd=wasm.WEB_DIR,
                           capture_output=True, text=True, timeout=120, check=False)
    if probe.returncode != 0 or not probe.stdout.strip():
        return (f"Dawn (npm webgpu) found no WebGPU adapter: it needs a Vulkan driver such as Mesa 25's "
                f"lavapipe ({SETUP})")
    return None


@functools.cache
def toolchain() -> dict[str, Path]:
    """tvmjs bundles (building the wasm runtime and tvmjs on first use)."""
    try:
        return wasm.tvmjs_bundles()
    except PipelineError as err:
        pytest.fail(f"WebGPU toolchain: {err}")


def require(runtime: str) -> None:
    """Skip the calling test, with the reason, when ``runtime`` is unavailable."""
    reason = missing(runtime)
    if reason:
        pytest.skip(reason)


def run_plan(runtime: str, plan: dict, workdir: Path) -> dict:
    """Run ``plan`` (paths relative to ``workdir``) on ``runtime``; the result with each output as
    a numpy array."""
    bundle = toolchain()["node" if runtime == "node" else "browser"]
    plan_path, result_path = workdir / f"plan-{runtime}.json", workdir / f"result-{runtime}.json"
    plan_path.write_text(json.dumps(plan))
    result_path.unlink(missing_ok=True)
    script = wasm.WEB_DIR / f"run_{runtime}.mjs"
    proc = subprocess.run(["node", str(script), str(bundle), str(plan_path), str(result_path)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0 and result_path.is_file(), f"{runtime} run failed:\n{proc.stderr[-4000:]}"
    result = json.loads(result_path.read_text())
    for name, out in result["outputs"].items():
        data = np.frombuffer(base64.b64decode(out["base64"]), dtype=out["dtype"])
        result["outputs"][name] = data.reshape(out["shape"])
    return result
