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
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tokenizers import Tokenizer
from tvm.runtime.vm import VirtualMachine

from ..compile.targets import load_target
from ..errors import PipelineError
from ..kernels import PAGE_SIZE
from ..package.chat_config import RUNTIME_CONFIG
from ..package.tensor_cache import read_tensor_cache
from .mtp_context import MTPContext

# The functions that also return what an MTP drafter reads (hidden states, context K/V).
MTP_FUNCTIONS = {"prefill": "prefill_to_mtp_context", "decode": "batch_verify_to_mtp_context",
                 "batch_verify": "batch_verify_to_mtp_context"}
# The functions that return the final hidden states of every token, for drafters that read only
# those (logits then come from ``get_logits``): MLC's names, in Gemma 3 libraries.
HIDDEN_STATE_FUNCTIONS = {"prefill": "prefill_to_last_hidden_states", "decode": "batch_verify_to_last_hidden_states",
                          "batch_verify": "batch_verify_to_last_hidden_states"}
# TVM's thread pool defaults to the physical core count, which is 1 on a 2-vCPU machine (halving
# speed here); use every logical CPU unless the user chose.  Read when the pool first starts.
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))


def load_library(library: Path, weights: Path, device) -> tuple[VirtualMachine, dict, list]:
    """Load a compiled library and the weights it takes, in its ``_metadata`` order.

    Returns ``(vm, metadata, params)``.

    Raises:
        PipelineError: TVM cannot load the library here (no loader for its device code, e.g. a
            Vulkan library without TVM's Vulkan runtime, or a ``.wasm``); a parameter the library
            expects is missing from ``weights`` or has another shape or dtype.
    """
    try:
        module = tvm.runtime.load_module(str(library))
    except Exception as err:  # pylint: disable=broad-except  # TVM raises RuntimeError or its own errors
        raise PipelineError(f"{library}: TVM {tvm.__version__} cannot load it here: {str(err).splitlines()[-1]}"
                            + (" (a .wasm runs in a browser or Node through tvmjs)" if library.suffix == ".wasm" else "")
                            ) from None
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


# TVM target kind -> runtime device type (tvm.device names); kinds without a runtime here are absent.
DEVICE_OF_KIND = {"llvm": "cpu", "cuda": "cuda", "rocm": "rocm", "metal": "metal", "vulkan": "vulkan",
                  "opencl": "opencl"}


def target_device(target: str, kind: str | None = None):
    """The device a library compiled for preset ``target`` runs on (device 0 of its kind);
    ``kind``: the TVM target kind it was built for, when known (a package records it), else read
    from the preset.

    Raises:
        PipelineError: unknown preset, a target kind with no runtime device, or no such device on
            this machine (or this TVM has no runtime for it).
    """
    kind = kind or load_target(target).target["kind"]
    if kind not in DEVICE_OF_KIND:
        raise PipelineError(f"target {target}: kind {kind!r} has no runtime device here "
                            f"(runtime devices exist for {', '.join(DEVICE_OF_KIND)})")
    if kind == "vulkan":  # TVM's Vulkan runtime may be a plugin; without a driver TVM raises
        from ..compile import vulkan  # pylint: disable=import-outside-toplevel

        if vulkan.device() is None:
            raise PipelineError(f"target {target}: {vulkan.missing()}")
    _load_device_runtime(kind)
    device = tvm.device(DEVICE_OF_KIND[kind], 0)
    if not device.exist:
        raise PipelineError(f"target {target}: no {DEVICE_OF_KIND[kind]} device found (TVM {tvm.__version__} "
                            f"sees none, or was built without its runtime)")
    return device


def _load_device_runtime(kind: str) -> None:
    """Load TVM's runtime library for a GPU kind (``libtvm_runtime_<kind>``) if TVM has not: with its
    runtime only (``TVM_USE_RUNTIME_LIB=1``, a deployment without the compiler library) TVM 0.26
    loads no GPU runtime.  A missing library leaves the device absent, which the caller reports."""
    from tvm.base import _LOADED_LIBS  # pylint: disable=import-outside-toplevel
    from tvm_ffi.libinfo import load_lib_ctypes  # pylint: disable=import-outside-toplevel

    name = f"tvm_runtime_{kind}"
    if kind == "llvm" or name in _LOADED_LIBS:
        return
    try:
        _LOADED_LIBS[name] = load_lib_ctypes(package="tvm", target_name=name, mode="RTLD_LOCAL",
                                             extra_lib_paths=[Path(_LOADED_LIBS["tvm_runtime"]._name).parent])
    except (OSError, RuntimeError):
        pass


def _builtin(name: str):
    return tvm.get_global_func(name)


class Engine:
    """One model package on one device, serving a single sequence.

    Args:
        package: directory with ``mlc-chat-config.json``, weights, tokenizer and ``lib/``.
        model_lib: library to load; default the package's library for ``target``.
        target: preset name whose library to pick and whose device to run on (``cpu``: the CPU,
            ``cuda``: GPU 0 through CUDA, ...: :data:`DEVICE_OF_KIND`); default ``cpu`` where the
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
        self.vm, self.metadata, self.params = load_library(model_lib, self.package, self.device)
        self.tokenizer = Tokenizer.from_file(str(self.package / "tokenizer.json"))
        model_cfg = self.chat_config["model_config"]
        self.hidden_size = model_cfg["hidden_size"]
        self.context_window = self.chat_config["context_window_size"]
        self.prefill_chunk = self.chat_config["prefill_chunk_size"]
        self.stop_token_ids = set(self.chat_config["eos_token_id"]) | set(
            self.chat_config["conv_template"].get("stop_token_ids", [])
        )
        self.kv_cache = None
        self.tokens: list[int] = []  # the sequence in the KV cache, in order
        self.mtp_context: MTPContext | None = None  # kept when an MTP drafter reads the base model
        self.mtp_functions = MTP_FUNCTIONS  # what fills it (capture_mtp_context)

    def capture_mtp_context(self, functions: dict[str, str] = MTP_FUNCTIONS) -> MTPContext:
        """From the next sequence on, run ``functions`` (:data:`MTP_FUNCTIONS`: the
        ``*_to_mtp_context`` ones, hidden states and K/V; :data:`HIDDEN_STATE_FUNCTIONS`: the final
        hidden state of every token) and keep what they return for an MTP drafter
        (:mod:`pipeline.runtime.mtp_context`).

        Raises:
            PipelineError: the library has no such functions (its model family has no such drafter).
        """
        try:
            self.vm[functions["prefill"]]  # pylint: disable=pointless-statement
        except Exception:  # pylint: disable=broad-except  # the VM raises for a missing function
            raise PipelineError(f"{self.package}: its library has no {functions['prefill']} "
                                f"(model {self.chat_config['model_type']} has no such MTP drafter support)") from None
        if self.mtp_context is None:
            self.mtp_context, self.mtp_functions = MTPContext(), functions
            self.reset()
        return self.mtp_context

    @contextlib.contextmanager
    def plain_forward(self):
        """Within this block forward passes run the library's plain functions and keep no MTP
        context, as an engine without a drafter does (speculation off measured on the engine
        that holds the drafter); the sequence is reset on leaving, context and all."""
        context, self.mtp_context = self.mtp_context, None
        try:
            yield self
        finally:
            self.mtp_context = context
            self.reset()

    # --- KV cache --------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a fresh sequence (new, empty KV cache)."""
        shape = tvm_ffi.Shape
        self.kv_cache = self.vm["create_paged_kv_cache"](
            shape([1]), shape([self.context_window]), shape([self.prefill_chunk]), shape([PAGE_SIZE]), shape([0])
        )
        _builtin("vm.builtin.kv_state_add_sequence")(self.kv_cache, 0)
        self.tokens = []
        if self.mtp_context is not None:
            self.mtp_context.reset()

    @property
    def length(self) -> int:
        """Number of tokens in the KV cache."""
        return len(self.tokens)

    def rollback(self, n: int) -> None:
        """Drop the last ``n`` tokens from the KV cache (``kv_state_popn``)."""
        if n:
            _builtin("vm.builtin.kv_state_popn")(self.kv_cache, 0, n)
            del self.tokens[-n:]
            if self.mtp_context is not None:
                self.mtp_context.truncate(self.length)

    # --- forward passes --------------------------------------------------------------------
    def _forward(self, token_ids: list[int], function: str) -> np.ndarray:
        n = len(token_ids)
        if self.length + n > self.context_window:
            raise PipelineError(
                f"sequence of {self.length + n} tokens exceeds the context window ({self.context_window})"
            )
        ids = tvm.runtime.tensor(np.asarray(token_ids, dtype=np.int32), self.device)
        embeds = self.vm["embed"](ids, self.params)
        embeds = embeds._create_view((1, n, embeds.shape[-1]))  # pylint: disable=protected-access
        if self.mtp_context is not None:
            last_only = function == "prefill"
            function = self.mtp_functions[function]
        _builtin("vm.builtin.kv_state_begin_forward")(self.kv_cache, tvm_ffi.Shape([0]), tvm_ffi.Shape([n]))
        out, self.kv_cache = self.vm[function](embeds, self.kv_cache, self.params)
        _builtin("vm.builtin.kv_state_end_forward")(self.kv_cache)
        if self.mtp_context is not None and self.mtp_functions is HIDDEN_STATE_FUNCTIONS:
            hidden = out.numpy()[0]
            self.mtp_context.append(hidden, [])
            rows = tvm.runtime.tensor(np.ascontiguousarray(hidden[-1:] if last_only else hidden), self.device)
            logits = self.vm["get_logits"](rows, self.params).numpy()[None]
        elif self.mtp_context is not None:
            logits, hidden, *kv = (a.numpy() for a in out)
            self.mtp_context.append(hidden[0], kv)
        else:
            logits = out
        self.tokens.extend(int(t) for t in token_ids)
        return (logits if isinstance(logits, np.ndarray) else logits.numpy())[0]

    def prefill(self, token_ids: list[int]) -> np.ndarray:
        """Append ``token_ids`` (in chunks of ``prefill_chunk_size``); float32 ``(vocab,)`` logits of the last."""
        if not token_ids:
            raise PipelineError("cannot prefill an empty prompt")
        if self.kv_cache is None:
            self.reset()
        logits = None
        for start in range(0, len(token_ids), self.prefill_chunk):
            logits = self._forward(token_ids[start:start + self.prefill_chunk], "prefill")
        return logits[-1]

    def decode(self, token_id: int) -> np.ndarray:
        """Append one token; float32 ``(vocab,)`` logits for the next."""
        return self._forward([token_id], "decode")[-1]

    def verify(self, token_ids: list[int]) -> np.ndarray:
        """Append ``token_ids`` in one pass; float32 ``(len, vocab)`` logits at every position."""
        return self._forward(token_ids, "batch_verify")
