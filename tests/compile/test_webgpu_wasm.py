"""A WebGPU library end to end on real WebGPU implementations: a small Relax module (RMSNorm then a
matrix product) compiled with the ``webgpu`` preset and the project's GPU pipeline, linked into a
``.wasm`` with TVM's wasm runtime (``pipeline.compile.wasm``), run through tvmjs in Node on Dawn and
in headless Chromium, and compared with numpy.  Skipped, with the reason, where emscripten, Node's
packages, Dawn's adapter or Chromium are missing (``bash scripts/setup_webgpu.sh`` installs them)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.relax.frontend import nn

from pipeline.compile.compiler import relax_pipeline
from pipeline.compile.targets import load_target
from pipeline.compile.wasm import link_library_tar, link_wasm
from pipeline.errors import PipelineError
from tests.helpers import webgpu

pytestmark = pytest.mark.compile

HIDDEN, OUT, ROWS, EPS = 64, 32, 5, 1e-5


class NormProject(nn.Module):
    def __init__(self):
        self.norm = nn.RMSNorm(HIDDEN, axes=-1, epsilon=EPS, bias=False)
        self.proj = nn.Linear(HIDDEN, OUT, bias=False)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.proj(self.norm(x))


def reference(x, weight, proj):
    return (x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS) * weight) @ proj.T


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """The module's inputs and its ``.wasm``, linked through ``export_library(fcompile=link_wasm)``."""
    if webgpu.missing("node") and webgpu.missing("chromium"):
        pytest.skip(webgpu.missing("node"))
    mod, _ = NormProject().export_tvm(spec={"forward": {"x": nn.spec.Tensor(["n", HIDDEN], "float32")}})
    target = load_target("webgpu").tvm_target()
    executable = tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target))
    workdir = tmp_path_factory.mktemp("webgpu-tiny")
    executable.export_library(str(workdir / "tiny.wasm"), fcompile=link_wasm)
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((ROWS, HIDDEN)), "w": 1 + 0.1 * rng.standard_normal(HIDDEN),
              "p": 0.2 * rng.standard_normal((OUT, HIDDEN))}
    plan = {"wasm": "tiny.wasm", "tensors": {}, "calls": [{"function": "forward", "args": ["x", "w", "p"],
                                                            "output": "y"}]}
    for name, value in inputs.items():
        value.astype(np.float32).tofile(workdir / f"{name}.bin")
        plan["tensors"][name] = {"file": f"{name}.bin", "shape": list(value.shape), "dtype": "float32"}
    return workdir, plan, reference(*(inputs[k].astype(np.float32) for k in ("x", "w", "p")))


@pytest.mark.parametrize("runtime", webgpu.RUNTIMES)
def test_norm_matmul_runs_on_webgpu(library, runtime):
    webgpu.require(runtime)
    workdir, plan, want = library
    result = webgpu.run_plan(runtime, plan, workdir)
    got = result["outputs"]["y"]
    assert got.shape == (ROWS, OUT)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert result["adapter"]["vendor"]  # a real adapter answered (mesa on Dawn, google on SwiftShader)


def test_link_errors_are_one_line(tmp_path):
    """A library that is not a .tar of objects, and a .tar holding none: one line each, no output."""
    bad = tmp_path / "model.tar"
    bad.write_bytes(b"not a tar")
    with pytest.raises(PipelineError, match=r"model\.tar: not a readable \.tar of objects"):
        link_library_tar(bad, tmp_path / "model.wasm")
    import tarfile

    (tmp_path / "readme.txt").write_text("x")
    with tarfile.open(bad, "w") as archive:
        archive.add(tmp_path / "readme.txt", arcname="readme.txt")
    with pytest.raises(PipelineError, match=r"holds no \.o objects"):
        link_library_tar(bad, tmp_path / "model.wasm")
    assert not (tmp_path / "model.wasm").exists()
