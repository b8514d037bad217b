"""``mlc-mtp bench``: prefill and decode tokens/s and peak memory of a package, with llama.cpp
(``llama-cpp-python``) on the source GGUF measured in the same run with the same thread count.

Each engine runs in its own child process (so peak resident memory is its own), on the same
prompt token ids, ``repeats`` times; the table shows medians.  Decode is greedy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import PipelineError
from ..package.chat_config import RUNTIME_CONFIG


def _prompt(n: int, vocab: int = 262144, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return [2] + rng.integers(1000, min(vocab, 200000), size=n - 1).tolist()


def _worker_mlc(args) -> dict:
    from .engine import Engine  # pylint: disable=import-outside-toplevel

    engine = Engine(args.package, model_lib=args.model_lib)
    prompt = _prompt(args.prompt_tokens, engine.chat_config["vocab_size"])
    prefill, decode = [], []
    engine.reset()
    engine.prefill(prompt[:8])  # warm-up: first calls allocate workspaces
    for _ in range(args.repeats):
        engine.reset()
        start = time.perf_counter()
        logits = engine.prefill(prompt)
        prefill.append(len(prompt) / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(args.decode_tokens):
            logits = engine.decode(int(np.argmax(logits)))
        decode.append(args.decode_tokens / (time.perf_counter() - start))
    return {"prefill": statistics.median(prefill), "decode": statistics.median(decode)}


def _worker_llama(args) -> dict:
    import llama_cpp  # pylint: disable=import-outside-toplevel

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


def _child(engine: str, package: Path, gguf: Path | None, model_lib, prompt_tokens: int, decode_tokens: int,
           threads: int, repeats: int) -> dict:
    cmd = [sys.executable, "-m", "pipeline.runtime.bench", "--worker", engine, "--package", str(package),
           "--prompt-tokens", str(prompt_tokens), "--decode-tokens", str(decode_tokens),
           "--threads", str(threads), "--repeats", str(repeats)]
    if gguf:
        cmd += ["--gguf", str(gguf)]
    if model_lib:
        cmd += ["--model-lib", str(model_lib)]
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"bench: the {engine} run failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench(package: Path, prompt_tokens: int = 128, decode_tokens: int = 64, threads: int | None = None,
              gguf: Path | None = None, model_lib=None, repeats: int = 3) -> list[dict]:
    """Measure the package and its llama.cpp peer; print a table and return its rows.

    Raises:
        PipelineError: not a package, no GGUF for the peer (pass ``gguf``), or a failed run.
    """
    package = Path(package)
    runtime = package / RUNTIME_CONFIG
    if not runtime.is_file():
        raise PipelineError(f"{package}: not a package built by mlc-mtp (no mlc-mtp-config.json)")
    source = json.loads(runtime.read_text()).get("source", {})
    threads = threads or os.cpu_count() or 1
    chat = json.loads((package / "mlc-chat-config.json").read_text())
    rows = [{"engine": f"mlc-mtp ({chat['quantization']}, TVM CPU)",
             **_child("mlc", package, None, model_lib, prompt_tokens, decode_tokens, threads, repeats)}]
    gguf = gguf or (Path(source["path"]) if source.get("format") == "gguf" else None)
    if gguf is None:
        print("no GGUF for the llama.cpp peer: pass --gguf", file=sys.stderr)
    else:
        rows.append({"engine": f"llama.cpp ({gguf.name})",
                     **_child("llama", package, gguf, None, prompt_tokens, decode_tokens, threads, repeats)})
    print(f"\n{prompt_tokens}-token prompt, {decode_tokens} greedy decode steps, {threads} threads, "
          f"median of {repeats}\n")
    print(f"| {'engine':<44} | prefill tok/s | decode tok/s | peak RSS MiB |")
    print(f"|{'-' * 46}|---------------|--------------|--------------|")
    for row in rows:
        print(f"| {row['engine']:<44} | {row['prefill']:13.1f} | {row['decode']:12.1f} | {row['peak_rss_mib']:12.0f} |")
    return rows


def _main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=["mlc", "llama"], required=True)
    p.add_argument("--package", type=Path)
    p.add_argument("--gguf", type=Path)
    p.add_argument("--model-lib", type=Path)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    result = _worker_mlc(args) if args.worker == "mlc" else _worker_llama(args)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
