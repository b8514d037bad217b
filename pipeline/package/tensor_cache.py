"""Weights in MLC's ``tensor-cache.json`` + ``params_shard_*.bin`` format.

Written and read by TVM's own implementation (``tvm.contrib.tvmjs.dump_tensor_cache`` /
``load_tensor_cache``), the code mlc-llm's ``convert_weight`` uses, so the TVM runtime
(``vm.builtin.tensor_cache``) and WebLLM load the files unchanged.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tvm
from tvm.contrib import tvmjs

from .check import check_tensor_cache


def write_tensor_cache(params: Iterable[tuple[str, np.ndarray]], directory: Path, metadata: dict) -> None:
    """Write ``(name, array)`` pairs as raw shards (at most 32 MB each) into ``directory``."""
    with contextlib.redirect_stdout(io.StringIO()):  # tvmjs prints its own progress lines
        tvmjs.dump_tensor_cache(
            params, str(directory), encode_format="raw", meta_data=metadata, shard_cap_mb=32, show_progress=False
        )


def read_tensor_cache(directory: Path, device) -> dict[str, tvm.runtime.Tensor]:
    """Load every tensor of the cache in ``directory`` onto ``device`` (name -> tensor).

    Raises:
        PipelineError: ``tensor-cache.json`` missing or unreadable, or a shard it lists missing or
            shorter than its records need (:func:`~pipeline.package.check.check_tensor_cache`).
    """
    check_tensor_cache(directory)
    params, _ = tvmjs.load_tensor_cache(str(directory), device)
    return params
