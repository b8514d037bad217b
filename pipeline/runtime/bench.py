"""``mlc-mtp bench``: prefill and decode tokens/s and peak memory of a package, with llama.cpp
(``llama-cpp-python``) on the source GGUF measured in the same run with the same thread count.

Each engine runs in its own child process (so peak resident memory is its own), on the same
prompt token ids, ``repeats`` times; the table shows medians.  Decode is greedy.

With speculative decoding on (the package's ``speculative`` settings, or ``--speculative mtp``),
a further child generates the same greedy tokens with speculation off and on, alternately,
and a second table gives decode tokens/s, the speed-up over speculation off, mean tokens and
accepted draft tokens per step, and the acceptance rate per draft position (counts summed over
the repeats).  Stop tokens are ignored there, so every run yields exactly ``decode_tokens``.
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
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import PipelineError
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
        logits = engine.prefill(prompt)
        prefill.append(len(prompt) / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(args.decode_tokens):
            logits = engine.decode(int(np.argmax(logits)))
        decode.append(args.decode_tokens / (time.perf_counter() - start))
    return {"prefill": statistics.median(prefill), "decode": statistics.median(decode)}


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
    """Greedy generation of ``decode_tokens`` tokens with speculation off and on, in one process."""
    from .drafters import draft_length_policy, load_drafter, package_speculative
    from .engine import Engine
    from .sampling import Sampler
    from .speculative import SpeculativeStats, speculative_generate

    engine = Engine(args.package, model_lib=args.model_lib)
    engine.stop_token_ids = set()
    settings = package_speculative(engine.package, engine.runtime_config, json.loads(args.speculative))
    drafter = load_drafter(engine, settings)
    prompt = json.loads(args.prompt_ids) if args.prompt_ids else _prompt(args.prompt_tokens,
                                                                          engine.chat_config["vocab_size"])
    counts = SpeculativeStats()  # step counts of every speculative run, summed

    def run(chosen, tokens: int, stats: SpeculativeStats) -> float:
        for _ in speculative_generate(engine, prompt, tokens, Sampler(), chosen, draft_length_policy(settings),
                                      stats=stats):
            pass
        return (tokens - 1) / stats.decode_seconds

    def run_plain(tokens: int) -> float:  # as without a drafter: no MTP context kept
        with engine.plain_forward():
            return run(None, tokens, SpeculativeStats())

    run_plain(4)  # warm-up: first calls allocate workspaces
    run(drafter, 4, SpeculativeStats())
    plain, speculative = [], []
    for _ in range(args.repeats):  # alternate, so that drift in the machine's speed hits both alike
        plain.append(run_plain(args.decode_tokens))
        speculative.append(run(drafter, args.decode_tokens, counts))
    return {"plain_decode": statistics.median(plain), "speculative_decode": statistics.median(speculative),
            "steps": counts.steps, "tokens_per_step": counts.tokens_per_step,
            "accepted_per_step": counts.accepted_per_step, "proposed_at": counts.proposed_at,
            "acceptance_rate": counts.acceptance_rate(), "draft_lengths": [min(counts.draft_lengths),
                                                                         max(counts.draft_lengths)]}


WORKERS = {"mlc": _worker_mlc, "llama": _worker_llama, "speculative": _worker_speculative}


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
    p.add_argument("--prompt-ids", help="the speculative worker's prompt, JSON token ids (default: random ids)")
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
              runner: Callable[[list[str], int], dict] = run_in_child) -> dict:
    """Measure the package and its llama.cpp peer, and speculative decoding when the package's
    speculative settings with the ``speculative`` overrides (``mode``, ``draft_length``,
    ``adaptive``; None values keep the package's) turn it on; print the tables.

    Returns:
        ``{"rows": [...], "speculative": {...} or None}``: per engine ``prefill`` / ``decode``
        (tokens/s) and ``peak_rss_mib``; for speculation, ``plain_decode`` / ``speculative_decode``
        (tokens/s), ``speed_up``, ``tokens_per_step``, ``accepted_per_step``, ``proposed_at`` and
        ``acceptance_rate`` per draft position, ``draft_lengths`` [min, max] used.
    ``runner(argv, threads)`` runs one worker (:func:`run_worker`'s ``argv``); by default in a
    child process.

    Raises:
        PipelineError: not a package, bad speculative settings or no drafter for them, or a failed run.
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
    threads = threads or os.cpu_count() or 1
    common = ["--package", str(package), "--prompt-tokens", str(prompt_tokens), "--decode-tokens",
              str(decode_tokens), "--threads", str(threads), "--repeats", str(repeats)]
    common += ["--model-lib", str(model_lib)] if model_lib else []
    chat = json.loads((package / "mlc-chat-config.json").read_text())
    rows = [{"engine": f"mlc-mtp ({chat['quantization']}, TVM CPU)", **runner(["--worker", "mlc", *common], threads)}]
    source = runtime_config.get("source", {})
    gguf = gguf or (Path(source["path"]) if source.get("format") == "gguf" else None)
    if gguf is None:
        print("no GGUF for the llama.cpp peer: pass --gguf", file=sys.stderr)
    else:
        rows.append({"engine": f"llama.cpp ({gguf.name})",
                     **runner(["--worker", "llama", *common, "--gguf", str(gguf)], threads)})
    print(f"\n{prompt_tokens}-token prompt, {decode_tokens} greedy decode steps, {threads} threads, "
          f"median of {repeats}\n")
    print(f"| {'engine':<44} | prefill tok/s | decode tok/s | peak RSS MiB |")
    print(f"|{'-' * 46}|---------------|--------------|--------------|")
    for row in rows:
        print(f"| {row['engine']:<44} | {row['prefill']:13.1f} | {row['decode']:12.1f} | {row['peak_rss_mib']:12.0f} |")
    result = None
    if settings["mode"] != "off":
        result = runner(["--worker", "speculative", *common, "--speculative", json.dumps(speculative or {})], threads)
        result["speed_up"] = result["speculative_decode"] / result["plain_decode"]
        print_speculative_table(result, settings, prompt_tokens, decode_tokens, threads, repeats)
    return {"rows": rows, "speculative": result}


def print_speculative_table(result: dict, settings: dict, prompt_tokens: int, decode_tokens: int, threads: int,
                            repeats: int) -> None:
    """Print speculative decoding's measurements (``result`` as :func:`run_bench` returns them)."""
    policy = (f"adaptive in [{settings['min_draft_length']}, {settings['max_draft_length']}], from "
              if settings["adaptive"] else "fixed at ")
    low, high = result["draft_lengths"]
    print(f"\nspeculative decoding ({settings['mode']} drafter, draft length {policy}{settings['draft_length']}; "
          f"used {low}-{high}): {decode_tokens} greedy tokens after a {prompt_tokens}-token prompt, "
          f"{threads} threads, median of {repeats}\n")
    print("| decoding          | decode tok/s | speed-up | tokens/step | accepted/step |")
    print("|-------------------|--------------|----------|-------------|---------------|")
    print(f"| {'off':<17} | {result['plain_decode']:12.1f} | {1.0:7.2f}x | {1.0:11.2f} | {'-':>13} |")
    print(f"| {settings['mode']:<17} | {result['speculative_decode']:12.1f} | {result['speed_up']:7.2f}x | "
          f"{result['tokens_per_step']:11.2f} | {result['accepted_per_step']:13.2f} |")
    positions = range(1, len(result["proposed_at"]) + 1)
    print("\n| draft position  | " + " | ".join(f"{i:5d}" for i in positions) + " |")
    print("|-----------------|" + "|".join("-------" for _ in positions) + "|")
    print("| proposed        | " + " | ".join(f"{n:5d}" for n in result["proposed_at"]) + " |")
    print("| acceptance rate | " + " | ".join(f"{r:5.3f}" for r in result["acceptance_rate"]) + " |")
    print(f"\npeak RSS of the speculative run (base model and drafter): {result['peak_rss_mib']:.0f} MiB")


def _main() -> None:
    try:
        print(json.dumps(run_worker(sys.argv[1:])))
    except PipelineError as err:  # one line for the parent to report
        print(err, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    _main()
