"""``mlc-mtp`` command line: build, generate, chat, bench, inspect, serve-web.

Bad input ends with one line ``error: <what, where, expected>`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from .errors import PipelineError


def _build(args) -> None:
    from .config import load_config

    config = load_config(args.config)
    if args.dry_run:
        from .dry_run import dry_run, format_dry_run

        print(format_dry_run(dry_run(config, quantization=args.quantization, targets=args.target, output=args.output),
                             verbose=getattr(args, "verbose", False)))
        return
    from .build import build

    build(config, targets=args.target, output=args.output, force=args.force,
          quantization=args.quantization, progress=not args.quiet)


def _settings(args, engine) -> None:
    """Fill sampling flags the user left out from the package's defaults (the config's
    ``generation`` section, recorded at build time)."""
    from .package.chat_config import generation_defaults

    defaults = generation_defaults(engine.chat_config, engine.runtime_config)
    for name in ("temperature", "top_p", "max_tokens"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    if hasattr(args, "stop") and not args.stop:
        args.stop = defaults.get("stop", [])
    if args.max_tokens < 1:
        raise PipelineError(f"--max-tokens: {args.max_tokens}, expected >= 1")


def _check_flags(args) -> None:
    """Refuse out-of-range flags before anything is loaded (the package's own values are checked
    after it is read)."""
    for flag, value, low in (("--max-tokens", getattr(args, "max_tokens", None), 1),
                             ("--draft-length", getattr(args, "draft_length", None), 1),
                             ("--prompt-tokens", getattr(args, "prompt_tokens", None), 1),
                             ("--decode-tokens", getattr(args, "decode_tokens", None), 1),
                             ("--threads", getattr(args, "threads", None), 1),
                             ("--repeats", getattr(args, "repeats", None), 1),
                             ("--busy-neighbour", getattr(args, "busy_neighbour", None), 0)):
        if value is not None and value < low:
            raise PipelineError(f"{flag}: {value}, expected >= {low}")
    temperature, top_p = getattr(args, "temperature", None), getattr(args, "top_p", None)
    if temperature is not None and not temperature >= 0:
        raise PipelineError(f"--temperature: {temperature}, expected >= 0 (0: greedy)")
    if top_p is not None and not 0 < top_p <= 1:
        raise PipelineError(f"--top-p: {top_p}, expected a value in (0, 1]")
    if getattr(args, "stop", None) and "" in args.stop:
        raise PipelineError("--stop: '', expected a non-empty string")


def _runtime_imports() -> None:
    """Import TVM as the runtime needs it, leaving out what only the compiler uses: TVM's runtime
    library instead of the compiler's (``TVM_USE_RUNTIME_LIB=1``: no ``tvm.relax``, a smaller
    library to load), and no PyTorch (``tvm_ffi`` imports it when installed, for tensor exchange
    the runtime never does; installed with the test extras, it took 1.6 s of a 5.7 s ``generate``
    here).  Does nothing where TVM is already imported or the user set ``TVM_USE_RUNTIME_LIB``.
    docs/performance.md ("Start-up") has the measurements."""
    if "tvm" in sys.modules:
        return
    os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError
    try:
        import tvm  # noqa: F401
    finally:
        if hide_torch and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


def _speculation(args, engine):
    """The drafter (None: plain decoding) and draft-length policy for the package's speculative
    settings as overridden by ``--speculative``, ``--draft-length`` and ``--adaptive``."""
    from .runtime.drafters import draft_length_policy, load_drafter, package_speculative

    settings = package_speculative(engine.package, engine.runtime_config, _speculative_overrides(args))
    return load_drafter(engine, settings), draft_length_policy(settings)


def _speculative_overrides(args) -> dict:
    """Speculative settings given on the command line (None: the package's)."""
    return {"mode": args.speculative, "draft_length": args.draft_length, "adaptive": args.adaptive}


def _sampler(args):
    from .runtime.sampling import Sampler

    try:
        return Sampler(args.temperature, args.top_p, args.seed)
    except ValueError as err:
        raise PipelineError(str(err)) from None


def _generate(args) -> None:
    from .terminal import context_notice, stats_line, stream

    if args.system is not None and not args.chat:
        raise PipelineError("--system: given without --chat, expected --chat too (a system message belongs to "
                            "the chat template, which a plain prompt does not use)")
    _check_flags(args)
    _runtime_imports()
    from .runtime.chat import encode_turn, system_message
    from .runtime.engine import Engine
    from .runtime.speculative import SpeculativeStats, speculative_generate

    engine = Engine(args.package, model_lib=args.model_lib, target=args.target)
    _settings(args, engine)
    prompt = _prompt(args, engine)
    sampler = _sampler(args)
    if args.chat:
        system = system_message(engine.chat_config["conv_template"], args.system)
        prompt_ids = encode_turn(engine, prompt, first=True, system=system)
    else:
        prompt_ids = [engine.chat_config["bos_token_id"]] + engine.tokenizer.encode(
            prompt, add_special_tokens=False).ids
    if len(prompt_ids) > engine.context_window:
        raise PipelineError(f"--prompt: {len(prompt_ids)} tokens, expected at most the context window of "
                            f"{engine.context_window} (context_window_size in {args.package / 'mlc-chat-config.json'}"
                            f"; model.overrides.context_window_size in the build config)")
    drafter, draft_length = _speculation(args, engine)
    stats = SpeculativeStats()
    sys.stdout.write(prompt if not args.chat else "")
    sys.stdout.flush()
    stream(engine.tokenizer, speculative_generate(engine, prompt_ids, args.max_tokens, sampler, drafter,
                                                  draft_length, tuple(args.stop), stats), args.stop)
    print(stats_line(stats), file=sys.stderr)
    notice = context_notice(stats, engine.context_window)
    if notice:
        print(notice, file=sys.stderr)


def _prompt(args, engine) -> str:
    """``--prompt``, else the package's ``generation.prompt`` (the build config's)."""
    if args.prompt is not None:
        return args.prompt
    prompt = engine.runtime_config.get("generation", {}).get("prompt")
    if not prompt:
        raise PipelineError(f"--prompt: not given, and {args.package / 'mlc-mtp-config.json'} has no "
                            f"generation.prompt; expected --prompt TEXT")
    return prompt


def _chat(args) -> None:
    from .terminal import chat_loop

    _check_flags(args)
    _runtime_imports()
    from .runtime.chat import ChatSession
    from .runtime.engine import Engine

    engine = Engine(args.package, model_lib=args.model_lib, target=args.target)
    _settings(args, engine)
    drafter, draft_length = _speculation(args, engine)
    session = ChatSession(engine, _sampler(args), args.max_tokens, drafter, draft_length, system=args.system)
    print(f"Chatting with {args.package} ({engine.context_window}-token context). /help lists the commands; "
          f"/bye or Ctrl-D quits, Ctrl-C stops a reply.", file=sys.stderr)
    chat_loop(session, engine.context_window)


def _bench(args) -> None:
    _check_flags(args)
    from .runtime.bench import run_bench

    run_bench(args.package, prompt_tokens=args.prompt_tokens, decode_tokens=args.decode_tokens,
              threads=args.threads, gguf=args.gguf, model_lib=args.model_lib, repeats=args.repeats,
              speculative=_speculative_overrides(args), busy_neighbour=args.busy_neighbour,
              prompts=[] if args.random_prompt else args.prompt)


def _inspect(args) -> None:
    from .sources.describe import inspect_file

    print(inspect_file(args.file, section_tensors=args.tensors, all_tensors=args.tensors))


def _serve_web(args) -> None:
    from .web import serve_chat

    serve_chat(args.package, port=args.port)


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=None, help="default: the config's generation.max_tokens")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy; default: the config's")
    p.add_argument("--top-p", type=float, default=None, help="default: the config's")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--target", default=None,
                   help="the package library to run and its device, by preset name (cpu, cuda, vulkan, metal; "
                        "default: cpu, or the package's only library)")
    p.add_argument("--model-lib", type=Path, default=None, help="library to load instead of the package's")
    _add_speculative(p)


def _add_system(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system", metavar="TEXT", default=None,
                   help="system message, placed as the model's chat template places it "
                        "(default: the package's conv_template.system_message)")


def _add_speculative(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speculative", choices=["off", "mtp"], default=None,
                   help="off: plain decoding; mtp: draft with the package's MTP drafter (default: the package's)")
    p.add_argument("--draft-length", type=int, default=None,
                   help="tokens drafted per step, the first step's when adaptive (default: the package's)")
    p.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                   help="adapt the draft length to the acceptance rate (default: the package's)")


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``mlc-mtp``."""
    top = argparse.ArgumentParser(prog="mlc-mtp", description=__doc__.splitlines()[0])
    top.add_argument("-v", "--verbose", action="store_true")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="import, convert, compile and package a model from a YAML config")
    p.add_argument("config", type=Path)
    p.add_argument("--target", action="append", help="target preset (repeatable; default: the config's)")
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--quantization", default=None, help="override the config's quantization")
    p.add_argument("--force", action="store_true", help="redo every stage even if cached")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true",
                   help="validate, print parameter shapes and a memory estimate; no weights read, nothing written")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="with --dry-run: every parameter instead of one block per group of identical layers")
    p.set_defaults(func=_build)

    p = sub.add_parser("generate", help="continue a prompt with a packaged model")
    p.add_argument("package", type=Path)
    p.add_argument("--prompt", default=None, help="default: the config's generation.prompt")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    _add_system(p)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable; default: the config's)")
    _add_sampling(p)
    p.set_defaults(func=_generate)

    p = sub.add_parser("chat", help="interactive chat with a packaged model")
    p.add_argument("package", type=Path)
    _add_system(p)
    _add_sampling(p)
    p.set_defaults(func=_chat)

    p = sub.add_parser("bench", help="prefill/decode tokens/s and peak memory, beside llama.cpp; "
                                     "with --speculative mtp also acceptance and speed-up")
    p.add_argument("package", type=Path)
    p.add_argument("--prompt-tokens", type=int, default=128,
                   help="length of the random-id prompt of the prefill/decode table (default 128)")
    p.add_argument("--decode-tokens", type=int, default=64, help="greedy tokens decoded per run (default 64)")
    p.add_argument("--threads", type=int, default=None, help="threads for both engines (default: all cores)")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement; tables show medians (default 3)")
    p.add_argument("--gguf", type=Path, default=None,
                   help="GGUF for the llama.cpp peer (default: the package's source)")
    p.add_argument("--model-lib", type=Path, default=None, help="library to load instead of the package's")
    p.add_argument("--busy-neighbour", type=int, default=0, metavar="N",
                   help="run N busy processes (pure-Python spin loops, pinned to no core) through the "
                        "measurements, to measure the engines under contention")
    p.add_argument("--prompt", action="append", metavar="TEXT",
                   help="a text prompt of the speculative measurement (repeatable; default: five built-in ones)")
    p.add_argument("--random-prompt", action="store_true",
                   help="measure speculation after --prompt-tokens random token ids instead (synthetic: the base "
                        "continues them with repetitions every draft predicts)")
    _add_speculative(p)
    p.set_defaults(func=_bench)

    p = sub.add_parser("inspect", help="what a .litertlm, .tflite, GGUF or safetensors file holds")
    p.add_argument("file", type=Path)
    p.add_argument("--tensors", action="store_true", help="list every tensor, also inside .litertlm sections")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("serve-web", help="serve a webgpu package and a WebLLM chat page on 127.0.0.1 "
                                         "(open it in a browser with WebGPU)")
    p.add_argument("package", type=Path)
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free port)")
    p.set_defaults(func=_serve_web)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status: 0, 2 for bad input (one ``error:`` line), 130 when
    interrupted (Ctrl-C: one line; outputs are written atomically, so nothing is half-written)."""
    from .terminal import SIGINT

    if hasattr(signal, "SIGPIPE"):  # `mlc-mtp inspect F | head` ends quietly, like other CLIs
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    SIGINT.seen = False
    try:
        previous = signal.signal(signal.SIGINT, SIGINT.handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        args.func(args)
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt) or SIGINT.seen:  # also an error a library made of Ctrl-C
            sys.stdout.flush()
            print(f"{args.command}: interrupted{_INTERRUPTED.get(args.command, '')}", file=sys.stderr)
            return 130
        if isinstance(err, PipelineError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return 0


# What an interrupted command leaves behind.
_INTERRUPTED = {"build": " (the package and the stage cache are as before; stages that finished stay cached)",
                "serve-web": " (the server stopped)"}


if __name__ == "__main__":
    sys.exit(main())
