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

from ..errors import PipelineError
from .check import check_tensor_cache


def write_tensor_cache(params: Iterable[tuple[str, np.ndarray]], directory: Path, metadata: dict) -> None:
    """Write ``(name, array)`` pairs as raw shards (at most 32 MB each) into ``directory``."""
    with contextlib.redirect_stdout(io.StringIO()):  # tvmjs prints its own progress lines
        tvmjs.dump_tensor_cache(
            params, str(directory), encode_format="raw", meta_data=metadata, shard_cap_mb=32, show_progress=False
        )


def read_tensor_cache(directory: Path, device) -> dict[str, tvm.runtime.Tensor]:
    """Load every tensor of the cache in ``directory`` onto ``device`` (name -> tensor).

    On the CPU each raw record is read from its shard straight into the tensor's own memory
    (``readinto`` a numpy view of it): TVM's ``load_tensor_cache`` reads a whole shard into one
    ``bytes`` and copies every tensor out of it, which took the engine's resident memory 135 MiB
    above the weights for good and its peak a shard above that (docs/performance.md, "Memory").
    Other devices, and records in another encoding, go through ``load_tensor_cache``.

    Raises:
        PipelineError: ``tensor-cache.json`` missing or unreadable, or a shard it lists missing or
            shorter than its records need (:func:`~pipeline.package.check.check_tensor_cache`).
    """
    cache = check_tensor_cache(directory)
    records = [r for shard in cache["records"] for r in shard["records"]]
    if (device.dlpack_device_type() != tvm.cpu(0).dlpack_device_type()
            or any(r.get("format", "raw") != "raw" for r in records)):
        params, _ = tvmjs.load_tensor_cache(str(directory), device)
        return params
    params = {}
    for shard in cache["records"]:
        with open(Path(directory) / shard["dataPath"], "rb") as file:
            for record in shard["records"]:
                tensor = tvm.runtime.empty(record["shape"], record["dtype"], device=device)
                view = np.from_dlpack(tensor).reshape(-1).view(np.uint8)
                file.seek(int(record["byteOffset"]))
                if file.readinto(view.data) != int(record["nbytes"]) or view.nbytes != int(record["nbytes"]):
                    raise PipelineError(f"{directory / shard['dataPath']}: record {record['name']} holds "
                                        f"{record['nbytes']} bytes, expected {view.nbytes} for "
                                        f"{record['shape']} {record['dtype']}")
                params[record["name"]] = tensor
    return params
