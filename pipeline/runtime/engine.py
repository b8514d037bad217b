"""Load a package (MLC layout) and run its compiled library through the TVM Relax VM.

Calling convention (MLC LLM's, ``cpp/serve/model.cc``): a paged KV cache from
``create_paged_kv_cache``; each forward is bracketed by ``vm.builtin.kv_state_begin_forward`` /
``kv_state_end_forward``; ``embed`` then ``prefill`` / ``decode`` / ``batch_verify`` with the
parameters passed as one packed tuple in ``_metadata``'s order; ``kv_state_popn`` rolls back.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if "torch" not in sys.modules:
    # tvm_ffi imports torch whenever it is installed (a test dependency here), for tensor exchange
    # the engine never does: 196 MiB of resident memory and 1.5 s of start-up.  Hidden while TVM
    # loads; a later `import torch` in this process works as usual.
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import tvm
    finally:
        del sys.modules["torch"]
import tvm
import tvm_ffi
from tokenizers import Tokenizer
from tvm.runtime.vm import VirtualMachine

from ..errors import PipelineError
from ..kernels import PAGE_SIZE
from ..package.chat_config import RUNTIME_CONFIG
from ..package.check import check_library
from ..package.tensor_cache import read_tensor_cache
from ..presets import DEVICE_OF_KIND, preset_kind

if TYPE_CHECKING:
    from .drafters.base import Capture

# TVM's thread pool (src/runtime/thread_pool.cc, threading_backend.cc of TVM 0.26) reads these
# when it first starts; a user's own values win.
# - TVM_NUM_THREADS: TVM defaults to half the logical CPUs (it assumes hyper-threading), 1 on a
#   2-vCPU machine (halving speed here); use every CPU this process may run on (its affinity).
# - TVM_THREAD_POOL_SPIN_COUNT: an idle worker calls sched_yield() up to this many times (TVM's
#   default 300000) before sleeping on a condition variable.  With another process busy on the same
#   cores, each sched_yield hands the core to that process (the kernel's EEVDF scheduler pushes the
#   yielding thread's deadline a slice back), and the fork-join of every parallel kernel then waits
#   on the thread that yielded: decode of gemma3-270m fell from ~67 to ~4-7 tok/s with one busy
#   neighbour on this 2-core VM.  Workers that sleep at once (0) held 15-33 tok/s with the
#   neighbour; the price is a wake-up per kernel on a quiet machine (a decode step ~1.15x,
#   batch_verify ~1.5x slower in kernel timings, decode tok/s within noise).  1000 yields kept
#   quiet speed but held only in short runs (20 tok/s), not through a whole bench (4.8).  Set
#   TVM_THREAD_POOL_SPIN_COUNT=300000 (TVM's own) on a machine known to be idle.  The main
#   thread's own wait and the barrier still yield: TVM has no setting for those.
#   (docs/performance.md, "Thread pool under contention".)
# - TVM_BIND_THREADS: TVM pins worker i to core i of the whole machine, ignoring the process's
#   affinity (taskset, cpusets) and keeping the kernel from moving a worker off a core a neighbour
#   holds; unpinned measured the same here, so leave placement to the kernel.
os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                             else os.cpu_count() or 1))
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
os.environ.setdefault("TVM_BIND_THREADS", "0")


def load_library(library: Path, weights: Path, device) -> tuple[VirtualMachine, dict, list]:
    """Load a compiled library and the weights it takes, in its ``_metadata`` order.

    Every library the runtime runs (the model's and the drafters') is loaded here, after
    :func:`~pipeline.package.check.check_library` (a library cut short would otherwise crash the
    process with a bus error inside the dynamic loader).

    Returns ``(vm, metadata, params)``.

    Raises:
        PipelineError: a damaged library (truncated, not a shared library: ``check_library``);
            missing or short weight shards (:func:`~pipeline.package.tensor_cache.read_tensor_cache`);
            TVM cannot load the library here (no loader for its device code, e.g. a
            Vulkan library without TVM's Vulkan runtime, or a ``.wasm``); a parameter the library
            expects is missing from ``weights`` or has another shape or dtype.
    """
    check_library(library)
    try:
        module = tvm.runtime.load_module(str(library))
    except Exception as err:  # TVM raises RuntimeError or its own errors
        wasm = " (a .wasm runs in a browser or Node through tvmjs)" if library.suffix == ".wasm" else ""
        raise PipelineError(f"{library}: TVM {tvm.__version__} cannot load it here: "
                            f"{str(err).splitlines()[-1]}{wasm}") from None
    vm = VirtualMachine(module, device)
    metadata = json.loads(str(vm["_metadata"]()))
    tensors = read_tensor_cache(weights, device)
    missing = [p["name"] for p in metadata["params"] if p["name"] not in tensors]
    if missing:
        raise PipelineError(f"{library}: expects parameter {missing[0]!r}, which {weights} lacks")
    params = [tensors[p["name"]] for p in metadata["params"]]
    for spec, value in zip(metadata["params"], params):
        if list(value.shape) != spec["shape"] or str(value.dtype) != spec["dtype"]:
            raise PipelineError(f"{library}: parameter {spec['name']} expected {spec['shape']} {spec['dtype']}, "
                                f"{weights} has {list(value.shape)} {value.dtype}")
    return vm, metadata, params


def target_device(target: str, kind: str | None = None):
    """The device a library compiled for preset ``target`` runs on (device 0 of its kind);
    ``kind``: the TVM target kind it was built for, when known (a package records it), else read
    from the preset (:func:`pipeline.presets.preset_kind`).

    Raises:
        PipelineError: unknown preset, a target kind with no runtime device, or no such device on
            this machine (or this TVM has no runtime for it).
    """
    kind = kind or preset_kind(target)
    if kind not in DEVICE_OF_KIND:
        raise PipelineError(f"target {target}: kind {kind!r} has no runtime device here "
                            f"(runtime devices exist for {', '.join(DEVICE_OF_KIND)})")
    if kind == "vulkan":  # TVM's Vulkan runtime may be a plugin; without a driver TVM raises
        from . import vulkan

        if vulkan.device() is None:
            raise PipelineError(f"target {target}: {vulkan.missing()}")
    _load_device_runtime(kind)
    device = tvm.device(DEVICE_OF_KIND[kind], 0)
    if not device.exist:
        raise PipelineError(f"target {target}: no {DEVICE_OF_KIND[kind]} device found (TVM {tvm.__version__} "
                            f"sees none, or was built without its runtime)")
    return device


def _load_device_runtime(kind: str) -> None:
    """Load TVM's runtime libraries that a library of ``kind`` may call, where TVM has not: with its
    runtime only (``TVM_USE_RUNTIME_LIB=1``, a deployment without the compiler library) TVM 0.26
    loads neither a GPU kind's runtime (``libtvm_runtime_<kind>``) nor ``libtvm_runtime_extra``
    (packed functions kernels call, e.g. ``tvm.contrib.sort.topk``, which TVM's CPU top-k lowers
    to).  A missing library leaves the device absent or the function missing, which the caller
    reports."""
    from tvm.base import _LOADED_LIBS
    from tvm_ffi.libinfo import load_lib_ctypes

    for name in ("tvm_runtime_extra",) + (() if kind == "llvm" else (f"tvm_runtime_{kind}",)):
        if name in _LOADED_LIBS:
            continue
        try:
            _LOADED_LIBS[name] = load_lib_ctypes(package="tvm", target_name=name, mode="RTLD_LOCAL",
                                                 extra_lib_paths=[Path(_LOADED_LIBS["tvm_runtime"]._name).parent])
        except (OSError, RuntimeError):
            pass


def _exports(vm: VirtualMachine, name: str) -> bool:
    """Whether the library in ``vm`` exports ``name`` (an older library may lack one)."""
    try:
        vm[name]
    except Exception:  # the VM raises for a missing function
        return False
    return True


def _builtin(name: str):
    return tvm.get_global_func(name)


class Engine:
    """One model package on one device, serving a single sequence.

    Args:
        package: directory with ``mlc-chat-config.json``, weights, tokenizer and ``lib/``.
        model_lib: library to load; default the package's library for ``target``.
        target: preset name whose library to pick and whose device to run on (``cpu``: the CPU,
            ``cuda``: GPU 0 through CUDA, ...: :data:`pipeline.presets.DEVICE_OF_KIND`); default ``cpu`` where the
            package has a CPU library, else the package's only library.

    ``tokens`` is the sequence in the KV cache (token ids, in order).

    Raises:
        PipelineError: missing files, a library that does not match the weights, no device for
            ``target``.
    """

    def __init__(self, package: str | Path, model_lib: str | Path | None = None, target: str | None = None):
        self.package = Path(package)
        chat_path = self.package / "mlc-chat-config.json"
        if not chat_path.is_file():
            raise PipelineError(f"{self.package}: not a package (no mlc-chat-config.json)")
        self.chat_config = json.loads(chat_path.read_text())
        runtime_path = self.package / RUNTIME_CONFIG
        self.runtime_config = json.loads(runtime_path.read_text()) if runtime_path.is_file() else {}
        libs = self.runtime_config.get("model_lib", {})
        if target is None:
            target = "cpu" if "cpu" in libs or len(libs) != 1 else next(iter(libs))
        self.target = target
        if model_lib is None:
            if target not in libs:
                raise PipelineError(f"{self.package}: no library for target {target!r} (has {sorted(libs)})")
            model_lib = self.package / libs[target]
        model_lib = Path(model_lib)
        if not model_lib.is_file():
            raise PipelineError(f"{model_lib}: model library not found")
        kinds = {e["target"]: e["tvm_target"]["kind"] for e in self.runtime_config.get("libraries", [])}
        self.device = target_device(target, kinds.get(target))
        # the tokenizer first: parsing tokenizer.json passes through ~65 MiB more than the
        # tokenizer keeps, which then adds to the process's peak memory before the weights do
        self.tokenizer = Tokenizer.from_file(str(self.package / "tokenizer.json"))
        self.vm, self.metadata, self.params = load_library(model_lib, self.package, self.device)
        model_cfg = self.chat_config["model_config"]
        self.hidden_size = model_cfg["hidden_size"]
        self.context_window = self.chat_config["context_window_size"]
        self.prefill_chunk = self.chat_config["prefill_chunk_size"]
        self.stop_token_ids = set(self.chat_config["eos_token_id"]) | set(
            self.chat_config["conv_template"].get("stop_token_ids", [])
        )
        self.kv_cache = None
        self.tokens: list[int] = []  # the sequence in the KV cache, in order
        self.capture: Capture | None = None  # a drafter's hook: what forward passes keep for it
        self._argmax = self.vm["argmax_logits"] if _exports(self.vm, "argmax_logits") else None

    def attach(self, capture: Capture) -> Capture:
        """From the next sequence on (the current one is reset), run ``capture.functions`` instead
        of the plain forward functions and hand their outputs to ``capture``
        (:class:`~pipeline.runtime.drafters.base.Capture`: a drafter's hook); returns it.

        Raises:
            PipelineError: the library lacks one of the functions (its model family has no such drafter).
        """
        for function in sorted(set(capture.functions.values())):
            if not _exports(self.vm, function):
                raise PipelineError(f"{self.package}: its library has no {function} "
                                    f"(model {self.chat_config['model_type']} has no such MTP drafter support)")
        self.capture = capture
        self.reset()
        return capture

    @contextlib.contextmanager
    def plain_forward(self):
        """Within this block forward passes run the library's plain functions and keep nothing for
        a drafter, as an engine without one does (speculation off measured on the engine that
        holds the drafter); the sequence is reset on leaving, the drafter's context and all."""
        capture, self.capture = self.capture, None
        try:
            yield self
        finally:
            self.capture = capture
            self.reset()

    # --- KV cache --------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a fresh sequence (new, empty KV cache)."""
        shape = tvm_ffi.Shape
        self.kv_cache = self.vm["create_paged_kv_cache"](
            shape((1,)), shape((self.context_window,)), shape((self.prefill_chunk,)), shape((PAGE_SIZE,)), shape((0,))
        )
        _builtin("vm.builtin.kv_state_add_sequence")(self.kv_cache, 0)
        self.tokens = []
        if self.capture is not None:
            self.capture.reset()

    @property
    def length(self) -> int:
        """Number of tokens in the KV cache."""
        return len(self.tokens)

    def rollback(self, n: int) -> None:
        """Drop the last ``n`` tokens from the KV cache (``kv_state_popn``)."""
        if n:
            _builtin("vm.builtin.kv_state_popn")(self.kv_cache, 0, n)
            del self.tokens[-n:]
            if self.capture is not None:
                self.capture.truncate(self.length)

    # --- forward passes --------------------------------------------------------------------
    def run_forward(self, token_ids: list[int], function: str):
        """Append ``token_ids`` running ``embed`` then the library's ``function`` (``prefill``,
        ``decode`` or ``batch_verify``; a drafter's capture picks its own functions); the output
        stays on the device (no host copy): the ``tvm.runtime.Tensor`` the function returns.

        Raises:
            PipelineError: the sequence would exceed the context window.
        """
        n = len(token_ids)
        if self.length + n > self.context_window:
            raise PipelineError(
                f"sequence of {self.length + n} tokens exceeds the context window ({self.context_window})"
            )
        ids = tvm.runtime.tensor(np.asarray(token_ids, dtype=np.int32), self.device)
        embeds = self.vm["embed"](ids, self.params)
        embeds = embeds._create_view((1, n, embeds.shape[-1]))
        name = function if self.capture is None else self.capture.functions[function]
        _builtin("vm.builtin.kv_state_begin_forward")(self.kv_cache, tvm_ffi.Shape((0,)), tvm_ffi.Shape((n,)))
        out, self.kv_cache = self.vm[name](embeds, self.kv_cache, self.params)
        _builtin("vm.builtin.kv_state_end_forward")(self.kv_cache)
        self.tokens.extend(int(t) for t in token_ids)
        return out

    def host(self, tensor) -> np.ndarray:
        """A library output as a numpy array: on the CPU a view of the tensor's own memory (no
        copy; the tensor stays alive while the view does, and the VM never writes a live tensor),
        on other devices a copy to the host."""
        if self.device.dlpack_device_type() == tvm.cpu(0).dlpack_device_type():
            return np.from_dlpack(tensor)
        return tensor.numpy()

    def _device_logits(self, token_ids: list[int], function: str):
        """Run ``function`` on ``token_ids``; the float32 ``(1, m, vocab)`` logits, on the device."""
        out = self.run_forward(token_ids, function)
        return out if self.capture is None else self.capture.read(self, out, function == "prefill")

    def argmax(self, logits) -> list[int]:
        """Greedy token ids of device logits ``(1, m, vocab)`` (or ``(m, vocab)``), one per row, the
        lowest id among equal maxima: computed on the device by the library's ``argmax_logits``
        (:mod:`pipeline.kernels.argmax`) so that only the ``m`` ids are copied to the host; in
        numpy from the host copy for a library built without it or for logits that are not float32."""
        m, vocab = int(logits.shape[-2]), int(logits.shape[-1])
        if self._argmax is None or str(logits.dtype) != "float32":
            return [int(t) for t in np.argmax(self.host(logits).reshape(m, vocab), axis=-1)]
        return [int(t) for t in self.host(self._argmax(logits._create_view((m, vocab))))]

    def _prefill(self, token_ids: list[int]):
        """Append ``token_ids`` in chunks; the device logits of the last chunk (:meth:`prefill`)."""
        if not token_ids:
            raise PipelineError("cannot prefill an empty prompt")
        if self.length + len(token_ids) > self.context_window:
            held = f" after the {self.length} already in the sequence" if self.length else ""
            raise PipelineError(f"prompt of {len(token_ids)} tokens{held} does not fit the context window "
                                f"({self.context_window} tokens, context_window_size of {self.package})")
        if self.kv_cache is None:
            self.reset()
        starts = range(0, len(token_ids), self.prefill_chunk)
        for start in starts[:-1]:
            self._device_logits(token_ids[start:start + self.prefill_chunk], "prefill")
        return self._device_logits(token_ids[starts[-1]:], "prefill")

    def prefill(self, token_ids: list[int]) -> np.ndarray:
        """Append ``token_ids`` (in chunks of ``prefill_chunk_size``); float32 ``(vocab,)`` logits of the last.

        Raises:
            PipelineError: an empty prompt, or one that does not fit the context window (checked
                before the first chunk runs).
        """
        return self.host(self._prefill(token_ids))[0][-1]

    def decode(self, token_id: int) -> np.ndarray:
        """Append one token; float32 ``(vocab,)`` logits for the next."""
        return self.host(self._device_logits([token_id], "decode"))[0][-1]

    def verify(self, token_ids: list[int]) -> np.ndarray:
        """Append ``token_ids`` in one pass; float32 ``(len, vocab)`` logits at every position."""
        return self.host(self._device_logits(token_ids, "batch_verify"))[0]

    # --- greedy: only token ids leave the device (:meth:`argmax`) ----------------------------
    def prefill_argmax(self, token_ids: list[int]) -> int:
        """:meth:`prefill`, returning the greedy next token instead of the logits.

        Raises:
            PipelineError: as :meth:`prefill`.
        """
        return self.argmax(self._prefill(token_ids))[-1]

    def decode_argmax(self, token_id: int) -> int:
        """:meth:`decode`, returning the greedy next token instead of the logits."""
        return self.argmax(self._device_logits([token_id], "decode"))[-1]

    def verify_argmax(self, token_ids: list[int]) -> list[int]:
        """:meth:`verify`, returning the greedy token at every position (``len(token_ids)`` ids)."""
        return self.argmax(self._device_logits(token_ids, "batch_verify"))
