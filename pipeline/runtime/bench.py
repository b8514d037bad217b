"""``mlc-mtp bench``: prefill and decode tokens/s and peak memory of a package, with llama.cpp
(``llama-cpp-python``) on the source GGUF measured in the same run with the same thread count.

Each engine runs in its own child process (so peak resident memory is its own), on the same
prompt token ids, ``repeats`` times; the table shows medians.  Decode is greedy.

With speculative decoding on (the package's ``speculative`` settings, or ``--speculative mtp``),
a further child generates greedy tokens after each of a set of text prompts (:data:`TEXT_PROMPTS`,
or the user's; random ids only on request, labelled synthetic: a base model continues them with
trivial repetitions that every draft predicts) with speculation off and on, alternately, and
llama.cpp decodes after the same prompts; the tables give, per prompt and as medians, decode
tokens/s off, on and llama.cpp's, the speed-ups, tokens per step, the acceptance rate per draft
position (counts summed over the repeats), and ms per draft token and per verification.  Stop
tokens are ignored there, so every run yields exactly ``decode_tokens``.

Beside the speeds: a kernel table (:func:`kernel_times`: the library's ``decode``,
``batch_verify`` and ``get_logits`` timed on their own, in ms) and a memory table: the bytes a
decode step reads (:func:`decode_bytes_per_token`, :func:`gguf_decode_bytes_per_token`), the
bandwidth that makes at the measured decode speed, and a plain multi-threaded memory read
(:func:`memory_read_gbps`) for scale.  ``busy_neighbours`` runs that many busy processes for
the whole measurement (:func:`busy_neighbours`), so the effect of contention is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import PipelineError
from ..extras import install_hint, missing_modules
from ..package.chat_config import RUNTIME_CONFIG


def _prompt(n: int, vocab: int = 262144, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return [2] + rng.integers(min(1000, vocab // 4), min(vocab, 200000), size=n - 1).tolist()


def _worker_mlc(args) -> dict:
    from .engine import Engine

    engine = Engine(args.package, model_lib=args.model_lib)
    prompt = _prompt(args.prompt_tokens, engine.chat_config["vocab_size"])
    prefill, decode = [], []
    engine.reset()
    engine.prefill(prompt[:8])  # warm-up: first calls allocate workspaces
    for _ in range(args.repeats):
        engine.reset()
        start = time.perf_counter()
        token = engine.prefill_argmax(prompt)  # greedy as `generate` runs it: the library's argmax
        prefill.append(len(prompt) / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(args.decode_tokens):
            token = engine.decode_argmax(token)
        decode.append(args.decode_tokens / (time.perf_counter() - start))
    return {"prefill": statistics.median(prefill), "decode": statistics.median(decode),
            "kernels_ms": kernel_times(engine, prompt, max(args.repeats, KERNEL_CALLS))}


# batch_verify row counts of the kernel table, and the fewest calls a kernel's median is taken over
VERIFY_ROWS = (1, 2, 4, 8)
KERNEL_CALLS = 5


def kernel_times(engine, prompt: list[int], calls: int = KERNEL_CALLS) -> dict[str, float]:
    """Median wall time in ms of ``calls`` calls (after one warm-up call) of the library's
    functions on their own, after a prefill of ``prompt`` (the KV cache rolled back after each):

    ``decode``: one decode step, ``embed`` of 1 token then ``decode`` with the KV cache's
    begin/end forward (:meth:`~pipeline.runtime.engine.Engine.run_forward`); ``batch_verify_N``:
    the same with ``batch_verify`` of N tokens (:data:`VERIFY_ROWS`); ``get_logits``: the head on
    one float ``(1, hidden)`` row (as the MTP drafter calls it).  Logits stay on the device (no
    host copy is timed); the token ids' and the row's copy to the device are included (tiny).
    The engine is left reset.
    """
    import tvm

    engine.reset()
    engine.prefill(prompt)
    tokens = [int(prompt[i % len(prompt)]) for i in range(1, max(VERIFY_ROWS) + 1)]

    def median_ms(call: Callable[[], object], rollback: int = 0) -> float:
        samples = []
        for i in range(calls + 1):
            start = time.perf_counter()
            call()
            elapsed = time.perf_counter() - start
            engine.rollback(rollback)
            if i:  # the first call is the warm-up
                samples.append(elapsed * 1000)
        return statistics.median(samples)

    times = {"decode": median_ms(lambda: engine.run_forward(tokens[:1], "decode"), rollback=1)}
    for n in VERIFY_ROWS:
        times[f"batch_verify_{n}"] = median_ms(functools.partial(engine.run_forward, tokens[:n], "batch_verify"),
                                               rollback=n)
    dtype = next((p["dtype"] for p in engine.metadata["params"] if p["name"].endswith("norm.weight")), "float32")
    row = np.random.default_rng(0).standard_normal((1, engine.hidden_size)).astype(dtype)
    get_logits = engine.vm["get_logits"]
    times["get_logits"] = median_ms(lambda: get_logits(tvm.runtime.tensor(row, engine.device), engine.params))
    engine.reset()
    return times


def _worker_llama(args) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(args.gguf), n_ctx=args.prompt_tokens + args.decode_tokens + 16,
                          n_batch=512, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    prompt = _prompt(args.prompt_tokens, llm.n_vocab())
    prefill, decode = [], []
    llm.eval(prompt[:8])
    for _ in range(args.repeats):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        prefill.append(len(prompt) / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(args.decode_tokens):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        decode.append(args.decode_tokens / (time.perf_counter() - start))
    return {"prefill": statistics.median(prefill), "decode": statistics.median(decode)}


def _worker_speculative(args) -> dict:
    """Greedy generation of ``decode_tokens`` tokens with speculation off and on, alternately, in
    one process, after each prompt of ``--prompts-ids`` (default: one of random ids); per prompt
    the medians of ``repeats`` and the step counts summed over them."""
    from .drafters import draft_length_policy, load_drafter, package_speculative
    from .engine import Engine
    from .sampling import Sampler
    from .speculative import SpeculativeStats, speculative_generate

    engine = Engine(args.package, model_lib=args.model_lib)
    engine.stop_token_ids = set()
    settings = package_speculative(engine.package, engine.runtime_config, json.loads(args.speculative))
    drafter = load_drafter(engine, settings)
    prompts = json.loads(args.prompts_ids) if args.prompts_ids else [
        _prompt(args.prompt_tokens, engine.chat_config["vocab_size"])]

    def run(prompt: list[int], chosen, tokens: int, stats: SpeculativeStats) -> float:
        for _ in speculative_generate(engine, prompt, tokens, Sampler(), chosen, draft_length_policy(settings),
                                      stats=stats):
            pass
        return (tokens - 1) / stats.decode_seconds

    def run_plain(prompt: list[int], tokens: int) -> float:  # as without a drafter: no MTP context kept
        with engine.plain_forward():
            return run(prompt, None, tokens, SpeculativeStats())

    run_plain(prompts[0], 4)  # warm-up: first calls allocate workspaces
    run(prompts[0], drafter, 4, SpeculativeStats())
    results = []
    for prompt in prompts:
        counts = SpeculativeStats()  # step counts of the prompt's speculative runs, summed
        plain, speculative = [], []
        for _ in range(args.repeats):  # alternate, so that drift in the machine's speed hits both alike
            plain.append(run_plain(prompt, args.decode_tokens))
            speculative.append(run(prompt, drafter, args.decode_tokens, counts))
        results.append({"plain_decode": statistics.median(plain), "speculative_decode": statistics.median(speculative),
                        "steps": counts.steps, "drafted": counts.drafted, "accepted": counts.accepted,
                        "proposed_at": counts.proposed_at, "accepted_at": counts.accepted_at,
                        "draft_seconds": counts.draft_seconds, "verify_seconds": counts.verify_seconds,
                        "draft_lengths": [min(counts.draft_lengths), max(counts.draft_lengths)]})
    return {"prompts": results}


def _worker_llama_decode(args) -> dict:
    """llama.cpp's greedy decode tokens/s after each prompt of ``--prompts-ids`` (median of
    ``repeats`` each), as the speculative worker decodes them."""
    import llama_cpp

    prompts = json.loads(args.prompts_ids)
    llm = llama_cpp.Llama(model_path=str(args.gguf), n_ctx=max(map(len, prompts)) + args.decode_tokens + 16,
                          n_batch=512, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    llm.eval(prompts[0][:8])
    speeds = []
    for prompt in prompts:
        runs = []
        for _ in range(args.repeats):
            llm.reset()
            llm.eval(prompt)
            start = time.perf_counter()
            for _ in range(args.decode_tokens - 1):  # as the speculative worker: the first token is prefill's
                llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
            runs.append((args.decode_tokens - 1) / (time.perf_counter() - start))
        speeds.append(statistics.median(runs))
    return {"decode": speeds}


def _worker_memory(args) -> dict:
    return {"memory_read_gbps": memory_read_gbps(args.threads, args.memory_mib, args.repeats)}


WORKERS = {"mlc": _worker_mlc, "llama": _worker_llama, "speculative": _worker_speculative,
           "llama-decode": _worker_llama_decode, "memory": _worker_memory}


# --- bytes per decode token and memory bandwidth ---------------------------------------------------

def _is_embedding_table(name: str) -> bool:
    """An embedding table gathered by token: a module path component ``embed_tokens*``
    (``model.embed_tokens.*``, Gemma 4's ``model.embed_tokens_per_layer.*``)."""
    return any(part.startswith("embed_tokens") for part in name.split("."))


def decode_bytes_per_token(package: Path, context: int) -> dict[str, int]:
    """Bytes one decode step of the package reads, at a KV cache of ``context`` tokens.

    Weights (``tensor-cache.json``'s records, each tensor's ``nbytes``): every parameter is read
    whole, except embedding tables (a name component ``embed_tokens*``), of which the gather reads
    one row (``nbytes / shape[0]``) -- but the table the LM head is tied to, ``model.embed_tokens``
    (when the package has no ``lm_head.*`` parameter), is read whole by the head, and counted once.
    KV cache: K and V of every layer over the tokens it attends to (``min(context,
    sliding_window)`` on sliding layers), ``num_key_value_heads * head_dim`` values each (Gemma 4's
    ``num_global_key_value_heads`` / ``global_head_dim`` on full layers), in the model's dtype
    (that of its ``*norm.weight`` parameters).  Reads of activations and of the KV cache's page
    tables are left out (small).

    Returns:
        ``{"weights": bytes, "kv": bytes, "total": bytes}``.

    Raises:
        PipelineError: no readable ``tensor-cache.json`` in ``package``.
    """
    path = Path(package) / "tensor-cache.json"
    try:
        records = [r for shard in json.loads(path.read_text())["records"] for r in shard["records"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PipelineError(f"{path}: cannot read its records ({err})") from None
    tied = not any(r["name"].startswith("lm_head.") for r in records)
    weights = 0
    for r in records:
        head = tied and r["name"].startswith("model.embed_tokens.")
        weights += r["nbytes"] if head or not _is_embedding_table(r["name"]) else r["nbytes"] // r["shape"][0]
    dtype = next((r["dtype"] for r in records if r["name"].endswith("norm.weight")), "float32")
    chat = json.loads((Path(package) / "mlc-chat-config.json").read_text())
    kv = kv_bytes_per_token(chat["model_config"], context, np.dtype(dtype).itemsize)
    return {"weights": weights, "kv": kv, "total": weights + kv}


def kv_bytes_per_token(model_config: dict, context: int, itemsize: int) -> int:
    """Bytes of K and V one decode step reads at ``context`` cached tokens (see
    :func:`decode_bytes_per_token`), from a package's ``model_config``."""
    layers = model_config["num_hidden_layers"]
    types = model_config.get("layer_types") or ["full_attention"] * layers
    window = model_config.get("sliding_window") or context
    total = 0
    for kind in types[:layers]:
        sliding = kind == "sliding_attention"
        heads = model_config["num_key_value_heads"] if sliding else (
            model_config.get("num_global_key_value_heads") or model_config["num_key_value_heads"])
        head_dim = model_config["head_dim"] if sliding else model_config.get("global_head_dim",
                                                                            model_config["head_dim"])
        total += 2 * heads * head_dim * itemsize * (min(context, window) if sliding else context)
    return total


def gguf_decode_bytes_per_token(gguf_path: Path) -> int:
    """Weight bytes one llama.cpp decode step reads from ``gguf_path``: every tensor's data, whole
    (a tied ``token_embd`` is the output head too, read once); with a separate ``output.weight``,
    ``token_embd`` counts one row.  Raises PipelineError for a missing or unreadable file
    (:class:`~pipeline.sources.gguf_file.GGUFSource`'s checks)."""
    from ..sources.gguf_file import GGUFSource

    source = GGUFSource(gguf_path)
    names = source.tensor_names()
    untied = "output.weight" in names
    return sum(source.tensor_nbytes(name) // (source.tensor_info(name)[0][0]
                                              if untied and name == "token_embd.weight" else 1)
               for name in names)


def memory_read_gbps(threads: int, mib: int = 1024, repeats: int = 3) -> float:
    """A plain multi-threaded memory read, GB/s (1e9 bytes/s): ``threads`` Python threads each
    sum a disjoint slice of one float32 buffer of ``mib`` MiB with numpy (whose reductions
    release the GIL), started together; the median of ``repeats`` passes, after one untimed pass.
    Use a buffer far larger than the last-level cache (1 GiB against 32 MiB here)."""
    data = np.ones(mib * 2**20 // 4, dtype=np.float32)
    bounds = np.linspace(0, data.size, threads + 1).astype(int)
    slices = [data[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]

    def one_pass() -> float:
        gate = threading.Barrier(threads + 1)

        def read(part: np.ndarray) -> None:
            gate.wait()
            part.sum()

        workers = [threading.Thread(target=read, args=(part,)) for part in slices]
        for worker in workers:
            worker.start()
        gate.wait()
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        return data.nbytes / (time.perf_counter() - start) / 1e9

    one_pass()
    return statistics.median(one_pass() for _ in range(repeats))


# --- contention -------------------------------------------------------------------------------------

# a busy neighbour: one pure-Python spin loop, one core's worth of work, pinned to no core
_SPIN = "while True:\n    pass\n"


@contextlib.contextmanager
def busy_neighbours(n: int) -> Iterator[list[subprocess.Popen]]:
    """Run ``n`` busy processes (each a pure-Python spin loop, no CPU affinity set) for the block;
    yields them; they are killed and reaped on leaving, however the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL) for _ in range(n)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def _worker_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=sorted(WORKERS), required=True)
    p.add_argument("--package", type=Path)
    p.add_argument("--gguf", type=Path)
    p.add_argument("--model-lib", type=Path)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--speculative", default="{}", help="speculative overrides, JSON")
    p.add_argument("--prompts-ids", help="the speculative and llama-decode workers' prompts, JSON lists of token "
                                         "ids (default: one of random ids)")
    p.add_argument("--memory-mib", type=int, default=1024, help="the memory worker's buffer, MiB")
    return p


def run_worker(argv: list[str]) -> dict:
    """Run one measurement (``--worker NAME`` and its settings, as ``run_in_child`` passes them) in
    this process; its results with this process's peak resident memory (``peak_rss_mib``, MiB)."""
    args = _worker_parser().parse_args(argv)
    result = WORKERS[args.worker](args)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_in_child(argv: list[str], threads: int) -> dict:
    """:func:`run_worker` in a child process with ``threads`` threads."""
    cmd = [sys.executable, "-m", "pipeline.runtime.bench", *argv]
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"bench: the {argv[1]} run failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench(package: Path, prompt_tokens: int = 128, decode_tokens: int = 64, threads: int | None = None,
              gguf: Path | None = None, model_lib=None, repeats: int = 3, speculative: dict | None = None,
              runner: Callable[[list[str], int], dict] = run_in_child, busy_neighbour: int = 0,
              memory_mib: int = 1024, prompts: list[str] | None = None) -> dict:
    """Measure the package and its llama.cpp peer, and speculative decoding when the package's
    speculative settings with the ``speculative`` overrides (``mode``, ``draft_length``,
    ``adaptive``; None values keep the package's) turn it on; print the tables.  With
    ``busy_neighbour`` > 0, that many busy processes run through every measurement
    (:func:`busy_neighbours`).  ``memory_mib``: the memory-read measurement's buffer.
    ``prompts``: the speculative measurement's text prompts (default :data:`TEXT_PROMPTS`; ``[]``:
    one prompt of ``prompt_tokens`` random ids, labelled synthetic).

    Returns:
        ``{"rows": [...], "speculative": {...} or None, "memory_read_gbps": float}``: per engine
        ``prefill`` / ``decode`` (tokens/s), ``peak_rss_mib``, ``bytes_per_token`` (weights + KV,
        :func:`decode_bytes_per_token`; for llama.cpp :func:`gguf_decode_bytes_per_token` and
        its float16 KV) and ``gbps`` (bytes per token x decode tokens/s / 1e9); the package's row
        also ``kernels_ms`` (:func:`kernel_times`) and ``bytes`` (weights, kv, total); for
        speculation, :func:`summarize_speculative`'s dict with the run's ``peak_rss_mib``.
    ``runner(argv, threads)`` runs one worker (:func:`run_worker`'s ``argv``); by default in a
    child process.

    Raises:
        PipelineError: not a package, bad speculative settings or no drafter for them, a negative
            ``busy_neighbour``, or a failed run.
    """
    from .drafters import drafter_files, package_speculative

    package = Path(package)
    runtime = package / RUNTIME_CONFIG
    if not runtime.is_file():
        raise PipelineError(f"{package}: not a package built by mlc-mtp (no mlc-mtp-config.json)")
    runtime_config = json.loads(runtime.read_text())
    settings = package_speculative(package, runtime_config, speculative)
    drafter_files(package, settings)  # refuse a missing drafter before measuring anything
    if settings["mode"] != "off" and decode_tokens < 2:
        raise PipelineError(f"--decode-tokens: {decode_tokens}, expected >= 2 with speculative decoding "
                            f"(the first token comes from prefill)")
    if busy_neighbour < 0:
        raise PipelineError(f"--busy-neighbour: {busy_neighbour}, expected a count >= 0")
    threads = threads or os.cpu_count() or 1
    common = ["--package", str(package), "--prompt-tokens", str(prompt_tokens), "--decode-tokens",
              str(decode_tokens), "--threads", str(threads), "--repeats", str(repeats)]
    common += ["--model-lib", str(model_lib)] if model_lib else []
    chat = json.loads((package / "mlc-chat-config.json").read_text())
    context = prompt_tokens + decode_tokens // 2  # the KV cache's mean length over the decode steps
    source = runtime_config.get("source", {})
    gguf = gguf or (Path(source["path"]) if source.get("format") == "gguf" else None)
    peer_missing = missing_modules("bench")
    if gguf is None:
        print("no GGUF for the llama.cpp peer: pass --gguf", file=sys.stderr)
    elif peer_missing:  # measure our engine anyway; say at the end how to add the peer
        gguf = None
    with busy_neighbours(busy_neighbour):
        rows = [{"engine": f"mlc-mtp ({chat['quantization']}, TVM CPU)",
                 **runner(["--worker", "mlc", *common], threads)}]
        rows[0]["bytes"] = decode_bytes_per_token(package, context)
        rows[0]["bytes_per_token"] = rows[0]["bytes"]["total"]
        if gguf is not None:
            rows.append({"engine": f"llama.cpp ({gguf.name})",
                         **runner(["--worker", "llama", *common, "--gguf", str(gguf)], threads)})
            # llama.cpp's KV cache: float16 by default
            rows[1]["bytes_per_token"] = (gguf_decode_bytes_per_token(gguf)
                                          + kv_bytes_per_token(chat["model_config"], context, 2))
        memory = runner(["--worker", "memory", *common, "--memory-mib", str(memory_mib)], threads)
        result = None
        if settings["mode"] != "off":
            result = measure_speculative(package, common, threads, speculative, prompts, prompt_tokens, gguf, runner)
    for row in rows:
        row["gbps"] = row["bytes_per_token"] * row["decode"] / 1e9
    neighbours = f", {busy_neighbour} busy neighbour process(es)" if busy_neighbour else ""
    print(f"\n{prompt_tokens}-token prompt, {decode_tokens} greedy decode steps, {threads} threads, "
          f"median of {repeats}{neighbours}{_load_note()}\n")
    print(f"| {'engine':<44} | prefill tok/s | decode tok/s | peak RSS MiB |")
    print(f"|{'-' * 46}|---------------|--------------|--------------|")
    for row in rows:
        print(f"| {row['engine']:<44} | {row['prefill']:13.1f} | {row['decode']:12.1f} | {row['peak_rss_mib']:12.0f} |")
    print_kernel_table(rows[0]["kernels_ms"], prompt_tokens, max(repeats, KERNEL_CALLS))
    print_memory_table(rows, memory["memory_read_gbps"], memory_mib, threads, context)
    if result is not None:
        print_speculative_table(result, settings, decode_tokens, threads, repeats)
    if peer_missing:
        print(f"\nllama.cpp peer left out: llama-cpp-python is not installed ({install_hint('bench')}; it builds "
              f"from source: `bash scripts/venv.sh bench` builds its wheel once into ~/.cache/mlc-mtp-wheels)",
              file=sys.stderr)
    return {"rows": rows, "speculative": result, "memory_read_gbps": memory["memory_read_gbps"]}


def _load_note() -> str:
    """The machine's 1-minute load average beside its CPU count, and a warning when other work
    takes more than half of them: speeds under contention are fractions of a quiet machine's
    (llama.cpp's, whose threads spin, most of all)."""
    if not hasattr(os, "getloadavg"):
        return ""
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    warning = "; the machine is busy: speeds are not a quiet machine's" if load > cpus / 2 else ""
    return f"; load average {load:.1f} on {cpus} CPUs at the end{warning}"


def print_kernel_table(kernels: dict[str, float], prompt_tokens: int, calls: int) -> None:
    """Print :func:`kernel_times`' measurements (ms) and batch_verify(4) / decode."""
    print(f"\nkernels of the package, ms (median of {calls} calls after a {prompt_tokens}-token prefill; "
          f"embed and KV bookkeeping included, logits left on the device)\n")
    print("| kernel             |       ms |")
    print("|--------------------|----------|")
    print(f"| {'decode step':<18} | {kernels['decode']:8.2f} |")
    for n in VERIFY_ROWS:
        print(f"| {f'batch_verify({n})':<18} | {kernels[f'batch_verify_{n}']:8.2f} |")
    print(f"| {'get_logits(1 row)':<18} | {kernels['get_logits']:8.2f} |")
    print(f"\nbatch_verify(4) / decode step: {kernels['batch_verify_4'] / kernels['decode']:.2f}x")


def print_memory_table(rows: list[dict], memory_gbps: float, memory_mib: int, threads: int, context: int) -> None:
    """Print bytes read per decode token, the bandwidth achieved at the measured decode speed and
    its ratio to the plain memory read (:func:`memory_read_gbps`)."""
    print(f"\nmemory: bytes a decode step reads (weights + KV cache at {context} tokens), at the decode speed "
          f"above; plain read: numpy sums over a {memory_mib} MiB buffer in {threads} threads\n")
    print(f"| {'engine':<44} | MB/token | GB/s achieved | GB/s memory read | ratio |")
    print(f"|{'-' * 46}|----------|---------------|------------------|-------|")
    for row in rows:
        print(f"| {row['engine']:<44} | {row['bytes_per_token'] / 1e6:8.1f} | {row['gbps']:13.2f} | "
              f"{memory_gbps:16.2f} | {row['gbps'] / memory_gbps:5.2f} |")
    package = rows[0]["bytes"]
    print(f"\n{rows[0]['engine']}: {package['weights'] / 1e6:.1f} MB weights + {package['kv'] / 1e6:.2f} MB KV cache "
          f"per token")


# Text prompts of the speculative measurement (none is among the MTP head's training prompts,
# tools/mtp_prompts.py): prose, a fact, code, a list, a chat turn in Gemma's template.
TEXT_PROMPTS = ("A good friend is someone who", "The planet Mars has two small moons,", "def quicksort(items):\n",
                "Here is how to plant a tree:\n1.",
                "<start_of_turn>user\nWhat is the tallest mountain in the world?<end_of_turn>\n"
                "<start_of_turn>model\n")
SYNTHETIC = "random token ids (synthetic)"


def speculative_prompts(package: Path, chat: dict, prompts: list[str] | None,
                         prompt_tokens: int) -> tuple[list[str], list[list[int]]]:
    """``(labels, token ids)`` of the speculative measurement's prompts: ``prompts`` (text; default
    :data:`TEXT_PROMPTS`) tokenized by the package's tokenizer after its BOS token, or, for
    ``prompts == []``, one prompt of ``prompt_tokens`` random ids (:data:`SYNTHETIC`)."""
    if prompts == []:
        return [SYNTHETIC], [_prompt(prompt_tokens, chat["vocab_size"])]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(package / "tokenizer.json"))
    texts = list(prompts or TEXT_PROMPTS)
    return texts, [[chat["bos_token_id"]] + tokenizer.encode(t, add_special_tokens=False).ids for t in texts]


def measure_speculative(package: Path, common: list[str], threads: int, speculative: dict | None,
                        prompts: list[str] | None, prompt_tokens: int, gguf: Path | None,
                        runner: Callable[[list[str], int], dict] = run_in_child) -> dict:
    """Run the speculative worker (speculation off and on) and, with ``gguf``, llama.cpp's decode
    after the same prompts (:func:`speculative_prompts`); ``common``: the workers' shared
    arguments (package, decode tokens, threads, repeats).  Returns :func:`summarize_speculative`'s
    dict with the speculative run's ``peak_rss_mib``."""
    chat = json.loads((package / "mlc-chat-config.json").read_text())
    labels, ids = speculative_prompts(package, chat, prompts, prompt_tokens)
    ids_arg = ["--prompts-ids", json.dumps(ids)]
    per_prompt = runner(["--worker", "speculative", *common, "--speculative", json.dumps(speculative or {}), *ids_arg],
                        threads)
    llama = (runner(["--worker", "llama-decode", *common, "--gguf", str(gguf), *ids_arg], threads)["decode"]
             if gguf is not None else None)
    result = summarize_speculative(per_prompt["prompts"], labels, llama)
    result["peak_rss_mib"] = per_prompt["peak_rss_mib"]
    return result


def summarize_speculative(per_prompt: list[dict], labels: list[str], llama: list[float] | None) -> dict:
    """The speculative measurement over its prompts: the per-prompt results (the speculative
    worker's, with ``prompt``, ``speed_up``, ``acceptance_rate``, ``tokens_per_step`` and, with a
    llama.cpp peer, ``llama_decode`` added) under ``prompts``; medians over the prompts of
    ``plain_decode``, ``speculative_decode``, ``speed_up`` and ``llama_decode`` (None without the
    peer) with ``vs_llama``; over all steps of all prompts: ``steps``, ``proposed_at``,
    ``acceptance_rate`` per draft position, ``tokens_per_step``, ``accepted_per_step``,
    ``ms_per_draft_token``, ``ms_per_verify``, ``draft_lengths`` [min, max]; and
    ``draft_share``: ms per draft token over a plain decode step (``1000 / plain_decode``)."""
    proposed = [0] * max(len(r["proposed_at"]) for r in per_prompt)
    accepted = list(proposed)
    for i, r in enumerate(per_prompt):
        r["prompt"] = labels[i]
        r["speed_up"] = r["speculative_decode"] / r["plain_decode"]
        r["acceptance_rate"] = [a / n if n else 0.0 for a, n in zip(r["accepted_at"], r["proposed_at"])]
        r["tokens_per_step"] = 1 + r["accepted"] / r["steps"] if r["steps"] else 0.0
        if llama is not None:
            r["llama_decode"] = llama[i]
        for k, (n, a) in enumerate(zip(r["proposed_at"], r["accepted_at"])):
            proposed[k] += n
            accepted[k] += a
    steps, drafted = sum(r["steps"] for r in per_prompt), sum(r["drafted"] for r in per_prompt)
    accepted_total = sum(r["accepted"] for r in per_prompt)
    median = statistics.median
    result = {"prompts": per_prompt, "plain_decode": median(r["plain_decode"] for r in per_prompt),
              "speculative_decode": median(r["speculative_decode"] for r in per_prompt),
              "speed_up": median(r["speed_up"] for r in per_prompt), "steps": steps, "proposed_at": proposed,
              "acceptance_rate": [a / n if n else 0.0 for a, n in zip(accepted, proposed)],
              "accepted_per_step": accepted_total / steps if steps else 0.0,
              "tokens_per_step": 1 + accepted_total / steps if steps else 0.0,
              "ms_per_draft_token": 1000 * sum(r["draft_seconds"] for r in per_prompt) / drafted if drafted else 0.0,
              "ms_per_verify": 1000 * sum(r["verify_seconds"] for r in per_prompt) / steps if steps else 0.0,
              "draft_lengths": [min(r["draft_lengths"][0] for r in per_prompt),
                                max(r["draft_lengths"][1] for r in per_prompt)],
              "llama_decode": None if llama is None else median(llama)}
    result["vs_llama"] = None if llama is None else result["speculative_decode"] / result["llama_decode"]
    result["draft_share"] = result["ms_per_draft_token"] * result["plain_decode"] / 1000
    return result


def print_speculative_table(result: dict, settings: dict, decode_tokens: int, threads: int, repeats: int) -> None:
    """Print speculative decoding's measurements (``result`` as :func:`summarize_speculative` gives them)."""
    policy = (f"adaptive in [{settings['min_draft_length']}, {settings['max_draft_length']}], from "
              if settings["adaptive"] else "fixed at ")
    low, high = result["draft_lengths"]
    prompts = result["prompts"]
    peer = result["llama_decode"] is not None
    print(f"\nspeculative decoding ({settings['mode']} drafter, draft length {policy}{settings['draft_length']}; "
          f"used {low}-{high}): {decode_tokens} greedy tokens after each of {len(prompts)} prompt(s), "
          f"{threads} threads, median of {repeats}\n")
    llama_head = (" llama.cpp tok/s |", "-----------------|") if peer else ("", "")
    print(f"| {'prompt':<32} | off tok/s | {settings['mode']} tok/s | speed-up | tokens/step | acceptance 1 / 2 / 3 |"
          + llama_head[0])
    print(f"|{'-' * 34}|-----------|-----------|----------|-------------|----------------------|" + llama_head[1])
    for r in prompts:
        rates = " / ".join(f"{x:.2f}" for x in r["acceptance_rate"][:3])
        llama = f" {r['llama_decode']:15.1f} |" if peer else ""
        print(f"| {json.dumps(r['prompt'])[1:-1][:32]:<32} | {r['plain_decode']:9.1f} | {r['speculative_decode']:9.1f} "
              f"| {r['speed_up']:7.2f}x | {r['tokens_per_step']:11.2f} | {rates:<20} |" + llama)
    print("\n| decoding (median over prompts) | decode tok/s | speed-up | tokens/step | accepted/step |")
    print("|--------------------------------|--------------|----------|-------------|---------------|")
    print(f"| {'off':<30} | {result['plain_decode']:12.1f} | {1.0:7.2f}x | {1.0:11.2f} | {'-':>13} |")
    print(f"| {settings['mode']:<30} | {result['speculative_decode']:12.1f} | {result['speed_up']:7.2f}x | "
          f"{result['tokens_per_step']:11.2f} | {result['accepted_per_step']:13.2f} |")
    if peer:
        print(f"| {'llama.cpp, no speculation':<30} | {result['llama_decode']:12.1f} | "
              f"{result['llama_decode'] / result['plain_decode']:7.2f}x | {1.0:11.2f} | {'-':>13} |")
        print(f"\n{settings['mode']} decode / llama.cpp decode: {result['vs_llama']:.2f}x")
    positions = range(1, len(result["proposed_at"]) + 1)
    print("\n| draft position  | " + " | ".join(f"{i:5d}" for i in positions) + " |")
    print("|-----------------|" + "|".join("-------" for _ in positions) + "|")
    print("| proposed        | " + " | ".join(f"{n:5d}" for n in result["proposed_at"]) + " |")
    print("| acceptance rate | " + " | ".join(f"{r:5.3f}" for r in result["acceptance_rate"]) + " |")
    print(f"\ndrafting: {result['ms_per_draft_token']:.2f} ms per draft token ({100 * result['draft_share']:.1f}% of "
          f"a plain decode step); verification: {result['ms_per_verify']:.2f} ms per step (base pass, acceptance, "
          f"roll-back)")
    print(f"peak RSS of the speculative run (base model and drafter): {result['peak_rss_mib']:.0f} MiB")


def _main() -> None:
    try:
        print(json.dumps(run_worker(sys.argv[1:])))
    except PipelineError as err:  # one line for the parent to report
        print(err, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    _main()
