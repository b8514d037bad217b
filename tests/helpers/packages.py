"""Pipeline configs for test sources, and tiny packages built from them (q0f32, CPU unless told)."""

from __future__ import annotations

from pathlib import Path

# The model section of a tiny Gemma 4 config: the family and a small context.
GEMMA4_MODEL = {"family": "gemma4", "overrides": {"context_window_size": 256, "prefill_chunk_size": 64}}


def write_config(path: Path, source: Path, fmt: str = "hf-safetensors", **extra) -> Path:
    """Write a pipeline YAML for ``source`` and return its path; ``extra`` replaces top-level keys."""
    import yaml

    data = {"name": "tiny", "model": {"family": "gemma3", "overrides": {"context_window_size": 256,
                                                                      "prefill_chunk_size": 64}},
            "source": {"format": fmt, "path": str(source)}, "quantization": "q0f32", "targets": ["cpu"],
            "output": str(path.parent / "out")}
    data.update(extra)
    path.write_text(yaml.safe_dump(data))
    return path


def build_package(root: Path, source: Path, fmt: str = "hf-safetensors", **config) -> Path:
    """Write ``root/tiny.yaml`` for ``source`` (:func:`write_config`, ``config`` its top-level keys),
    build it quietly into ``root/pkg`` and return the package directory."""
    from pipeline.build import build
    from pipeline.config import load_config

    path = write_config(root / "tiny.yaml", source, fmt, **config)
    return build(load_config(path), output=root / "pkg", progress=False, say=lambda _: None).output


def build_assistant_package(root: Path, shape: str):
    """``(package, hf base, hf assistant)``: a tiny random Gemma 4 base of ``shape`` (``e2b``,
    ``31b``) and a tiny random assistant, built by the pipeline (q0f32, CPU) under ``root``."""
    from tests.helpers.gemma4 import make_tiny_assistant, make_tiny_gemma4

    base = make_tiny_gemma4(root / "hf", shape)
    assistant = make_tiny_assistant(root / "assistant", base.config)
    package = build_package(
        root, root / "hf", name=f"tiny-{shape}", model=GEMMA4_MODEL,
        mtp={"family": "gemma4_assistant", "format": "hf-safetensors", "path": str(root / "assistant")})
    return package, base, assistant
