"""How large a reduced drafting vocabulary (FR-Spec, arXiv 2502.14856; ``mtp.draft_vocab``) should
be: acceptance against drafting cost for several sizes N, on text prompts.

For each N, greedy speculative decoding runs after each prompt with the package's MTP drafter
choosing every draft token by the argmax over the N most frequent tokens of a counts file only
(the full head is computed and then restricted, in numpy: the acceptance is the reduced library's,
the speed is not measured here); the output is checked equal to plain decoding's.  The cost of a
draft token's head grows with N: the table gives the head's rows against the full vocabulary's.
Then build the chosen N (``mtp.draft_vocab.size``) and measure its speed with ``mlc-mtp bench``::

    python benchmarks/draft_vocab_size.py dist/gemma3-270m-mtp assets/gemma3-270m-mtp/token-counts.safetensors \\
        [--sizes 4096,8192,16384,32768] [--decode-tokens 64] [--draft-length 3] [--prompt TEXT ...]

Prints, per N: the share of the generated tokens inside the N, the acceptance at draft positions
1-3 and tokens per step over all prompts (fixed draft length), and N / vocabulary size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.models.draft_vocab import read_token_counts  # noqa: E402
from pipeline.runtime.bench import speculative_prompts  # noqa: E402
from pipeline.runtime.drafters import load_drafter, package_speculative  # noqa: E402
from pipeline.runtime.engine import Engine  # noqa: E402
from pipeline.runtime.generate import generate  # noqa: E402
from pipeline.runtime.sampling import Sampler  # noqa: E402
from pipeline.runtime.speculative import SpeculativeStats, speculative_generate  # noqa: E402


class RestrictedDrafter:
    """The package's MTP drafter with each draft token chosen among ``ids`` only (None: all)."""

    def __init__(self, drafter, ids: np.ndarray | None):
        self.drafter, self.ids = drafter, ids

    def propose(self, history: list[int], n: int):
        self.drafter.catch_up(history)
        ids = self.ids
        choose = (lambda row: int(np.argmax(row))) if ids is None else (lambda row: int(ids[np.argmax(row[ids])]))
        return self.drafter.chain.draft(n, choose=choose).tokens, None


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("counts", type=Path)
    parser.add_argument("--sizes", default="4096,8192,16384,32768")
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--draft-length", type=int, default=3)
    parser.add_argument("--prompt", action="append", help="a prompt (repeatable; default: bench's text prompts)")
    args = parser.parse_args(argv)
    engine = Engine(args.package)
    engine.stop_token_ids = set()
    settings = package_speculative(engine.package, engine.runtime_config, {"mode": "mtp"})
    drafter = load_drafter(engine, settings)
    vocab = engine.chat_config["vocab_size"]
    from safetensors import safe_open

    with safe_open(str(args.counts), framework="numpy") as handle:
        listed = handle.get_slice("ids").get_shape()[0]
    sizes = [int(s) for s in args.sizes.split(",") if int(s) <= listed]  # the file ranks `listed` tokens
    _, prompts = speculative_prompts(args.package, engine.chat_config, args.prompt, 0)
    plain = [list(generate(engine, p, args.decode_tokens, Sampler())) for p in prompts]
    generated = np.concatenate([np.asarray(p) for p in plain])
    print(f"{len(prompts)} prompts, {args.decode_tokens} greedy tokens each, draft length {args.draft_length} "
          f"(fixed), counts {args.counts.name}\n")
    print("| N (drafting vocabulary) | N / vocab | generated tokens inside | acceptance 1 / 2 / 3   | tokens/step |")
    print("|-------------------------|-----------|-------------------------|------------------------|-------------|")
    for size in sizes + [vocab]:
        ids = None if size == vocab else read_token_counts(args.counts, size, vocab, str(args.counts))
        inside = 1.0 if ids is None else float(np.isin(generated, ids).mean())
        stats = SpeculativeStats()
        for prompt, expected in zip(prompts, plain):
            out = list(speculative_generate(engine, prompt, args.decode_tokens, Sampler(),
                                            RestrictedDrafter(drafter, ids), args.draft_length, stats=stats))
            if out != expected:
                raise SystemExit(f"N={size}: speculative output differs from plain decoding")
        rates = " / ".join(f"{r:.3f}" for r in stats.acceptance_rate()[:3])
        label = f"{size} (all)" if ids is None else str(size)
        print(f"| {label:<23} | {size / vocab:9.4f} | {inside:23.3f} | {rates:<22} | {stats.tokens_per_step:11.2f} |")


if __name__ == "__main__":
    main()
