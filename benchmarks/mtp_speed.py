"""Speculative decoding with a package's drafter on text prompts, beside speculation off and
llama.cpp, without the rest of ``mlc-mtp bench`` (no prefill, kernel or memory tables).

Runs bench's speculative measurement (:func:`pipeline.runtime.bench.measure_speculative`: one
child process with greedy tokens after each prompt, speculation off and on alternately, median of
``--repeats``; llama.cpp's decode after the same prompts in another, when the package's source
is a GGUF or ``--gguf`` names one) and prints its tables::

    python benchmarks/mtp_speed.py dist/gemma3-270m-mtp [--decode-tokens 64] [--threads 2]
        [--repeats 3] [--draft-length N] [--no-adaptive] [--max-draft-length N] [--prompt TEXT ...]
        [--gguf FILE | --no-peer]

The default prompts are bench's :data:`~pipeline.runtime.bench.TEXT_PROMPTS` (none is in the
head's training prompts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.runtime.bench import measure_speculative, print_speculative_table  # noqa: E402
from pipeline.runtime.drafters import package_speculative  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draft-length", type=int)
    parser.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--max-draft-length", type=int, help="cap of the adaptive draft length")
    parser.add_argument("--prompt", action="append", help="a prompt (repeatable; default: bench's text prompts)")
    parser.add_argument("--gguf", type=Path, help="GGUF for the llama.cpp peer (default: the package's source)")
    parser.add_argument("--no-peer", action="store_true", help="leave llama.cpp out")
    args = parser.parse_args(argv)
    runtime = json.loads((args.package / "mlc-mtp-config.json").read_text())
    source = runtime.get("source", {})
    gguf = None if args.no_peer else args.gguf or (Path(source["path"]) if source.get("format") == "gguf" else None)
    overrides = {"mode": "mtp", "draft_length": args.draft_length, "adaptive": args.adaptive,
                 "max_draft_length": args.max_draft_length}
    settings = package_speculative(args.package, runtime, overrides)
    common = ["--package", str(args.package), "--decode-tokens", str(args.decode_tokens), "--threads",
              str(args.threads), "--repeats", str(args.repeats)]
    result = measure_speculative(args.package, common, args.threads, overrides, args.prompt, 0, gguf)
    print_speculative_table(result, settings, args.decode_tokens, args.threads, args.repeats)


if __name__ == "__main__":
    main()
