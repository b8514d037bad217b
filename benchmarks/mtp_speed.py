"""Speculative decoding with a package's drafter on text prompts, beside speculation off.

``mlc-mtp bench`` measures on a prompt of random token ids (the same ids for every engine); a
base model's greedy continuation of such a prompt can be a trivial repetition.  This runs
bench's speculative worker (:func:`pipeline.runtime.bench.run_worker`, one child process per
prompt: greedy tokens with speculation off and on, alternating, median of ``--repeats``) on
real prompts and prints one row per prompt plus the totals::

    python benchmarks/mtp_speed.py dist/gemma3-270m-mtp [--decode-tokens 64] [--threads 2]
        [--repeats 3] [--draft-length N] [--no-adaptive] [--prompt TEXT ...]

The default prompts are those of ``tests/runtime/test_mtp_real.py`` (none is in the head's
training prompts).  Prints, per prompt: tokens/s off and on, speed-up, tokens per step, and
acceptance at draft positions 1-3; then the acceptance per draft position over all prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.runtime.bench import run_in_child  # noqa: E402

PROMPTS = ["A good friend is someone who", "The planet Mars has two small moons,", "def quicksort(items):\n",
           "Here is how to plant a tree:\n1.",
           "<start_of_turn>user\nWhat is the tallest mountain in the world?<end_of_turn>\n<start_of_turn>model\n"]


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draft-length", type=int)
    parser.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--prompt", action="append", help="a prompt (repeatable; default: five built-in ones)")
    args = parser.parse_args(argv)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(args.package / "tokenizer.json"))
    bos = json.loads((args.package / "mlc-chat-config.json").read_text())["bos_token_id"]
    overrides = {"mode": "mtp", "draft_length": args.draft_length, "adaptive": args.adaptive}
    print(f"{args.decode_tokens} greedy tokens per prompt, {args.threads} threads, median of {args.repeats}\n")
    print("| prompt                         | off tok/s | mtp tok/s | speed-up | tokens/step | acceptance 1 / 2 / 3 |")
    print("|--------------------------------|-----------|-----------|----------|-------------|----------------------|")
    accepted, proposed, speed_ups, steps, tokens = [], [], [], 0, 0.0
    for text in args.prompt or PROMPTS:
        ids = [bos] + tokenizer.encode(text, add_special_tokens=False).ids
        result = run_in_child(["--worker", "speculative", "--package", str(args.package), "--decode-tokens",
                         str(args.decode_tokens), "--threads", str(args.threads), "--repeats", str(args.repeats),
                         "--speculative", json.dumps(overrides), "--prompt-ids", json.dumps(ids)], args.threads)
        speed_up = result["speculative_decode"] / result["plain_decode"]
        speed_ups.append(speed_up)
        rates = " / ".join(f"{r:.2f}" for r in result["acceptance_rate"][:3])
        print(f"| {json.dumps(text)[1:-1][:30]:<30} | {result['plain_decode']:9.1f} | "
              f"{result['speculative_decode']:9.1f} | "
              f"{speed_up:7.2f}x | {result['tokens_per_step']:11.2f} | {rates:<20} |")
        for i, (n, rate) in enumerate(zip(result["proposed_at"], result["acceptance_rate"])):
            while len(proposed) <= i:
                proposed.append(0)
                accepted.append(0)
            proposed[i] += n
            accepted[i] += round(rate * n)
        steps += result["steps"]
        tokens += result["tokens_per_step"] * result["steps"]
    print(f"\nall prompts: {tokens / steps:.2f} tokens/step, median speed-up {statistics.median(speed_ups):.2f}x; "
          "acceptance per draft position: " + ", ".join(f"{a / n:.3f} ({n})" for a, n in zip(accepted, proposed)))


if __name__ == "__main__":
    main()
