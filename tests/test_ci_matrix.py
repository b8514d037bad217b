"""The hosted-CI workflow (.github/workflows/compile-matrix.yml) has one job per target preset, each
running checks that exist, and the dependency installer it shares with .ci/run refuses an unknown
target without installing anything."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import yaml

from pipeline.compile.targets import available_targets, load_target
from pipeline.quantization import get_scheme

ROOT = Path(__file__).resolve().parents[1]
JOBS = yaml.safe_load((ROOT / ".github/workflows/compile-matrix.yml").read_text())["jobs"]["build"]
MATRIX = JOBS["strategy"]["matrix"]["include"]


def test_one_job_per_preset():
    assert sorted(job["target"] for job in MATRIX) == available_targets()


def test_each_job_builds_a_quantization_its_preset_supports_and_runs_existing_checks():
    for job in MATRIX:
        scheme = get_scheme(job["quantization"])
        assert load_target(job["target"]).supports_fp16 or scheme.model_dtype != "float16", job
        words = shlex.split(job["checks"])
        paths = [w for w in words if w.startswith("tests/")]
        assert paths, job
        missing = [p for p in paths if not (ROOT / p).exists()]
        assert not missing, f"{job['target']}: {missing}"


def test_the_jobs_run_the_installer_ci_runs():
    commands = " ".join(step.get("run", "") for step in JOBS["steps"])
    assert "scripts/install_target_deps.sh ${{ matrix.target }}" in commands
    assert "scripts/install_target_deps.sh" in (ROOT / ".ci/run").read_text()


def test_installer_refuses_an_unknown_target():
    result = subprocess.run(["bash", str(ROOT / "scripts/install_target_deps.sh"), "tpu"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "unknown target 'tpu'" in result.stderr and "webgpu" in result.stderr
