"""Speed of the CUDA builds on a GPU machine with TVM's runtime only (``scripts/run_cuda_check.sh
speed`` runs it; docs/cuda.md has the numbers).  One process, one GPU, batch 1, greedy:

- ``plain``: prefill and decode tok/s of the Gemma 3 270M MTP package's base at a 128- and a
  1024-token context (128 tokens decoded), the token chosen on the device
  (:meth:`~pipeline.runtime.engine.Engine.decode_argmax`, only the id copied back) and, beside it,
  from the full float32 logits copied to the host (the runtime before ``argmax_logits``);
- ``step``: one decode step taken apart, each part timed on its own with the device synchronized
  (ms, median): ``embed``, the forward (``decode`` with the KV cache's begin/end), ``argmax_logits``,
  the logits' copy to the host, and a whole ``decode_argmax`` call;
- ``speculative``: per text prompt (bench's :data:`~pipeline.runtime.bench.TEXT_PROMPTS`), greedy
  decoding with speculation off and on (the package's speculative settings), alternating, on one
  engine: tok/s, the speed-up, whether the tokens are identical, per-position acceptance, tokens
  per step, ms per draft token and per verify;
- ``assistant``: the same for the tiny random Gemma 4 with its random assistant (the check is the
  identical output on CUDA and against the CPU build; acceptance of random weights means nothing).

The first three for the package's CUDA library and, where ``scripts/cuda_check_packages.py`` put
them beside, the same built with CUDA graphs (``*-cudagraph.so``) and with the previous run's
kernels (``*-before.so``: no few-row GEMV dispatch, no decode key split), whose greedy tokens must
equal the first's.

Usage: ``python scripts/gpu_speed.py PACKAGES_DIR [--out FILE.json] [--repeats N]`` with
``PACKAGES_DIR/gemma3-270m-mtp-q4f16_1`` and ``PACKAGES_DIR/tiny-e2b``
(``scripts/cuda_check_packages.py --speculative``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import cuda_runtime_only  # noqa: E402,F401  (NVRTC compile callback; the runtime imported through it)

from pipeline.runtime.bench import TEXT_PROMPTS  # noqa: E402
from pipeline.runtime.drafters import draft_length_policy, load_drafter, package_speculative  # noqa: E402
from pipeline.runtime.engine import Engine  # noqa: E402
from pipeline.runtime.generate import generate  # noqa: E402
from pipeline.runtime.sampling import Sampler  # noqa: E402
from pipeline.runtime.speculative import SpeculativeStats, speculative_generate  # noqa: E402

DECODE_TOKENS = 128
CUDA_GRAPH_SUFFIX = "-cudagraph"  # scripts/cuda_check_packages.py's name of the CUDA-graph variant
# scripts/cuda_check_packages.py's library variants beside the package's own: name -> file suffix
VARIANT_SUFFIXES = {"cuda_graphs": CUDA_GRAPH_SUFFIX, "before": "-before"}


def context_prompt(engine: Engine, n: int) -> list[int]:
    """``n`` token ids of ordinary text (a numbered list, repeated as needed) after BOS."""
    text = "".join(f"Step {i}: water the plants, check the soil and write down what changed.\n" for i in range(200))
    ids = engine.tokenizer.encode(text, add_special_tokens=False).ids
    return [engine.chat_config["bos_token_id"]] + ids[:n - 1]


def plain_speed(engine: Engine, n: int, repeats: int) -> dict:
    """Prefill tok/s of an ``n``-token prompt; decode tok/s of DECODE_TOKENS after it, argmax on the
    device and on the host (medians over ``repeats``; a warm-up run first)."""
    prompt = context_prompt(engine, n)
    out = {"prompt_tokens": len(prompt)}
    for how in ("device_argmax", "host_argmax"):
        prefill, decode = [], []
        for r in range(repeats + 1):
            engine.reset()
            start = time.perf_counter()
            if how == "device_argmax":
                token = engine.prefill_argmax(prompt)
            else:
                token = int(np.argmax(engine.prefill(prompt)))
            prefill_s = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(DECODE_TOKENS):
                token = (engine.decode_argmax(token) if how == "device_argmax"
                         else int(np.argmax(engine.decode(token))))
            if r:  # the first run warms up
                prefill.append(len(prompt) / prefill_s)
                decode.append(DECODE_TOKENS / (time.perf_counter() - start))
        out[how] = {"prefill_tok_s": statistics.median(prefill), "decode_tok_s": statistics.median(decode)}
    return out


def step_breakdown(engine: Engine, n: int, calls: int = 50) -> dict:
    """Median ms of the parts of one decode step after an ``n``-token prompt (module docstring)."""
    import tvm
    import tvm_ffi

    prompt = context_prompt(engine, n)
    engine.reset()
    token = engine.prefill_argmax(prompt)
    sync = engine.device.sync
    builtin = tvm.get_global_func
    begin, end = builtin("vm.builtin.kv_state_begin_forward"), builtin("vm.builtin.kv_state_end_forward")
    popn = builtin("vm.builtin.kv_state_popn")
    ids = tvm.runtime.tensor(np.array([token], np.int32), engine.device)

    def timed(call, rollback: bool = False) -> float:
        samples = []
        for i in range(calls + 1):
            sync()
            start = time.perf_counter()
            call()
            sync()
            if i:
                samples.append(1000 * (time.perf_counter() - start))
            if rollback:
                engine.rollback(1)
        return statistics.median(samples)

    embeds = engine.vm["embed"](ids, engine.params)
    view = embeds._create_view((1, 1, embeds.shape[-1]))

    def forward():
        begin(engine.kv_cache, tvm_ffi.Shape((0,)), tvm_ffi.Shape((1,)))
        out, engine.kv_cache = engine.vm["decode"](view, engine.kv_cache, engine.params)
        end(engine.kv_cache)
        popn(engine.kv_cache, 0, 1)
        return out

    logits = forward()
    flat = logits._create_view((1, logits.shape[-1]))
    return {"context": len(prompt),
            "embed_ms": timed(lambda: engine.vm["embed"](ids, engine.params)),
            "forward_ms": timed(forward),
            "argmax_logits_ms": timed(lambda: engine._argmax(flat)),
            "logits_to_host_ms": timed(lambda: logits.numpy()),
            "decode_argmax_ms": timed(lambda: engine.decode_argmax(token), rollback=True),
            "decode_host_logits_ms": timed(lambda: int(np.argmax(engine.decode(token))), rollback=True)}


def verify_breakdown(engine: Engine, n: int = 128, rows: tuple[int, ...] = (1, 2, 4, 8), calls: int = 30) -> list:
    """Median ms (device synchronized) of a verify pass of ``rows`` tokens after an ``n``-token
    prompt, taken apart: ``forward``, the library function the engine runs (``batch_verify``, or a
    drafter's capture function, e.g. ``batch_verify_to_last_hidden_states``), embed and the KV
    cache's begin/end included, rolled back after each; ``verify_argmax``, the whole
    :meth:`~pipeline.runtime.engine.Engine.verify_argmax` (a capture's host copies and
    ``get_logits`` included); with a capture that has one, ``get_logits`` on ``rows`` rows alone.
    Row count 1 through ``decode`` for comparison."""
    engine.reset()
    token = engine.prefill_argmax(context_prompt(engine, n))

    def timed(call, rollback: int) -> float:
        samples = []
        for i in range(calls + 1):
            engine.device.sync()
            start = time.perf_counter()
            call()
            engine.device.sync()
            if i:
                samples.append(1000 * (time.perf_counter() - start))
            engine.rollback(rollback)
        return statistics.median(samples)

    out = []
    for k in rows:
        ids = [token] * k
        row = {"rows": k, "forward_ms": timed(lambda ids=ids: engine.run_forward(ids, "batch_verify"), k),
               "verify_argmax_ms": timed(lambda ids=ids: engine.verify_argmax(ids), k)}
        if engine.capture is not None and engine.capture.functions["batch_verify"].endswith("_to_last_hidden_states"):
            states = engine.run_forward(ids, "batch_verify")  # hidden states (1, k, hidden), the library's dtype
            engine.rollback(k)
            hidden = states._create_view((k, states.shape[-1]))
            row["get_logits_ms"] = timed(lambda hidden=hidden: engine.vm["get_logits"](hidden, engine.params), 0)
        out.append(row)
    out.append({"rows": 1, "decode_forward_ms": timed(lambda: engine.run_forward([token], "decode"), 1)})
    return out


def profile_one_step(engine: Engine, n: int, verify: int = 0) -> None:
    """One ``decode_argmax`` step (or, with ``verify``, one ``verify_argmax`` of that many tokens)
    after an ``n``-token prompt between ``cudaProfilerStart`` and ``cudaProfilerStop``: run under
    ``ncu --profile-from-start off`` for the step's kernels."""
    from cuda.bindings import runtime

    engine.reset()
    token = engine.decode_argmax(engine.prefill_argmax(context_prompt(engine, n)))  # warm
    if verify:
        engine.verify_argmax([token] * verify)
        engine.rollback(verify)
    engine.device.sync()
    runtime.cudaProfilerStart()
    engine.verify_argmax([token] * verify) if verify else engine.decode_argmax(token)
    engine.device.sync()
    runtime.cudaProfilerStop()


def divergence(engine: Engine, prompt: list[int], plain: list[int], spec: list[int]) -> dict | None:
    """Where speculative greedy output first differs from plain decoding's: the index, both tokens,
    and plain decoding's logits there (a replay of its steps with the logits copied to the host):
    the top two's margin and the speculative token's distance below the top.  None when equal."""
    at = next((i for i, (a, b) in enumerate(zip(plain, spec)) if a != b), None)
    if at is None:
        return None
    with engine.plain_forward():
        logits = engine.prefill(prompt)
        for token in plain[:at]:
            logits = engine.decode(token)
    top = np.sort(logits)[-2:]
    return {"index": at, "plain_token": plain[at], "speculative_token": spec[at],
            "plain_top_two_margin": float(top[1] - top[0]),
            "speculative_token_below_top": float(logits[plain[at]] - logits[spec[at]])}


def speculative_runs(engine: Engine, drafter, settings: dict, prompts: list[list[int]], labels: list[str],
                     repeats: int, tokens: int = DECODE_TOKENS) -> list[dict]:
    """Speculation off and on per prompt, alternating ``repeats`` times (module docstring)."""
    rows = []
    for label, prompt in zip(labels, prompts):
        off, on, same, last = [], [], True, None
        for r in range(repeats + 1):
            for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                if mode == "off":
                    stats = SpeculativeStats()
                    with engine.plain_forward():
                        out = list(generate(engine, prompt, tokens, Sampler(), stats=stats))
                    plain = out
                    rate = stats.decode_rate
                else:
                    stats = SpeculativeStats()
                    out = list(speculative_generate(engine, prompt, tokens, Sampler(), drafter,
                                                    draft_length_policy(settings), stats=stats))
                    spec, last = out, stats
                    rate = stats.decode_rate
                if r:  # the first pair warms up
                    (off if mode == "off" else on).append(rate)
            same &= plain == spec
        rows.append({"prompt": label[:40], "off_tok_s": statistics.median(off), "on_tok_s": statistics.median(on),
                     "speedup": statistics.median(on) / statistics.median(off) if statistics.median(off) else None,
                     "identical": same,
                     "tokens": len(spec), "acceptance": [round(a, 3) for a in last.acceptance_rate()],
                     "tokens_per_step": round(last.tokens_per_step, 2),
                     "ms_per_draft_token": round(last.ms_per_draft_token, 3),
                     "ms_per_verify": round(last.ms_per_verify, 3), "output": spec,
                     "first_difference": None if same else divergence(engine, prompt, plain, spec)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=["plain", "step", "verify", "speculative", "assistant"])
    parser.add_argument("--target", default="cuda", help="the GPU preset whose libraries run (cpu: a smoke test)")
    parser.add_argument("--profile", type=int, metavar="CONTEXT",
                        help="only profile one decode step after CONTEXT tokens (profile_one_step), under ncu")
    parser.add_argument("--library", default="kernels", help="with --profile: kernels or cuda_graphs")
    parser.add_argument("--verify", type=int, default=0, help="with --profile: profile a verify of this many tokens")
    args = parser.parse_args()
    if args.profile:
        package = args.packages / "gemma3-270m-mtp-q4f16_1"
        base = package / json.loads((package / "mlc-mtp-config.json").read_text())["model_lib"][args.target]
        if args.library == "cuda_graphs":
            base = base.with_name(base.stem + CUDA_GRAPH_SUFFIX + base.suffix)
        profile_one_step(Engine(package, model_lib=base, target=args.target), args.profile, args.verify)
        return
    result = {"device": None}
    package = args.packages / "gemma3-270m-mtp-q4f16_1"
    if {"plain", "step", "verify", "speculative"} & set(args.only):
        base = package / json.loads((package / "mlc-mtp-config.json").read_text())["model_lib"][args.target]
        variants = {"kernels": base}  # a kernel launch per TIR function
        for variant, suffix in VARIANT_SUFFIXES.items():
            library = base.with_name(base.stem + suffix + base.suffix)
            if library.is_file():
                variants[variant] = library
        for variant, library in variants.items():
            engine = Engine(package, model_lib=library, target=args.target)
            result["device"] = getattr(engine.device, "device_name", str(engine.device))
            print("device:", result["device"], "| library:", library.name, flush=True)
            part = result.setdefault(variant, {})
            if "plain" in args.only:
                part["plain"] = [plain_speed(engine, n, args.repeats) for n in (128, 1024)]
                print(json.dumps(part["plain"], indent=1), flush=True)
            if "step" in args.only:
                part["step"] = [step_breakdown(engine, n) for n in (128, 1024)]
                print(json.dumps(part["step"], indent=1), flush=True)
            prompt = context_prompt(engine, 128)
            part["greedy_128"] = list(generate(engine, prompt, DECODE_TOKENS, Sampler()))
            if "verify" in args.only:
                part["verify_plain"] = verify_breakdown(engine)
                print(json.dumps(part["verify_plain"]), flush=True)
            if "speculative" in args.only:
                settings = package_speculative(package, engine.runtime_config, {"mode": "mtp"})
                drafter = load_drafter(engine, settings)
                labels = list(TEXT_PROMPTS)
                prompts = [[engine.chat_config["bos_token_id"]]
                           + engine.tokenizer.encode(t, add_special_tokens=False).ids for t in labels]
                result["speculative_settings"] = {k: settings[k] for k in (
                    "draft_length", "adaptive", "min_draft_length", "max_draft_length")}
                if "verify" in args.only:
                    engine.reset()
                    part["verify_capture"] = verify_breakdown(engine)
                    print(json.dumps(part["verify_capture"]), flush=True)
                part["speculative"] = speculative_runs(engine, drafter, settings, prompts, labels, args.repeats)
            del engine
        for variant in VARIANT_SUFFIXES:
            if variant in result:
                same = result[variant]["greedy_128"] == result["kernels"]["greedy_128"]
                result[f"{variant}_same_tokens"] = same
                print(f"{variant}: greedy tokens the same as the package's library:", same, flush=True)
    if "assistant" in args.only:
        tiny = args.packages / "tiny-e2b"
        rows = {}
        for target in dict.fromkeys(("cpu", args.target)):
            engine = Engine(tiny, target=target)
            engine.stop_token_ids = set()  # random weights: run every token
            settings = package_speculative(tiny, engine.runtime_config, {"mode": "mtp"})
            drafter = load_drafter(engine, settings)
            prompts = [np.random.default_rng(20 + s).integers(4, 96, size=8 + 5 * s).tolist() for s in range(3)]
            rows[target] = speculative_runs(engine, drafter, settings, prompts, [f"random ids {s}" for s in range(3)],
                                            1, tokens=40)
        result["assistant"] = rows
        if len(rows) == 2:
            outputs = [[row["output"] for row in part] for part in rows.values()]
            result["assistant_same_as_cpu"] = outputs[0] == outputs[1]
            print("assistant: speculative output on", args.target, "same as the CPU build's:",
                  result["assistant_same_as_cpu"], flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
